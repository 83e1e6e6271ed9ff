"""Enzyme-inhibition analyzer (AChE, 412 nm) over Modbus TCP or Modbus RTU on a serial line.

Does, in three layers:

1. Register map as *data* (`ENZYME_MAP`, a table of frozen `Field` rows plus the per-channel array
   layout) — documented in docs/protocols/modbus-enzyme.md, which a test checks against this table.
2. Pure codecs: registers ⇄ typed values (uint16/int16/uint32, NUL-padded text, scaled absorbance,
   CRC-16/MODBUS over a run page, block-read planning within the Modbus limit of 125 registers).
   No I/O; they raise `FrameError` / `ChecksumError` only.
3. A session over the pymodbus *sync* client (`ModbusSession`) that owns retries, timeouts, reconnect
   and the translation of pymodbus errors into `drivers.errors`, and `EnzymeModbusAnalyzer`, the
   `drivers.readings.Analyzer` for this family (identify, run counter, paged run memory, start command).

Does not: interpret kinetics (that is `gateway.interpret.enzyme`), retry across calls with long
backoff (the gateway worker does that), or scan networks.

Consistency guard: a run is read as header → sample ids → products → absorbance blocks → header
again. The page carries a CRC-16/MODBUS over all its words; the run number, header and CRC must be
identical before and after and the CRC must match the data, otherwise the whole page is re-read.
A page that changed mid-read (another client selected a different run, memory rolled over) is thus
never returned half-mixed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Final, Literal, Self, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import Field as PydanticField
from pydantic import model_validator
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.errors import (
    ChecksumError,
    DeviceNotFound,
    DriverError,
    DriverTimeout,
    FrameError,
    ProtocolError,
    TransportError,
)
from drivers.readings import Analyzer, DeviceInfo, EnzymeReading
from drivers.registry import DriverFamily, InstrumentSettings, Probed, ProbeOptions
from drivers.timeouts import Timeouts

DRIVER_NAME: Final = "enzyme-modbus"
MAX_READ_REGISTERS: Final = 125  # Modbus application protocol limit for FC 03/04
MAX_WRITE_REGISTERS: Final = 123  # FC 16
SIGNATURE: Final = 0x4B4A  # "KJ"
MAP_VERSION: Final = 1

Kind = Literal["u16", "i16", "u32", "ascii", "utf8"]
Access = Literal["r", "rw", "w"]


# --------------------------------------------------------------------------------------------------
# Register map (data)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One named value in the holding-register space (FC 03 read, FC 06/16 write).

    `address` is the 0-based protocol address (Modicon reference 4xxxx = address + 40001).
    Engineering value = raw × `scale` (in `unit`). Text fields are NUL-padded, 2 bytes per register,
    high byte first.
    """

    name: str
    address: int
    count: int
    kind: Kind
    access: Access
    scale: float = 1.0
    unit: str = ""
    doc: str = ""

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class ArrayField:
    """A per-channel array: element (c, i) lives at `base + c * stride + i` (stride 0 = packed (C, T))."""

    name: str
    base: int
    regs_per_item: int
    max_items: int
    kind: Kind
    scale: float = 1.0
    unit: str = ""
    doc: str = ""


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """The complete register map of one analyzer model family (a new model = a new table)."""

    fields: tuple[Field, ...]
    sample_ids: ArrayField
    products: ArrayField
    absorbance: ArrayField  # packed row-major (C, T): address = base + c * T + t
    max_channels: int
    max_points: int

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def page_header(self) -> tuple[int, int]:
        """(address, count) of the run-page header block (run number .. profile name)."""
        first = self["page_run_no"].address
        return first, self["page_profile"].end - first

    @property
    def top(self) -> int:
        """One past the highest mapped address."""
        return self.absorbance.base + self.max_channels * self.max_points


class Status(IntEnum):
    """Value of the `status` register."""

    IDLE = 0
    MEASURING = 1
    DONE = 2
    ERROR = 3


class Command(IntEnum):
    """Values written to the `command` register."""

    NONE = 0
    START_RUN = 1
    CLEAR_ERROR = 2


