"""Typed, frozen readings and device descriptions every analyzer driver produces.

The gateway pulls readings by *record number*: each analyzer keeps a memory of completed measurements
numbered 1, 2, 3, …; `Analyzer.latest_record()` tells the newest number and `Analyzer.read_record(n)`
fetches one. The gateway stores the last record it persisted per instrument in the same transaction as
the outbox rows, so a crash anywhere re-reads at most one record and duplicates are refused by key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Method = Literal["gold", "enzyme"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What an analyzer says about itself on `identify`."""

    serial: str
    model: str
    firmware: str
    driver: str  # e.g. "gold-serial", "enzyme-modbus"
    method: Method
    channels: int


@dataclass(frozen=True, slots=True)
class GoldReading:
    """One strip read by a colloidal-gold reader: the raw reflectance profile along the strip.

    `profile` is float64 reflectance in [0, 1] (background bright, lines are dips), length = kit length.
    """

    record_no: int
    channel: int
    kit: str  # StripSpec name the strip was read with
    sample_id: str
    product: str
    measured_at: datetime  # timezone-aware (UTC)
    profile: npt.NDArray[np.float64]
    operator: str = ""


@dataclass(frozen=True, slots=True)
class EnzymeReading:
    """One run of a C-channel enzyme-inhibition analyzer at 412 nm.

    `absorbance` has shape (C, T) over `times_s` (T,); `control_channel` holds the enzyme control
    (no inhibitor). `sample_ids[c]` / `products[c]` describe channel c ("" for the control channel).
    """

    record_no: int
    profile: str  # enzyme profile name, e.g. "GB/T 5009.199" or "NY/T 448"
    control_channel: int
    times_s: npt.NDArray[np.float64]
    absorbance: npt.NDArray[np.float64]
    sample_ids: tuple[str, ...]
    products: tuple[str, ...]
    measured_at: datetime
    operator: str = ""
    extra: dict[str, str] = field(default_factory=dict)


Reading = GoldReading | EnzymeReading


def record_identity(reading: Reading) -> str:
    """A fingerprint of what a record *is* — its number, time, sample id(s), kit/profile and a checksum of its
    raw signal — so the gateway can tell the record at its cursor from a different one with the same number
    (the analyzer's memory was cleared or the analyzer replaced while the gateway was away)."""
    h = hashlib.sha256()
    if isinstance(reading, GoldReading):
        parts = ["gold", reading.record_no, reading.measured_at.isoformat(), reading.channel, reading.kit]
        parts += [reading.sample_id, reading.product, reading.operator]
        data = np.ascontiguousarray(reading.profile, dtype="<f8").tobytes()
    else:
        parts = ["enzyme", reading.record_no, reading.measured_at.isoformat(), reading.profile]
        parts += [reading.control_channel, *reading.sample_ids, "|", *reading.products, reading.operator]
        data = np.ascontiguousarray(reading.absorbance, dtype="<f8").tobytes()
        data += np.ascontiguousarray(reading.times_s, dtype="<f8").tobytes()
    h.update("\x1f".join(str(p) for p in parts).encode())
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()[:32]


@runtime_checkable
class Analyzer(Protocol):
    """What the gateway needs from any analyzer driver (one instance per connected instrument).

    Every method may raise `drivers.errors.DriverError`; retries inside one call are the session
    layer's job, reconnect-with-backoff across calls is the gateway worker's.
    """

    def open(self) -> None: ...

    def close(self) -> None: ...

    def identify(self) -> DeviceInfo: ...

    def latest_record(self) -> int: ...

    def read_record(self, record_no: int) -> Reading: ...


@runtime_checkable
class ClockSync(Protocol):
    """Analyzers whose clock the gateway can read and set (their results carry device timestamps)."""

    def get_clock(self) -> datetime: ...

    def sync_clock(self, now: datetime) -> None: ...
