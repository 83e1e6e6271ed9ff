"""Register map of the kuaijian enzyme-inhibition analyzer (AChE, 412 nm) — data, not control flow.

Does: describe the holding-register space as a table (`ENZYME_MAP`: frozen `Field` rows plus the
per-channel array layout), the values of the `status` and `command` registers and the map's constants.
docs/protocols/modbus-enzyme.md documents this table and a test checks the two agree. A new analyzer
model is a new `RegisterMap`.

Does not: convert register words to values (`drivers.enzyme_codec`), talk Modbus
(`drivers.modbus_session`) or read runs (`drivers.enzyme_modbus`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

SIGNATURE: Final = 0x4B4A  # "KJ"
MAP_VERSION: Final = 1

Kind = Literal["u16", "i16", "u32", "ascii", "utf8"]
Access = Literal["r", "rw", "w"]


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