ABSORBANCE_SCALE: Final = 1e-4  # AU per count (0.1 mAU), int16 → ±3.2767 AU

ENZYME_MAP: Final = RegisterMap(
    fields=(
        # identification (read-only)
        Field("map_version", 0, 1, "u16", "r", doc="register map version (1)"),
        Field("signature", 1, 1, "u16", "r", doc='0x4B4A ("KJ"): a kuaijian enzyme analyzer'),
        Field("vendor", 2, 8, "ascii", "r", doc="vendor name, 16 chars"),
        Field("model", 10, 8, "ascii", "r", doc="model, 16 chars"),
        Field("serial", 18, 8, "ascii", "r", doc="serial number, 16 chars"),
        Field("firmware", 26, 4, "ascii", "r", doc="firmware version, 8 chars"),
        Field("channels", 30, 1, "u16", "r", doc="number of cuvette channels C (1..16)"),
        Field("max_points", 31, 1, "u16", "r", doc="max time points per run (128)"),
        Field("memory_runs", 32, 1, "u16", "r", doc="runs kept in instrument memory"),
        # status (read-only)
        Field("status", 40, 1, "u16", "r", doc="0 idle, 1 measuring, 2 done, 3 error"),
        Field("error_code", 41, 1, "u16", "r", doc="0 = no error; instrument-specific otherwise"),
        Field("run_counter", 42, 2, "u32", "r", doc="number of the latest completed run (0 = none)"),
        Field("oldest_run", 44, 2, "u32", "r", doc="oldest run still in memory (0 = none)"),
        Field("clock", 46, 2, "u32", "r", unit="s", doc="instrument clock, Unix epoch seconds (UTC)"),
        # control (writable)
        Field(
            "command", 60, 1, "u16", "rw", doc="write 1 = start run, 2 = clear error; reads the last command"
        ),
        Field(
            "select_run", 61, 2, "u32", "rw", doc="run number shown in the run page (write u32 with FC 16)"
        ),
        # run page (read-only, shows the selected run)
        Field("page_run_no", 100, 2, "u32", "r", doc="run number of the page (0 = empty)"),
        Field("page_started_at", 102, 2, "u32", "r", unit="s", doc="run start, Unix epoch seconds (UTC)"),
        Field("page_interval", 104, 1, "u16", "r", scale=0.1, unit="s", doc="time between points"),
        Field("page_first_point", 105, 1, "u16", "r", scale=0.1, unit="s", doc="time of point 0"),
        Field("page_points", 106, 1, "u16", "r", doc="number of time points T"),
        Field("page_control", 107, 1, "u16", "r", doc="control (no-inhibitor) channel index"),
        Field("page_channels", 108, 1, "u16", "r", doc="channels C in this run"),
        Field("page_crc", 109, 1, "u16", "r", doc="CRC-16/MODBUS over the page (see below)"),
        Field("page_profile", 110, 16, "utf8", "r", doc="enzyme profile name, 32 bytes UTF-8"),
    ),
    sample_ids=ArrayField("sample_ids", 128, 8, 16, "ascii", doc="sample id of channel c, 16 chars"),
    products=ArrayField("products", 256, 8, 16, "utf8", doc="product of channel c, 16 bytes UTF-8"),
    absorbance=ArrayField(
        "absorbance", 400, 1, 2048, "i16", scale=ABSORBANCE_SCALE, unit="AU", doc="A412 of (c, t)"
    ),
    max_channels=16,
    max_points=128,
)


# --------------------------------------------------------------------------------------------------
# Codecs (pure)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Session (I/O over the pymodbus sync client)
# --------------------------------------------------------------------------------------------------

# Exception codes that mean "try again later" (busy / acknowledged, still working) → retried.
RETRYABLE_EXCEPTIONS: Final = frozenset({0x05, 0x06})
EXCEPTION_NAMES: Final = {
    0x01: "ILLEGAL_FUNCTION",
    0x02: "ILLEGAL_DATA_ADDRESS",
    0x03: "ILLEGAL_DATA_VALUE",
    0x04: "SLAVE_DEVICE_FAILURE",
    0x05: "ACKNOWLEDGE",
    0x06: "SLAVE_DEVICE_BUSY",
    0x08: "MEMORY_PARITY_ERROR",
    0x0A: "GATEWAY_PATH_UNAVAILABLE",
    0x0B: "GATEWAY_TARGET_NO_RESPONSE",
}


