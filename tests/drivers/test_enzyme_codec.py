"""Codec tests for the enzyme Modbus register map: register vectors and hypothesis round-trips."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.enzyme_codec import (
    MAX_READ_REGISTERS,
    Identity,
    RunPage,
    StatusBlock,
    crc16_modbus,
    decode_absorbance,
    decode_header,
    decode_i16,
    decode_identity,
    decode_page,
    decode_status,
    decode_text,
    decode_u32,
    encode_absorbance,
    encode_i16,
    encode_identity,
    encode_page,
    encode_status,
    encode_text,
    encode_u32,
    plan_reads,
)
from drivers.enzyme_map import ABSORBANCE_SCALE, ENZYME_MAP, SIGNATURE, Status
from drivers.errors import ChecksumError, FrameError, ProtocolError

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "modbus-enzyme.md"


# ---------------------------------------------------------------- vectors


def test_crc16_modbus_check_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37
    # a real RTU frame: read holding registers unit 1, address 0, count 10 → CRC bytes C5 CD (lo, hi)
    assert crc16_modbus(bytes.fromhex("01030000000a")) == 0xCDC5


def test_integer_vectors() -> None:
    assert encode_u32(0x12345678) == [0x1234, 0x5678]
    assert decode_u32([0xDEAD, 0xBEEF]) == 0xDEADBEEF
    assert encode_i16(-1) == [0xFFFF]
    assert encode_i16(-32768) == [0x8000]
    assert decode_i16([0x7FFF]) == 32767
    assert decode_i16([0x8001]) == -32767
    with pytest.raises(ValueError, match="uint32"):
        encode_u32(1 << 32)
    with pytest.raises(FrameError):
        decode_u32([1])


def test_text_vectors() -> None:
    # "KJ-E12" → 'K''J' '-''E' '1''2' then NUL padding, high byte first
    assert encode_text("KJ-E12", 4) == [0x4B4A, 0x2D45, 0x3132, 0x0000]
    assert encode_text("abc", 2) == [0x6162, 0x6300]
    assert decode_text([0x4B4A, 0x2D45, 0x3132, 0x0000]) == "KJ-E12"
    assert encode_text("菠菜", 3, "utf-8") == [0xE88F, 0xA0E8, 0x8F9C]
    with pytest.raises(ValueError, match="bytes"):
        encode_text("x" * 17, 8)
    with pytest.raises(FrameError, match="after its NUL"):
        decode_text([0x4100, 0x4200])  # "A\0B\0": data after the terminator
    with pytest.raises(FrameError, match="utf-8"):
        decode_text([0xE88F, 0x0000], "utf-8")  # truncated multi-byte sequence


def test_absorbance_vectors() -> None:
    assert encode_absorbance([0.0, 1.2345, -0.0001, 3.2767, -3.2768]) == [0, 12345, 0xFFFF, 0x7FFF, 0x8000]
    np.testing.assert_allclose(decode_absorbance([12345, 0xFFFF, 0x8000]), [1.2345, -0.0001, -3.2768])
    with pytest.raises(ValueError, match="int16"):
        encode_absorbance([3.3])
    with pytest.raises(ValueError, match="finite"):
        encode_absorbance([np.nan])


def test_identity_block_vector() -> None:
    ident = Identity(1, "Kuaijian Sim", "KJ-E12", "EN-0001", "1.4.2", 12, 128, 200)
    regs = encode_identity(ident)
    assert len(regs) == 33
    assert regs[0] == 1
    assert regs[1] == SIGNATURE == 0x4B4A
    assert regs[10:14] == [0x4B4A, 0x2D45, 0x3132, 0]  # model "KJ-E12" at address 10
    assert regs[30] == 12
    assert decode_identity(regs) == ident
    bad = list(regs)
    bad[1] = 0x1234
    with pytest.raises(ProtocolError, match="signature"):
        decode_identity(bad)
    bad = list(regs)
    bad[30] = 0
    with pytest.raises(ProtocolError, match="channel count"):
        decode_identity(bad)


def test_status_block_vector() -> None:
    stb = StatusBlock(Status.MEASURING, 0, 70000, 5, 1_700_000_000)
    regs = encode_status(stb)
    assert regs[:4] == [1, 0, 0x0001, 0x1170]  # 70000 = 0x00011170
    assert decode_status(regs) == stb
    regs[0] = 9
    with pytest.raises(ProtocolError, match="status"):
        decode_status(regs)


def _page(c: int = 3, t: int = 4, run_no: int = 7) -> RunPage:
    a = np.round(np.linspace(0.1, 1.1, c * t).reshape(c, t), 4)
    return RunPage(
        run_no=run_no,
        started_at=1_700_000_000,
        interval_s=3.0,
        first_point_s=0.0,
        control_channel=0,
        profile="NY/T 448",
        sample_ids=("", "S1", "S2")[:c],
        products=("", "菠菜", "rice")[:c],
        absorbance=a,
    )


def _assemble(blocks: dict[int, list[int]]) -> tuple[list[int], list[int], list[int], list[int]]:
    return (
        blocks[ENZYME_MAP.page_header[0]],
        blocks[ENZYME_MAP.sample_ids.base],
        blocks[ENZYME_MAP.products.base],
        blocks[ENZYME_MAP.absorbance.base],
    )


def test_page_vector_and_crc_guard() -> None:
    page = _page()
    blocks = encode_page(page)
    header_regs, ids, prods, absorb = _assemble(blocks)
    assert header_regs[:2] == [0, 7]  # run number, u32 high word first
    assert header_regs[4] == 30  # interval 3.0 s in 0.1 s
    assert header_regs[6:9] == [4, 0, 3]  # points, control, channels
    assert ids[8:12] == encode_text("S1", 4)
    h = decode_header(header_regs)
    back = decode_page(h, header_regs, ids, prods, absorb)
    assert back.sample_ids == page.sample_ids
    assert back.products == page.products
    np.testing.assert_allclose(back.absorbance, page.absorbance, atol=ABSORBANCE_SCALE / 2)
    np.testing.assert_allclose(back.times_s, [0.0, 3.0, 6.0, 9.0])
    # one flipped absorbance word (a torn or corrupted read) → never a result
    torn = list(absorb)
    torn[5] ^= 0x0001
    with pytest.raises(ChecksumError):
        decode_page(h, header_regs, ids, prods, torn)
    # a sample id from another run
    other = list(ids)
    other[8:12] = encode_text("S9", 4)
    with pytest.raises(ChecksumError):
        decode_page(h, header_regs, other, prods, absorb)


def test_plan_reads_respects_modbus_limit() -> None:
    assert plan_reads(400, 756) == [
        (400, 125),
        (525, 125),
        (650, 125),
        (775, 125),
        (900, 125),
        (1025, 125),
        (1150, 6),
    ]
    assert plan_reads(0, 0) == []
    with pytest.raises(ValueError, match="bad read range"):
        plan_reads(65530, 10)


# ---------------------------------------------------------------- properties


@given(st.integers(0, 0xFFFF_FFFF))
def test_u32_roundtrip(v: int) -> None:
    regs = encode_u32(v)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode_u32(regs) == v


@given(st.integers(-0x8000, 0x7FFF))
def test_i16_roundtrip(v: int) -> None:
    assert decode_i16(encode_i16(v)) == v


@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=16))
def test_ascii_roundtrip(s: str) -> None:
    assert decode_text(encode_text(s, 8)) == s


@given(st.text(alphabet=st.characters(min_codepoint=1, exclude_categories=("Cs",)), max_size=6))
def test_utf8_roundtrip(s: str) -> None:
    if len(s.encode("utf-8")) > 32:
        return
    assert decode_text(encode_text(s, 16, "utf-8"), "utf-8") == s


@given(st.lists(st.floats(-3.2768, 3.2767, allow_nan=False), max_size=200))
def test_absorbance_roundtrip_within_half_count(values: list[float]) -> None:
    back = decode_absorbance(encode_absorbance(values))
    assert back.shape == (len(values),)
    assert np.all(np.abs(back - np.asarray(values)) <= ABSORBANCE_SCALE / 2 + 1e-12)


@given(st.integers(0, 65535), st.integers(0, 4000))
def test_plan_reads_covers_range_exactly(address: int, count: int) -> None:
    count = min(count, 0x10000 - address)
    plan = plan_reads(address, count)
    assert all(1 <= n <= MAX_READ_REGISTERS for _, n in plan)
    covered = [a + i for a, n in plan for i in range(n)]
    assert covered == list(range(address, address + count))


@settings(max_examples=50, deadline=None)
@given(
    st.integers(2, 16),
    st.integers(2, 128),
    st.integers(1, 0xFFFF_FFFF),
    st.integers(0, 2**32 - 1),
    st.data(),
)
def test_page_roundtrip(c: int, t: int, run_no: int, seed: int, data: st.DataObject) -> None:
    counts = np.random.default_rng(seed).integers(-32768, 32768, (c, t))
    absorb = counts.astype(np.float64) * ABSORBANCE_SCALE
    ids = tuple(
        data.draw(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16))
        for _ in range(c)
    )
    page = RunPage(
        run_no=run_no,
        started_at=data.draw(st.integers(0, 0xFFFF_FFFF)),
        interval_s=data.draw(st.integers(1, 600)) / 10,
        first_point_s=data.draw(st.integers(0, 600)) / 10,
        control_channel=data.draw(st.integers(0, c - 1)),
        profile="GB/T 5009.199-2003",
        sample_ids=ids,
        products=("青菜",) * c,
        absorbance=absorb,
    )
    header_regs, id_regs, prods, abs_regs = _assemble(encode_page(page))
    back = decode_page(decode_header(header_regs), header_regs, id_regs, prods, abs_regs)
    assert back.run_no == run_no
    assert back.sample_ids == ids
    assert back.control_channel == page.control_channel
    assert back.interval_s == pytest.approx(page.interval_s)
    np.testing.assert_allclose(back.absorbance, absorb, atol=1e-12)


# ---------------------------------------------------------------- documentation matches the table


def test_documented_register_map_matches_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = {
        m.group(1): (int(m.group(2)), int(m.group(3)), m.group(4))
        for m in re.finditer(r"^\|\s*`(\w+)`\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\w+)\s*\|", text, re.M)
    }
    for f in ENZYME_MAP.fields:
        assert rows.get(f.name) == (f.address, f.count, f.kind), f"docs row for {f.name} is wrong or missing"
    arrays = {
        m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(r"^\|\s*`(\w+)`\s*\|\s*(\d+)\s*\|\s*(\d+)×(\d+)\s*\|", text, re.M)
    }
    for arr in (ENZYME_MAP.sample_ids, ENZYME_MAP.products, ENZYME_MAP.absorbance):
        want = (arr.base, arr.regs_per_item, arr.max_items)
        assert arrays.get(arr.name) == want, f"docs row for {arr.name} is wrong or missing"
