"""Pure codecs of the enzyme analyzer's registers: words ⇄ typed values, blocks and run pages.

Does: uint16/int16/uint32 and NUL-padded text in 16-bit registers, scaled absorbance, CRC-16/MODBUS,
Modbus read planning (≤ 125 registers per request), and whole blocks of `drivers.enzyme_map.ENZYME_MAP`:
identification, status, run-page header and the page with its CRC (`encode_page` for the simulator,
`decode_page` for the driver). No I/O; raises `FrameError` / `ChecksumError` for words that cannot be
what the map says and `ProtocolError` for well-formed values that are impossible.

Does not: talk Modbus (`drivers.modbus_session`), retry, or decide which blocks to read in which order
(`drivers.enzyme_modbus`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from drivers.enzyme_map import (
    ABSORBANCE_SCALE,
    ENZYME_MAP,
    MAP_VERSION,
    SIGNATURE,
    ArrayField,
    Field,
    RegisterMap,
    Status,
)
from drivers.errors import ChecksumError, FrameError, ProtocolError

MAX_READ_REGISTERS: Final = 125  # Modbus application protocol limit for FC 03/04
MAX_WRITE_REGISTERS: Final = 123  # FC 16


def _check_reg(value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise FrameError(f"register value {value} out of 0..65535")


def encode_u16(value: int) -> list[int]:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{value} does not fit uint16")
    return [value]


def decode_u16(regs: Sequence[int]) -> int:
    if len(regs) != 1:
        raise FrameError(f"uint16 needs 1 register, got {len(regs)}")
    _check_reg(regs[0])
    return int(regs[0])


def encode_i16(value: int) -> list[int]:
    if not -0x8000 <= value <= 0x7FFF:
        raise ValueError(f"{value} does not fit int16")
    return [value & 0xFFFF]


def decode_i16(regs: Sequence[int]) -> int:
    raw = decode_u16(regs)
    return raw - 0x10000 if raw & 0x8000 else raw


def encode_u32(value: int) -> list[int]:
    """uint32 as two registers, high word first (big-endian word order)."""
    if not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"{value} does not fit uint32")
    return [value >> 16, value & 0xFFFF]


def decode_u32(regs: Sequence[int]) -> int:
    if len(regs) != 2:
        raise FrameError(f"uint32 needs 2 registers, got {len(regs)}")
    _check_reg(regs[0])
    _check_reg(regs[1])
    return (int(regs[0]) << 16) | int(regs[1])


def encode_text(text: str, n_regs: int, encoding: Literal["ascii", "utf-8"] = "ascii") -> list[int]:
    """Text as NUL-padded bytes, two per register, first byte in the high half."""
    raw = text.encode(encoding)
    if len(raw) > 2 * n_regs:
        raise ValueError(f"{text!r} needs {len(raw)} bytes, only {2 * n_regs} available")
    if b"\x00" in raw:
        raise ValueError("text must not contain NUL")
    raw = raw.ljust(2 * n_regs, b"\x00")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def decode_text(regs: Sequence[int], encoding: Literal["ascii", "utf-8"] = "ascii") -> str:
    """Inverse of `encode_text`: bytes up to the first NUL; a NUL followed by non-NUL is corrupt."""
    for r in regs:
        _check_reg(r)
    raw = b"".join(int(r).to_bytes(2, "big") for r in regs)
    text, _, pad = raw.partition(b"\x00")
    if pad.strip(b"\x00"):
        raise FrameError(f"text field has data after its NUL terminator: {raw!r}")
    try:
        return text.decode(encoding)
    except UnicodeDecodeError as exc:
        raise FrameError(f"text field is not valid {encoding}: {raw!r}") from exc


def encode_scaled_u16(value: float, scale: float) -> list[int]:
    raw = round(value / scale)
    return encode_u16(raw)


def encode_absorbance(values: npt.ArrayLike) -> list[int]:
    """Absorbance (AU) → int16 counts of 1e-4 AU (two's complement in uint16 registers).

    Raises ValueError for NaN/inf or values outside ±3.2767 AU (the instrument clips before this).
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError("absorbance must be finite")
    counts = np.rint(arr / ABSORBANCE_SCALE)
    if counts.size and (counts.min() < -0x8000 or counts.max() > 0x7FFF):
        raise ValueError("absorbance outside the int16 range of ±3.2767 AU")
    return [int(c) & 0xFFFF for c in counts.astype(np.int64)]


def decode_absorbance(regs: Sequence[int]) -> npt.NDArray[np.float64]:
    """int16 counts → absorbance in AU (float64)."""
    arr = np.asarray(regs, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFF):
        raise FrameError("register value out of 0..65535")
    signed = np.where(arr >= 0x8000, arr - 0x10000, arr)
    return signed.astype(np.float64) * ABSORBANCE_SCALE


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); crc16_modbus(b"123456789") == 0x4B37."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def regs_to_bytes(regs: Sequence[int]) -> bytes:
    return b"".join(int(r).to_bytes(2, "big") for r in regs)