class ModbusExceptionResponse(ProtocolError):
    """The device answered with a Modbus exception response."""

    def __init__(self, function_code: int, exception_code: int) -> None:
        name = EXCEPTION_NAMES.get(exception_code, "UNKNOWN")
        super().__init__(f"FC {function_code:#04x}: exception {exception_code} ({name})")
        self.function_code = function_code
        self.exception_code = exception_code


T = TypeVar("T")
_Client = ModbusTcpClient | ModbusSerialClient


def _close_client(client: _Client) -> None:
    client.close()  # type: ignore[no-untyped-call]  # pymodbus leaves close() unannotated


class UnexpectedReply(ProtocolError):
    """A well-formed reply that does not answer the request sent (wrong function, size or echo) —
    typically a late RTU reply to an earlier request. Retried like a timeout."""


def _check_reply(rsp: object, function_code: int) -> None:
    """Exception responses → ModbusExceptionResponse; a reply to another function → UnexpectedReply
    (e.g. a late RTU reply to an earlier request, which carries no transaction id)."""
    fc = int(getattr(rsp, "function_code", -1))
    if fc == function_code | 0x80:
        raise ModbusExceptionResponse(function_code, int(getattr(rsp, "exception_code", 0)))
    if fc != function_code:
        raise UnexpectedReply(f"reply has function code {fc:#04x}, expected {function_code:#04x}")


