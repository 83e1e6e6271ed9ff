"""ASTM E1381 framing and E1394 records: the byte vectors of docs/protocols/astm.md, round trips
(hypothesis) and every way a frame can be broken."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.astm_framing import (
    MAX_TEXT,
    RESTRICTED,
    BadChecksum,
    BadFrame,
    Control,
    Frame,
    Reassembler,
    checksum,
    decode,
    encode_frame,
    frames_for,
)
from drivers.astm_records import (
    Header,
    Order,
    Patient,
    Query,
    Record,
    Result,
    Terminator,
    check_message,
    decode_record,
    encode_record,
    escape,
    unescape,
)
from drivers.errors import ChecksumError, FrameError, ProtocolError

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "astm.md"

HOST_HEADER = Header(sender=("KUAIJIAN",))
LAST_ORDERS = Query(1, "LAST", "O")
ORDER = Order(1, "S-0001", 7, 1, "imidacloprid-v1", product="菠菜", operator="李明")
VECTORS: list[tuple[Frame, str]] = [
    (
        Frame(1, encode_record(HOST_HEADER)),
        "02 31 48 7c 5c 5e 26 7c 7c 7c 4b 55 41 49 4a 49 41 4e 7c 7c 7c 7c 7c 7c 7c 50 7c 4c 49 53 32 2d 41 32 "
        "0d 03 38 46 0d 0a",
    ),
    (
        Frame(2, encode_record(LAST_ORDERS)),
        "02 32 51 7c 31 7c 5e 4c 41 53 54 7c 7c 5e 5e 5e 41 4c 4c 7c 7c 7c 7c 7c 7c 7c 7c 4f 0d 03 36 38 0d 0a",
    ),
    (Frame(3, encode_record(Terminator())), "02 33 4c 7c 31 7c 4e 0d 03 30 36 0d 0a"),
    (
        Frame(3, encode_record(ORDER)),
        "02 33 4f 7c 31 7c 53 2d 30 30 30 31 7c 37 5e 31 7c 5e 5e 5e 69 6d 69 64 61 63 6c 6f 70 72 69 64 2d 76 "
        "31 7c 52 7c 7c 7c 7c 7c e6 9d 8e e6 98 8e 7c 7c 7c 7c 7c e8 8f a0 e8 8f 9c 7c 7c 7c 7c 7c 7c 7c 7c 7c "
        "7c 46 0d 03 41 34 0d 0a",
    ),
]


@pytest.mark.parametrize(("frame", "hex_bytes"), VECTORS)
def test_byte_vectors_of_the_protocol_doc(frame: Frame, hex_bytes: str) -> None:
    wire = bytes.fromhex(hex_bytes)
    assert encode_frame(frame) == wire
    assert decode(wire) == (len(wire), frame)
    doc = re.sub(r"\s+", " ", DOC.read_text(encoding="utf-8"))
    assert hex_bytes in doc, "the vector is not (any more) in docs/protocols/astm.md"


def test_a_long_record_is_cut_into_etb_frames_and_reassembled() -> None:
    values = "\\".join(str(60000 + i) for i in range(50))
    rec = encode_record(Result(1, "imidacloprid-v1", "REFLECTANCE", values, "1/65535", "F", "20261207082955"))
    assert len(rec) == 366
    frames = frames_for([rec], first_fn=4)
    assert [(f.fn, f.final, len(f.text)) for f in frames] == [(4, False, MAX_TEXT), (5, True, 126)]
    assert encode_frame(frames[0]).endswith(bytes.fromhex("17 36 43 0d 0a"))
    assert encode_frame(frames[1]).endswith(bytes.fromhex("03 33 43 0d 0a"))
    rea = Reassembler(4)
    assert [rea.accept(f) for f in frames] == ["ok", "ok"]
    assert rea.records == [rec]
    assert rea.complete


def test_frame_numbers_wrap_after_seven() -> None:
    recs = [encode_record(Patient(i)) for i in range(1, 10)]
    assert [f.fn for f in frames_for(recs)] == [1, 2, 3, 4, 5, 6, 7, 0, 1]


def test_checksum_is_the_byte_sum_modulo_256_in_uppercase_hex() -> None:
    assert checksum(b"1H|\\^&|||KUAIJIAN|||||||P|LIS2-A2\r\x03") == b"8F"
    assert checksum(bytes([0xFF, 0x01])) == b"00"


def test_control_characters_and_noise() -> None:
    assert decode(b"\x05") == (1, Control.ENQ)
    assert decode(b"\x06\x15") == (1, Control.ACK)
    assert decode(b"\x04") == (1, Control.EOT)
    assert decode(b"xyz\x05") == (3, None)  # noise before a control character is dropped
    assert decode(b"noise") == (5, None)
    assert decode(b"") == (0, None)
    wire = encode_frame(Frame(1, b"L|1|N\r"))
    for cut in range(1, len(wire)):
        assert decode(wire[:cut]) == (0, None), f"a frame cut after {cut} bytes must wait for more"


def test_broken_frames_are_reported_with_what_to_drop() -> None:
    wire = bytearray(encode_frame(Frame(2, b"L|1|N\r")))
    bad = bytearray(wire)
    bad[4] ^= 0x01  # one text bit flipped: the checksum no longer matches
    with pytest.raises(BadChecksum) as cs:
        decode(bad)
    assert (cs.value.consumed, cs.value.fn) == (len(wire), 2)
    assert isinstance(cs.value, ChecksumError)
    with pytest.raises(BadFrame, match="frame number"):
        decode(b"\x02" + b"9" + wire[2:])
    with pytest.raises(BadFrame, match="CR LF"):
        decode(wire[:-2] + b"XX")
    with pytest.raises(BadFrame, match="control character") as cut:
        decode(wire[:5] + b"\x05")  # a frame cut off by the next ENQ loses nothing after it
    assert cut.value.consumed == 5
    with pytest.raises(BadFrame, match="no ETX/ETB"):
        decode(b"\x021" + b"A" * (MAX_TEXT + 2))


def test_reassembler_acks_a_repeated_frame_and_refuses_a_skipped_one() -> None:
    frames = frames_for([encode_record(Patient(1)), encode_record(Terminator())])
    rea = Reassembler()
    assert rea.accept(frames[0]) == "ok"
    assert rea.accept(frames[0]) == "duplicate"  # our ACK was lost; the sender repeated it
    with pytest.raises(BadFrame, match="expected 2"):
        rea.accept(Frame(3, b"L|1|N\r"))
    assert rea.accept(frames[1]) == "ok"
    assert rea.records == [b"P|1\r", b"L|1|N\r"]


def test_frames_refuse_restricted_text() -> None:
    with pytest.raises(ValueError, match="restricted"):
        Frame(1, b"a\nb")
    with pytest.raises(ValueError, match=r"0\.\.7"):
        Frame(8, b"")


def test_escapes() -> None:
    assert escape("a|b^c\\d&e") == "a&F&b&S&c&R&d&E&e"
    assert unescape("a&F&b&S&c&R&d&E&e") == "a|b^c\\d&e"
    with pytest.raises(FrameError, match="escape"):
        unescape("&X&")
    with pytest.raises(ValueError, match="CR"):
        escape("two\rlines")


def test_message_shape_is_checked() -> None:
    good: list[Record] = [HOST_HEADER, Patient(1), ORDER, Result(1, "k", "CRC32", "00"), Terminator()]
    check_message(good)
    with pytest.raises(ProtocolError, match="start with H"):
        check_message(good[1:])
    with pytest.raises(ProtocolError, match="sequence number 2, expected 1"):
        check_message([HOST_HEADER, Patient(2), Terminator()])
    with pytest.raises(ProtocolError, match="Result record with sequence number 1, expected 2"):
        check_message(
            [HOST_HEADER, Patient(1), ORDER, Result(1, "k", "a", "1"), Result(1, "k", "b", "2"), Terminator()]
        )
    with pytest.raises(FrameError, match="unknown record type"):
        decode_record(b"X|1\r")
    with pytest.raises(FrameError, match="delimiters"):
        decode_record(b"H|!~#\r")


# ------------------------------------------------------------------ round trips (hypothesis)
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20
)  # any printable text, delimiters included (they are escaped)
stamp = st.from_regex(r"\A20[0-9]{12}\Z")
num = st.integers(1, 9999)
kit = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)

records = st.one_of(
    st.builds(Header, sender=st.tuples(text, text, text, text.filter(bool)), receiver=text, timestamp=stamp),
    st.builds(Patient, num, text),
    st.builds(
        Order, num, text, st.integers(1, 2**32 - 1), st.integers(1, 255), kit, product=text, operator=text
    ),
    st.builds(
        Result,
        num,
        kit,
        st.sampled_from(["REFLECTANCE", "CRC32"]),
        st.lists(st.integers(0, 65535), min_size=1, max_size=40).map(lambda v: "\\".join(map(str, v))),
        units=st.just("1/65535"),
        completed_at=stamp,
    ),
    st.builds(Query, num, st.one_of(st.just("LAST"), num.map(str)), st.sampled_from(["O", "F"])),
    st.builds(Terminator, st.just(1), st.sampled_from(["N", "I", "Q"])),
)


@given(records)
def test_record_round_trip(rec: Record) -> None:
    wire = encode_record(rec)
    assert wire.endswith(b"\r")
    assert wire.count(b"\r") == 1
    assert not (RESTRICTED - {0x0D}).intersection(wire)
    assert decode_record(wire) == rec


@given(st.lists(records, min_size=1, max_size=12), st.integers(0, 7))
def test_transfer_round_trip_through_frames(recs: list[Record], first_fn: int) -> None:
    texts = [encode_record(r) for r in recs]
    wire = b"".join(encode_frame(f) for f in frames_for(texts, first_fn))
    rea = Reassembler(first_fn)
    buf = bytearray(wire)
    while buf:
        consumed, token = decode(buf)
        assert consumed > 0
        assert isinstance(token, Frame)
        assert rea.accept(token) == "ok"
        del buf[:consumed]
    assert rea.complete
    assert rea.records == texts


@given(st.binary(max_size=300))
def test_decode_never_crashes_on_line_noise(noise: bytes) -> None:
    buf = bytearray(noise)
    while buf:
        try:
            consumed, _ = decode(buf)
        except (BadFrame, BadChecksum) as exc:
            consumed = max(exc.consumed, 1)
        if consumed == 0:
            break
        del buf[:consumed]