def plan_reads(address: int, count: int, max_block: int = MAX_READ_REGISTERS) -> list[tuple[int, int]]:
    """Split one logical read into Modbus requests of at most `max_block` registers."""
    if count < 0 or address < 0 or address + count > 0x10000:
        raise ValueError(f"bad read range {address}+{count}")
    if not 1 <= max_block <= MAX_READ_REGISTERS:
        raise ValueError(f"max_block must be 1..{MAX_READ_REGISTERS}")
    return [(a, min(max_block, address + count - a)) for a in range(address, address + count, max_block)]


@dataclass(frozen=True, slots=True)
class Identity:
    """Decoded identification block."""

    map_version: int
    vendor: str
    model: str
    serial: str
    firmware: str
    channels: int
    max_points: int
    memory_runs: int


def identity_block(rmap: RegisterMap = ENZYME_MAP) -> tuple[int, int]:
    first = rmap["map_version"].address
    return first, rmap["memory_runs"].end - first


def _slice(regs: Sequence[int], base: int, f: Field) -> Sequence[int]:
    return regs[f.address - base : f.end - base]


def encode_identity(ident: Identity, rmap: RegisterMap = ENZYME_MAP) -> list[int]:
    base, count = identity_block(rmap)
    out = [0] * count

    def put(name: str, words: list[int]) -> None:
        f = rmap[name]
        out[f.address - base : f.end - base] = words

    put("map_version", encode_u16(ident.map_version))
    put("signature", encode_u16(SIGNATURE))
    put("vendor", encode_text(ident.vendor, rmap["vendor"].count))
    put("model", encode_text(ident.model, rmap["model"].count))
    put("serial", encode_text(ident.serial, rmap["serial"].count))
    put("firmware", encode_text(ident.firmware, rmap["firmware"].count))
    put("channels", encode_u16(ident.channels))
    put("max_points", encode_u16(ident.max_points))
    put("memory_runs", encode_u16(ident.memory_runs))
    return out


def decode_identity(regs: Sequence[int], rmap: RegisterMap = ENZYME_MAP) -> Identity:
    """Decode the identification block; ProtocolError if it is not one of our analyzers."""
    base, count = identity_block(rmap)
    if len(regs) != count:
        raise FrameError(f"identification block needs {count} registers, got {len(regs)}")
    sig = decode_u16(_slice(regs, base, rmap["signature"]))
    version = decode_u16(_slice(regs, base, rmap["map_version"]))
    if sig != SIGNATURE:
        raise ProtocolError(f"signature 0x{sig:04X} is not 0x{SIGNATURE:04X}: not a kuaijian enzyme analyzer")
    if version != MAP_VERSION:
        raise ProtocolError(f"unsupported register map version {version}")
    channels = decode_u16(_slice(regs, base, rmap["channels"]))
    if not 1 <= channels <= rmap.max_channels:
        raise ProtocolError(f"channel count {channels} out of 1..{rmap.max_channels}")
    return Identity(
        map_version=version,
        vendor=decode_text(_slice(regs, base, rmap["vendor"])),
        model=decode_text(_slice(regs, base, rmap["model"])),
        serial=decode_text(_slice(regs, base, rmap["serial"])),
        firmware=decode_text(_slice(regs, base, rmap["firmware"])),
        channels=channels,
        max_points=decode_u16(_slice(regs, base, rmap["max_points"])),
        memory_runs=decode_u16(_slice(regs, base, rmap["memory_runs"])),
    )


@dataclass(frozen=True, slots=True)
class StatusBlock:
    status: Status
    error_code: int
    run_counter: int
    oldest_run: int
    clock: int