class ModbusSession:
    """One Modbus link (TCP or RTU) to one unit: retries, timeouts, reconnect, error translation.

    Thread-safe: one request at a time. pymodbus is configured with retries=0 so that this class is
    the only place that retries. Attempts per request = `timeouts.retries + 1`; between attempts
    after a transport failure the link is closed and reopened after a short backoff.
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 502,
        serial_port: str | None = None,
        baudrate: int = 19200,
        unit: int = 1,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 — frozen, immutable default
    ) -> None:
        if (host is None) == (serial_port is None):
            raise ValueError("give exactly one of host= or serial_port=")
        if not 0 <= unit <= 247:
            raise ValueError("unit must be 0..247")
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.unit = unit
        self.timeouts = timeouts
        self._lock = threading.RLock()
        self._client: _Client | None = None
        self.requests = 0  # counters, for diagnostics and tests
        self.retried = 0
        self.reconnects = 0

    @property
    def endpoint(self) -> str:
        if self.host is not None:
            return f"tcp://{self.host}:{self.port}"
        return f"rtu://{self.serial_port}"

    def _make_client(self) -> _Client:
        if self.host is not None:
            return ModbusTcpClient(
                self.host, port=self.port, timeout=self.timeouts.response_s, retries=0, reconnect_delay=0
            )
        assert self.serial_port is not None  # noqa: S101 — guaranteed by __init__
        return ModbusSerialClient(
            self.serial_port, baudrate=self.baudrate, timeout=self.timeouts.response_s, retries=0
        )

    def open(self) -> None:
        """Connect now (TransportError if the endpoint is unreachable)."""
        with self._lock:
            self._connect()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                _close_client(client)

    def _connect(self) -> _Client:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is None:
            self._client = self._make_client()
        if not self._client.connect():
            _close_client(self._client)
            self._client = None
            raise TransportError(f"cannot connect to {self.endpoint}")
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            _close_client(self._client)
            self._client = None
        self.reconnects += 1

    def _call(self, what: str, op: Callable[[_Client], T]) -> T:
        attempts = self.timeouts.retries + 1
        backoff = min(self.timeouts.reconnect_initial_s, self.timeouts.response_s)
        last: DriverError | None = None
        with self._lock:
            for attempt in range(attempts):
                if attempt:
                    self.retried += 1
                self.requests += 1
                try:
                    client = self._connect()
                    return op(client)
                except TransportError as exc:  # from _connect
                    last = exc
                    if attempt + 1 < attempts:
                        time.sleep(backoff)
                        backoff = min(backoff * 2, self.timeouts.reconnect_max_s)
                except ModbusExceptionResponse as exc:
                    if exc.exception_code not in RETRYABLE_EXCEPTIONS:
                        raise
                    last = exc
                    if attempt + 1 < attempts:
                        time.sleep(min(0.05 * 2**attempt, self.timeouts.response_s))
                except ConnectionException as exc:
                    self._drop()
                    last = TransportError(f"{what} on {self.endpoint}: connection failed: {exc}")
                    last.__cause__ = exc
                except ModbusIOException as exc:
                    # no (valid) answer in time: a timeout, a CRC-failed frame, or a mismatched reply.
                    # Serial lines stay open; TCP is reopened so a late reply cannot be mismatched.
                    if self.host is not None:
                        self._drop()
                    else:
                        self._quiet_line()
                    last = DriverTimeout(f"{what} on {self.endpoint}: no valid reply: {exc}")
                    last.__cause__ = exc
                except (ModbusException, OSError) as exc:
                    self._drop()
                    last = TransportError(f"{what} on {self.endpoint}: {exc}")
                    last.__cause__ = exc
                except (FrameError, UnexpectedReply) as exc:
                    if self.host is None:
                        self._quiet_line()
                    last = exc
        assert last is not None  # noqa: S101 — at least one attempt ran
        raise last

    def _quiet_line(self) -> None:
        """After a missed reply on a serial line, let a late reply arrive and discard it, so it
        cannot be taken for the answer to the next request (RTU frames carry no transaction id)."""
        client = self._client
        sock = getattr(client, "socket", None) if client is not None else None
        if sock is None:
            return
        time.sleep(self.timeouts.inter_byte_s)
        try:
            sock.reset_input_buffer()
        except OSError:
            self._drop()

    def read(self, address: int, count: int) -> list[int]:
        """Read `count` holding registers from `address`, split into ≤125-register requests."""
        out: list[int] = []
        for a, n in plan_reads(address, count):

            def op(client: _Client, a: int = a, n: int = n) -> list[int]:
                return self._read_once(client, a, n)

            out.extend(self._call(f"read {a}+{n}", op))
        return out

    def _read_once(self, client: _Client, address: int, count: int) -> list[int]:
        rsp = client.read_holding_registers(address, count=count, device_id=self.unit)
        _check_reply(rsp, 0x03)
        regs = list(getattr(rsp, "registers", []))
        if len(regs) != count:
            raise UnexpectedReply(f"asked {count} registers at {address}, got {len(regs)}")
        return regs

    def write(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers (FC 06 for one, FC 16 for several)."""
        vals = [int(v) for v in values]
        if not 1 <= len(vals) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"write of {len(vals)} registers outside 1..{MAX_WRITE_REGISTERS}")

        def op(client: _Client) -> None:
            if len(vals) == 1:
                rsp = client.write_register(address, vals[0], device_id=self.unit)
                _check_reply(rsp, 0x06)
                echoed = [getattr(rsp, "address", None), *getattr(rsp, "registers", [])[:1]]
                if echoed != [address, vals[0]]:
                    raise UnexpectedReply(f"write {address}: echo {echoed} does not match the request")
            else:
                rsp = client.write_registers(address, vals, device_id=self.unit)
                _check_reply(rsp, 0x10)
                if getattr(rsp, "address", None) != address or getattr(rsp, "count", None) != len(vals):
                    raise UnexpectedReply(f"write {address}+{len(vals)}: reply does not match the request")

        self._call(f"write {address}", op)

    def device_identification(self) -> dict[int, str]:
        """FC 43/14 Read Device Identification, basic objects (0 vendor, 1 product code, 2 revision)."""

        def op(client: _Client) -> dict[int, str]:
            rsp = client.read_device_information(device_id=self.unit)
            _check_reply(rsp, 0x2B)
            info = getattr(rsp, "information", {})
            return {
                int(k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
                for k, v in info.items()
            }

        return self._call("read device identification", op)


# --------------------------------------------------------------------------------------------------
# Analyzer
# --------------------------------------------------------------------------------------------------


class EnzymeModbusAnalyzer:
    """`drivers.readings.Analyzer` for the kuaijian enzyme-inhibition register map (exactly one of
    `host` (Modbus TCP) or `serial_port` (Modbus RTU))."""

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 502,
        serial_port: str | None = None,
        baudrate: int = 19200,
        unit: int = 1,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 — frozen, immutable default
        rmap: RegisterMap = ENZYME_MAP,
    ) -> None:
        self.session = ModbusSession(
            host=host, port=port, serial_port=serial_port, baudrate=baudrate, unit=unit, timeouts=timeouts
        )
        self.rmap = rmap
        self.timeouts = timeouts
        self._lock = threading.RLock()
        self._identity: Identity | None = None
        self.rereads = 0  # page re-reads caused by the consistency guard

    @property
    def endpoint(self) -> str:
        return self.session.endpoint

    def open(self) -> None:
        self.session.open()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> EnzymeModbusAnalyzer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identity(self) -> Identity:
        address, count = identity_block(self.rmap)
        ident = decode_identity(self.session.read(address, count), self.rmap)
        self._identity = ident
        return ident

    def identify(self) -> DeviceInfo:
        ident = self.identity()
        return DeviceInfo(
            serial=ident.serial,
            model=ident.model,
            firmware=ident.firmware,
            driver=DRIVER_NAME,
            method="enzyme",
            channels=ident.channels,
        )

    def status(self) -> StatusBlock:
        address, count = status_block(self.rmap)
        return decode_status(self.session.read(address, count), self.rmap)

    def latest_record(self) -> int:
        f = self.rmap["run_counter"]
        return decode_u32(self.session.read(f.address, f.count))

    def start_run(self) -> None:
        """Press "start": the instrument measures its loaded cuvettes; poll `latest_record` for the run."""
        self.session.write(self.rmap["command"].address, [int(Command.START_RUN)])

    def clear_error(self) -> None:
        self.session.write(self.rmap["command"].address, [int(Command.CLEAR_ERROR)])

    def read_page(self, record_no: int) -> RunPage:
        """Select run `record_no` and read its page consistently (see module docstring)."""
        if not 1 <= record_no <= 0xFFFF_FFFF:
            raise ValueError("record numbers start at 1")
        with self._lock:
            last: DriverError | None = None
            for attempt in range(self.timeouts.retries + 1):
                if attempt:
                    self.rereads += 1
                try:
                    return self._read_page_once(record_no)
                except (ChecksumError, _PageChanged) as exc:
                    last = exc
            assert last is not None  # noqa: S101
            raise ProtocolError(
                f"run {record_no}: no consistent page after {self.timeouts.retries + 1} reads: {last}"
            ) from last

    def _read_page_once(self, record_no: int) -> RunPage:
        rmap = self.rmap
        self.session.write(rmap["select_run"].address, encode_u32(record_no))
        h_addr, h_count = rmap.page_header
        header_regs = self.session.read(h_addr, h_count)
        header = decode_header(header_regs, rmap)
        if header.run_no != record_no:
            raise _PageChanged(f"page shows run {header.run_no}, selected {record_no}")
        validate_header(header, rmap)
        ids = self.session.read(*array_block(rmap.sample_ids, header.channels))
        prods = self.session.read(*array_block(rmap.products, header.channels))
        absorb = self.session.read(*absorbance_block(header.channels, header.points, rmap))
        again = self.session.read(h_addr, h_count)
        if list(again) != list(header_regs):
            raise _PageChanged(f"run {record_no}: page header changed during the read")
        return decode_page(header, header_regs, ids, prods, absorb, rmap)

    def read_record(self, record_no: int) -> EnzymeReading:
        page = self.read_page(record_no)
        ident = self._identity
        extra = {"endpoint": self.endpoint}
        if ident is not None:
            extra["serial"] = ident.serial
        return EnzymeReading(
            record_no=page.run_no,
            profile=page.profile,
            control_channel=page.control_channel,
            times_s=page.times_s,
            absorbance=page.absorbance,
            sample_ids=page.sample_ids,
            products=page.products,
            measured_at=datetime.fromtimestamp(page.started_at, tz=UTC),
            extra=extra,
        )

    def iter_records(self, after: int) -> Iterator[EnzymeReading]:
        """Records after `after` up to the current run counter, oldest first."""
        for n in range(after + 1, self.latest_record() + 1):
            yield self.read_record(n)


