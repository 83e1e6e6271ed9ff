"""gold-serial codec: the byte vectors of docs/protocols/serial-gold.md, framing properties, round trips."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ChecksumError, FrameError, ProtocolError
from drivers.framing import (
    MAX_PAYLOAD,
    MAX_STUFFED,
    CrcMismatch,
    Frame,
    MalformedFrame,
    crc16_ccitt,
    decode_frame,
    encode_frame,
    stuff,
    unstuff,
)
from drivers.gold_codec import (
    Ack,
    ClockReply,
    Cmd,
    ErrorCode,
    GetClock,
    GetProfile,
    GetRecord,
    GetStatus,
    Identify,
    IdentifyReply,
    Nak,
    NakReason,
    ProfileChunk,
    RecordHeader,
    Refused,
    Reply,
    Request,
    SetClock,
    StatusReply,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    profile_crc32,
    split_profile,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "serial-gold.md"
T0 = int(datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp())
PROFILE = (0xF000, 0xEF12, 0x7E5D, 0x7D01, 0x4000, 0xE8A0, 0xF1F1, 0xF200)
HOST, DEV = 0xFF, 0x01


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


def crc16_reference(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, independent of binascii."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


# (host request, device reply) pairs exactly as in the protocol document.
VECTORS: list[tuple[str, int, Request | None, str, Reply]] = [
    (
        "7E FF 01 20 00 00 BB D1 7E",
        0x01,
        Identify(),
        "7E 01 01 A0 00 18 01 08 04 00 07 47 52 2D 30 30 30 31 05 4B 4A 2D 47 38 05 32 2E 33 2E 31 BB 47 7E",
        IdentifyReply(1, 8, 1024, "GR-0001", "KJ-G8", "2.3.1"),
    ),
    ("7E FF 02 22 00 04 6B 06 95 80 1F 01 7E", 0x02, SetClock(T0), "7E 01 02 06 00 00 E4 95 7E", Ack()),
    (
        "7E FF 03 21 00 00 61 89 7E",
        0x03,
        GetClock(),
        "7E 01 03 A1 00 04 6B 06 95 85 1C 12 7E",
        ClockReply(T0 + 5),
    ),
    (
        "7E FF 04 23 00 00 5E C4 7E",
        0x04,
        GetStatus(),
        "7E 01 04 A3 00 09 00 00 00 2A 00 00 00 01 00 B3 0D 7E",
        StatusReply(42, 1, 0),
    ),
    (
        "7E FF 05 24 00 04 00 00 00 2A 7F EF 7E",
        0x05,
        GetRecord(42),
        "7E 01 05 A4 00 38 00 00 00 2A 03 6B 06 97 D8 00 08 00 04 FF FF 87 27 25 38 0F 69 6D 69 64 61 63 6C"
        " 6F 70 72 69 64 2D 76 31 06 53 2D 30 30 34 32 06 E8 8F A0 E8 8F 9C 06 E6 9D 8E E6 98 8E 9B 4E 7E",
        RecordHeader(42, 3, T0 + 600, 8, 4, 65535, 0x87272538, "imidacloprid-v1", "S-0042", "菠菜", "李明"),
    ),
    (
        "7E FF 06 25 00 05 00 00 00 2A 01 5F 6E 7E",
        0x06,
        GetProfile(42, 1),
        "7E 01 06 A5 00 11 00 00 00 2A 01 00 04 00 04 40 00 E8 A0 F1 F1 F2 00 69 AD 7E",
        ProfileChunk(42, 1, 4, PROFILE[4:]),
    ),
    (
        "7E FF 08 24 00 04 00 00 00 63 F0 66 7E",
        0x08,
        GetRecord(99),
        "7E 01 08 18 00 02 24 03 D6 BB 7E",
        Refused(ErrorCode.NO_SUCH_RECORD),
    ),
]
# Device-only frames of the document (no request of their own).
CHUNK0 = "7E 01 07 A5 00 11 00 00 00 2A 00 00 00 00 04 F0 00 EF 12 7D 5E 5D 7D 5D 01 6B 72 7E"
HOST_NAK = "7E FF 06 15 00 01 01 13 D8 7E"
DEV_NAK = "7E 01 07 15 00 01 03 88 D4 7E"


def _frame(msg: Request, seq: int) -> bytes:
    cmd, payload = encode_request(msg)
    return encode_frame(Frame(HOST, seq, cmd, payload))


def _reply_frame(msg: Reply, seq: int, request_cmd: int = 0) -> bytes:
    cmd, payload = encode_reply(msg, request_cmd)
    return encode_frame(Frame(DEV, seq, cmd, payload))


def _decode_all(stream: bytes) -> tuple[list[Frame], int]:
    """All valid frames of `stream` and the number of bad frames the decoder reported."""
    buf = bytearray(stream)
    frames: list[Frame] = []
    errors = 0
    while True:
        try:
            consumed, frame = decode_frame(buf)
        except (MalformedFrame, CrcMismatch) as exc:
            errors += 1
            if exc.consumed <= 0:
                raise AssertionError("a bad frame must consume bytes") from exc
            del buf[: exc.consumed]
            continue
        if consumed == 0:
            return frames, errors
        del buf[:consumed]
        if frame is not None:
            frames.append(frame)


# ------------------------------------------------------------------ CRC and stuffing
def test_crc_check_value() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1 == crc16_reference(b"123456789")


@given(st.binary(max_size=300))
def test_crc_matches_bitwise_reference(data: bytes) -> None:
    assert crc16_ccitt(data) == crc16_reference(data)


@given(st.binary(max_size=300))
def test_stuffing_round_trip_and_no_flag_inside(data: bytes) -> None:
    stuffed = stuff(data)
    assert 0x7E not in stuffed
    assert unstuff(stuffed) == data


@pytest.mark.parametrize("bad", [b"\x7d", b"ab\x7d", b"\x7d\x00", b"\x7d\x7e"])
def test_unstuff_rejects_invalid_escapes(bad: bytes) -> None:
    with pytest.raises(ValueError, match="escape"):
        unstuff(bad)


# ------------------------------------------------------------------ documented byte vectors
@pytest.mark.parametrize(("req_hex", "seq", "req", "rep_hex", "reply"), VECTORS)
def test_documented_vectors(req_hex: str, seq: int, req: Request, rep_hex: str, reply: Reply) -> None:
    assert _frame(req, seq) == hx(req_hex)
    consumed, frame = decode_frame(hx(req_hex))
    assert consumed == len(hx(req_hex)) - 1
    assert frame is not None
    assert (frame.addr, frame.seq) == (HOST, seq)
    assert decode_request(frame.cmd, frame.payload) == req

    request_cmd, _ = encode_request(req)
    assert _reply_frame(reply, seq, request_cmd) == hx(rep_hex)
    consumed, frame = decode_frame(hx(rep_hex))
    assert frame is not None
    assert (consumed, frame.addr, frame.seq) == (len(hx(rep_hex)) - 1, DEV, seq)
    assert decode_reply(frame.cmd, frame.payload) == reply


def test_documented_stuffed_chunk_and_naks() -> None:
    assert _reply_frame(ProfileChunk(42, 0, 0, PROFILE[:4]), 0x07) == hx(CHUNK0)
    assert encode_frame(Frame(HOST, 0x06, Cmd.NAK, bytes((NakReason.CRC,)))) == hx(HOST_NAK)
    assert _reply_frame(Nak(NakReason.BUSY), 0x07) == hx(DEV_NAK)
    _, frame = decode_frame(hx(CHUNK0))
    assert frame is not None
    assert len(frame.payload) == 0x11
    assert decode_reply(frame.cmd, frame.payload) == ProfileChunk(42, 0, 0, PROFILE[:4])
    assert profile_crc32(PROFILE) == 0x87272538
    assert split_profile(42, PROFILE, 4) == [
        ProfileChunk(42, 0, 0, PROFILE[:4]),
        ProfileChunk(42, 1, 4, PROFILE[4:]),
    ]


def test_every_vector_appears_in_the_protocol_document() -> None:
    doc = " ".join(DOC.read_text(encoding="utf-8").split())
    doc = re.sub(r"\s+", " ", doc)
    hexes = [v[0] for v in VECTORS] + [v[3] for v in VECTORS] + [CHUNK0, HOST_NAK, DEV_NAK]
    for h in hexes:
        assert " ".join(h.split()) in doc, f"vector not in {DOC.name}: {h}"


# ------------------------------------------------------------------ framing properties
frames = st.builds(
    Frame,
    addr=st.integers(0, 255),
    seq=st.integers(0, 255),
    cmd=st.integers(0, 255),
    payload=st.binary(max_size=600),
)


@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert decode_frame(wire) == (len(wire) - 1, frame)  # the closing flag may open the next frame
    assert decode_frame(wire[-1:]) == (0, None)
    assert decode_frame(wire[:-1]) == (0, None)  # no closing flag yet: need more bytes


@settings(max_examples=60)
@given(st.lists(frames, min_size=1, max_size=6), st.data())
def test_arbitrary_split_points(sent: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    buf = bytearray()
    got: list[Frame] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buf.extend(stream[a:b])
        while True:
            consumed, frame = decode_frame(buf)
            if consumed == 0:
                break
            del buf[:consumed]
            if frame is not None:
                got.append(frame)
    assert got == sent
    assert bytes(buf) == b"\x7e"


@settings(max_examples=80)
@given(st.lists(st.tuples(frames, st.binary(max_size=40)), min_size=1, max_size=5))
def test_garbage_between_frames_resynchronises(items: list[tuple[Frame, bytes]]) -> None:
    stream = b"".join(garbage + encode_frame(frame) for frame, garbage in items)
    got, _ = _decode_all(stream)
    assert got == [frame for frame, _ in items]


@settings(max_examples=150)
@given(frames, frames, st.data())
def test_a_corrupted_byte_never_yields_a_frame(frame: Frame, following: Frame, data: st.DataObject) -> None:
    wire = bytearray(encode_frame(frame))
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] ^= data.draw(st.integers(1, 255))
    got, _ = _decode_all(bytes(wire) + encode_frame(following))
    assert got == [following]  # the corrupted frame is dropped, the next one still decodes


@given(frames, st.data())
def test_truncated_frame_is_dropped_and_next_frame_survives(frame: Frame, data: st.DataObject) -> None:
    wire = encode_frame(frame)
    cut = data.draw(st.integers(2, len(wire) - 2))
    nxt = Frame(1, 2, 3, b"next")
    got, errors = _decode_all(wire[:cut] + encode_frame(nxt))
    assert got == [nxt]
    assert errors == 1
    # Only the closing flag lost: the next frame's opening flag closes it, both survive.
    assert _decode_all(wire[:-1] + encode_frame(nxt)) == ([frame, nxt], 0)


def test_bad_crc_is_a_checksum_error_that_keeps_the_closing_flag() -> None:
    wire = bytearray(hx("7E 01 02 06 00 00 E4 95 7E"))
    wire[-2] ^= 0x01
    with pytest.raises(ChecksumError) as info:
        decode_frame(wire)
    assert isinstance(info.value, CrcMismatch)
    assert info.value.consumed == len(wire) - 1
    assert info.value.seq == 0x02


def test_noise_without_flag_is_dropped_and_overlong_frames_rejected() -> None:
    assert decode_frame(b"\x01\x02\x03") == (3, None)
    assert decode_frame(b"\x01\x7e\x02") == (1, None)
    assert decode_frame(b"\x7e\x7e") == (1, None)
    with pytest.raises(MalformedFrame) as info:
        decode_frame(b"\x7e" + b"\x00" * (MAX_STUFFED + 1))
    assert info.value.consumed == MAX_STUFFED + 2
    with pytest.raises(FrameError, match="shorter"):
        decode_frame(b"\x7e\x01\x02\x7e")
    too_long = b"\x01\x01\x20" + (MAX_PAYLOAD + 1).to_bytes(2, "big") + b"\x00" * 4
    with pytest.raises(FrameError, match="exceeds"):
        decode_frame(b"\x7e" + too_long + b"\x7e")


def test_frame_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="seq"):
        Frame(1, 256, 1)
    with pytest.raises(ValueError, match="exceeds"):
        Frame(1, 1, 1, b"\x00" * (MAX_PAYLOAD + 1))


# ------------------------------------------------------------------ message round trips
u32 = st.integers(0, 2**32 - 1)
text = st.text(max_size=40)
requests = st.one_of(
    st.just(Identify()),
    st.just(GetClock()),
    st.builds(SetClock, u32),
    st.just(GetStatus()),
    st.builds(GetRecord, u32),
    st.builds(GetProfile, u32, st.integers(0, 255)),
)
replies = st.one_of(
    st.builds(
        IdentifyReply, st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535), text, text, text
    ),
    st.builds(ClockReply, u32),
    st.builds(StatusReply, u32, u32, st.integers(0, 255)),
    st.builds(
        RecordHeader,
        u32,
        st.integers(0, 255),
        u32,
        st.integers(1, 65535),
        st.integers(1, 65535),
        st.integers(1, 65535),
        u32,
        text,
        text,
        text,
        text,
    ).filter(lambda h: h.chunks <= 256),  # the protocol addresses at most 256 chunks
    st.builds(
        ProfileChunk,
        u32,
        st.integers(0, 255),
        st.integers(0, 65535),
        st.lists(st.integers(0, 65535), max_size=256).map(tuple),
    ),
    st.just(Ack()),
    st.builds(Nak, st.integers(0, 255)),
    st.builds(Refused, st.integers(0, 255)),
)


@given(requests, st.integers(0, 255))
def test_request_round_trip_through_frames(msg: Request, seq: int) -> None:
    _, frame = decode_frame(_frame(msg, seq))
    assert frame is not None
    assert decode_request(frame.cmd, frame.payload) == msg


@given(replies, st.integers(0, 255))
def test_reply_round_trip_through_frames(msg: Reply, seq: int) -> None:
    _, frame = decode_frame(_reply_frame(msg, seq, Cmd.GET_RECORD))
    assert frame is not None
    assert decode_reply(frame.cmd, frame.payload) == msg


@pytest.mark.parametrize(
    ("cmd", "payload", "match"),
    [
        (0xA3, b"\x00" * 8, "too short"),
        (0xA3, b"\x00" * 10, "trailing"),
        (0xA5, bytes(9) + b"\x00", "carries"),
        (0xA4, bytes(19) + b"\x00\x00\x00\x00", "zero"),
        (0xA0, b"\x01\x08\x04\x00\x02\xff\xfe\x00\x00", "UTF-8"),
        (0x55, b"", "unknown reply"),
    ],
)
def test_bad_reply_payloads_are_protocol_errors(cmd: int, payload: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_reply(cmd, payload)


def test_bad_requests_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="unknown command"):
        decode_request(0x30, b"")
    with pytest.raises(ProtocolError, match="too short"):
        decode_request(Cmd.GET_RECORD, b"\x00\x01")


def test_text_fields_longer_than_255_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        encode_reply(IdentifyReply(1, 8, 1024, "菠" * 100, "m", "f"))


def test_a_header_needing_more_than_256_chunks_is_a_protocol_error() -> None:
    # 1,024 points in chunks of 3 passes the driver's size checks but needs 342 chunks, and GET_PROFILE
    # addresses a chunk with one byte: the header itself is refused, not the 257th request.
    header = RecordHeader(7, 1, 1_700_000_000, 1024, 3, 65535, 0, "k", "s", "p", "o")
    cmd, payload = encode_reply(header)
    with pytest.raises(ProtocolError, match="342 chunks"):
        decode_reply(cmd, payload)
    fits = RecordHeader(7, 1, 1_700_000_000, 1024, 4, 65535, 0, "k", "s", "p", "o")  # exactly 256 chunks
    assert decode_reply(*encode_reply(fits)) == fits