def status_block(rmap: RegisterMap = ENZYME_MAP) -> tuple[int, int]:
    first = rmap["status"].address
    return first, rmap["clock"].end - first


def encode_status(st: StatusBlock, rmap: RegisterMap = ENZYME_MAP) -> list[int]:
    base, count = status_block(rmap)
    out = [0] * count
    for name, words in (
        ("status", encode_u16(int(st.status))),
        ("error_code", encode_u16(st.error_code)),
        ("run_counter", encode_u32(st.run_counter)),
        ("oldest_run", encode_u32(st.oldest_run)),
        ("clock", encode_u32(st.clock)),
    ):
        f = rmap[name]
        out[f.address - base : f.end - base] = words
    return out


def decode_status(regs: Sequence[int], rmap: RegisterMap = ENZYME_MAP) -> StatusBlock:
    base, count = status_block(rmap)
    if len(regs) != count:
        raise FrameError(f"status block needs {count} registers, got {len(regs)}")
    raw_status = decode_u16(_slice(regs, base, rmap["status"]))
    try:
        status = Status(raw_status)
    except ValueError as exc:
        raise ProtocolError(f"unknown status value {raw_status}") from exc
    return StatusBlock(
        status=status,
        error_code=decode_u16(_slice(regs, base, rmap["error_code"])),
        run_counter=decode_u32(_slice(regs, base, rmap["run_counter"])),
        oldest_run=decode_u32(_slice(regs, base, rmap["oldest_run"])),
        clock=decode_u32(_slice(regs, base, rmap["clock"])),
    )


@dataclass(frozen=True, slots=True)
class RunHeader:
    """Decoded run-page header. `crc` is the CRC the instrument computed over the whole page."""

    run_no: int
    started_at: int  # epoch seconds
    interval_ds: int  # 0.1 s
    first_point_ds: int  # 0.1 s
    points: int
    control_channel: int
    channels: int
    crc: int
    profile: str


@dataclass(frozen=True, slots=True)
class RunPage:
    """One complete run as stored in the instrument (engineering units)."""

    run_no: int
    started_at: int
    interval_s: float
    first_point_s: float
    control_channel: int
    profile: str
    sample_ids: tuple[str, ...]
    products: tuple[str, ...]
    absorbance: npt.NDArray[np.float64]  # (C, T)

    @property
    def times_s(self) -> npt.NDArray[np.float64]:
        n = self.absorbance.shape[1]
        return self.first_point_s + np.arange(n, dtype=np.float64) * self.interval_s


def _header_words_without_crc(header_regs: Sequence[int], rmap: RegisterMap) -> list[int]:
    base = rmap.page_header[0]
    crc_at = rmap["page_crc"].address - base
    return [*header_regs[:crc_at], *header_regs[crc_at + 1 :]]


def page_crc(
    header_regs: Sequence[int],
    id_regs: Sequence[int],
    product_regs: Sequence[int],
    abs_regs: Sequence[int],
    rmap: RegisterMap = ENZYME_MAP,
) -> int:
    """CRC-16/MODBUS over header (without the CRC word), ids, products, absorbance, as big-endian words."""
    words = [*_header_words_without_crc(header_regs, rmap), *id_regs, *product_regs, *abs_regs]
    return crc16_modbus(regs_to_bytes(words))


def decode_header(regs: Sequence[int], rmap: RegisterMap = ENZYME_MAP) -> RunHeader:
    base, count = rmap.page_header
    if len(regs) != count:
        raise FrameError(f"page header needs {count} registers, got {len(regs)}")

    def get(name: str) -> Sequence[int]:
        return _slice(regs, base, rmap[name])

    return RunHeader(
        run_no=decode_u32(get("page_run_no")),
        started_at=decode_u32(get("page_started_at")),
        interval_ds=decode_u16(get("page_interval")),
        first_point_ds=decode_u16(get("page_first_point")),
        points=decode_u16(get("page_points")),
        control_channel=decode_u16(get("page_control")),
        channels=decode_u16(get("page_channels")),
        crc=decode_u16(get("page_crc")),
        profile=decode_text(get("page_profile"), "utf-8"),
    )