class _PageChanged(ProtocolError):
    """The run page changed between the blocks of one read (internal; triggers a re-read)."""


# --------------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------------

PROBE_TIMEOUTS: Final = Timeouts(response_s=0.3, retries=1, reconnect_initial_s=0.05, reconnect_max_s=0.1)


def _probe(analyzer: EnzymeModbusAnalyzer) -> DeviceInfo:
    try:
        analyzer.open()
        return analyzer.identify()
    except DriverError as exc:
        raise DeviceNotFound(f"{analyzer.endpoint}: no enzyme analyzer: {exc}") from exc
    finally:
        analyzer.close()


def probe_tcp(host: str, port: int, unit: int = 1, timeouts: Timeouts | None = None) -> DeviceInfo:
    """Identify an enzyme analyzer at a Modbus TCP endpoint, or raise DeviceNotFound."""
    return _probe(EnzymeModbusAnalyzer(host=host, port=port, unit=unit, timeouts=timeouts or PROBE_TIMEOUTS))


def probe_rtu(
    path: str, baudrate: int = 19200, unit: int = 1, timeouts: Timeouts | None = None
) -> DeviceInfo:
    """Identify an enzyme analyzer on a Modbus RTU serial line, or raise DeviceNotFound."""
    return _probe(
        EnzymeModbusAnalyzer(
            serial_port=path, baudrate=baudrate, unit=unit, timeouts=timeouts or PROBE_TIMEOUTS
        )
    )