def validate_header(h: RunHeader, rmap: RegisterMap = ENZYME_MAP) -> None:
    """Range checks of a decoded header (ProtocolError: a valid frame with impossible values)."""
    if not 1 <= h.channels <= rmap.max_channels:
        raise ProtocolError(f"run {h.run_no}: channel count {h.channels} out of 1..{rmap.max_channels}")
    if not 2 <= h.points <= rmap.max_points:
        raise ProtocolError(f"run {h.run_no}: {h.points} time points out of 2..{rmap.max_points}")
    if h.control_channel >= h.channels:
        raise ProtocolError(f"run {h.run_no}: control channel {h.control_channel} >= {h.channels}")
    if h.interval_ds == 0:
        raise ProtocolError(f"run {h.run_no}: zero sampling interval")


def array_block(arr: ArrayField, channels: int) -> tuple[int, int]:
    """(address, count) of the first `channels` items of a per-channel text array."""
    return arr.base, arr.regs_per_item * channels


def absorbance_block(channels: int, points: int, rmap: RegisterMap = ENZYME_MAP) -> tuple[int, int]:
    return rmap.absorbance.base, channels * points


def encode_page(page: RunPage, rmap: RegisterMap = ENZYME_MAP) -> dict[int, list[int]]:
    """Registers of a run page, as {start address: words} blocks (header carries the CRC)."""
    c, t = page.absorbance.shape
    if len(page.sample_ids) != c or len(page.products) != c:
        raise ValueError("need one sample id and one product per channel")
    if not 1 <= c <= rmap.max_channels or not 2 <= t <= rmap.max_points:
        raise ValueError(f"run of shape {(c, t)} does not fit the register map")
    base, count = rmap.page_header
    header = [0] * count

    def put(name: str, words: list[int]) -> None:
        f = rmap[name]
        header[f.address - base : f.end - base] = words

    put("page_run_no", encode_u32(page.run_no))
    put("page_started_at", encode_u32(page.started_at))
    put("page_interval", encode_scaled_u16(page.interval_s, 0.1))
    put("page_first_point", encode_scaled_u16(page.first_point_s, 0.1))
    put("page_points", encode_u16(t))
    put("page_control", encode_u16(page.control_channel))
    put("page_channels", encode_u16(c))
    put("page_profile", encode_text(page.profile, rmap["page_profile"].count, "utf-8"))
    ids = [w for s in page.sample_ids for w in encode_text(s, rmap.sample_ids.regs_per_item, "ascii")]
    prods = [w for s in page.products for w in encode_text(s, rmap.products.regs_per_item, "utf-8")]
    absorb = encode_absorbance(page.absorbance)
    put("page_crc", [page_crc(header, ids, prods, absorb, rmap)])
    return {base: header, rmap.sample_ids.base: ids, rmap.products.base: prods, rmap.absorbance.base: absorb}


def decode_page(
    header: RunHeader,
    header_regs: Sequence[int],
    id_regs: Sequence[int],
    product_regs: Sequence[int],
    abs_regs: Sequence[int],
    rmap: RegisterMap = ENZYME_MAP,
) -> RunPage:
    """Assemble a page from its blocks; ChecksumError unless the page CRC matches the data."""
    c, t = header.channels, header.points
    n_item_ids = rmap.sample_ids.regs_per_item
    n_item_prod = rmap.products.regs_per_item
    if len(id_regs) != c * n_item_ids or len(product_regs) != c * n_item_prod or len(abs_regs) != c * t:
        raise FrameError("page blocks do not match the header's channel/point counts")
    crc = page_crc(header_regs, id_regs, product_regs, abs_regs, rmap)
    if crc != header.crc:
        raise ChecksumError(f"run {header.run_no}: page CRC 0x{crc:04X} != header 0x{header.crc:04X}")
    ids = tuple(decode_text(id_regs[i * n_item_ids : (i + 1) * n_item_ids], "ascii") for i in range(c))
    prods = tuple(
        decode_text(product_regs[i * n_item_prod : (i + 1) * n_item_prod], "utf-8") for i in range(c)
    )
    return RunPage(
        run_no=header.run_no,
        started_at=header.started_at,
        interval_s=header.interval_ds / 10,
        first_point_s=header.first_point_ds / 10,
        control_channel=header.control_channel,
        profile=header.profile,
        sample_ids=ids,
        products=prods,
        absorbance=decode_absorbance(abs_regs).reshape(c, t),
    )