# --------------------------------------------------------------------------------------------------
# Registration (drivers.registry)
# --------------------------------------------------------------------------------------------------


class EnzymeModbusInstrument(InstrumentSettings):
    """`driver = "enzyme-modbus"`: an enzyme-inhibition analyzer over Modbus TCP (`host`) or RTU
    (`serial_port`)."""

    driver: Literal["enzyme-modbus"]
    host: str | None = None
    port: int = PydanticField(default=502, gt=0, lt=65536)
    serial_port: str | None = None
    baudrate: int = PydanticField(default=19200, gt=0)
    unit: int = PydanticField(default=1, ge=0, le=247)
    default_profile: str | None = PydanticField(
        default=None, description="profile when the analyzer reports none"
    )

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        if (self.host is None) == (self.serial_port is None):
            raise ValueError("set exactly one of host (Modbus TCP) or serial_port (Modbus RTU)")
        return self

    def default_profile_name(self) -> str | None:
        return self.default_profile


def _make(settings: EnzymeModbusInstrument, timeouts: Timeouts) -> Callable[[], Analyzer]:
    def enzyme() -> Analyzer:
        return EnzymeModbusAnalyzer(
            host=settings.host,
            port=settings.port,
            serial_port=settings.serial_port,
            baudrate=settings.baudrate,
            unit=settings.unit,
            timeouts=timeouts,
        )

    return enzyme


def _probe_serial(path: str, options: ProbeOptions) -> Probed:
    info = probe_rtu(path, baudrate=options.baudrate, unit=options.unit, timeouts=options.timeouts())
    settings: dict[str, Any] = {"serial_port": path, "unit": options.unit}
    if options.baudrate != 19200:
        settings["baudrate"] = options.baudrate
    return Probed(info, "modbus-rtu", settings, port_key="serial_port")


def _probe_tcp(host: str, port: int, options: ProbeOptions) -> Probed:
    info = probe_tcp(host, port, unit=options.unit, timeouts=options.timeouts())
    return Probed(info, "modbus-tcp", {"host": host, "port": port, "unit": options.unit})


FAMILY: DriverFamily[EnzymeModbusInstrument] = DriverFamily(
    name=DRIVER_NAME,
    settings=EnzymeModbusInstrument,
    factory=_make,
    probe_serial=_probe_serial,
    probe_tcp=_probe_tcp,
    doc="enzyme-inhibition analyzer, Modbus TCP / RTU register map",
)
