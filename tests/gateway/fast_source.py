"""A fast, deterministic in-process analyzer for gateway tests and the benchmark (driver = "plugin").

Record n is a pure function of n (a colloidal-gold strip drawn once from the firmware_sim signal model:
every 10th strip positive, the rest blank), so a gateway killed and restarted against the same
parameters sees exactly the same records — the ground truth for the no-loss tests. Records "complete"
at `rate` per second from the wall-clock instant `t0` (a parameter), up to `total`.

Parameters (TOML `params` table): serial, t0 (unix s), rate (records/s), total, channels, kit,
fail_open_until (unix s: `open()` raises TransportError before then), fail_opens (the first N `open()`
calls of this serial and t0 raise TransportError — counted across the worker's re-made analyzers, so a
test waits for the retries themselves, not for a clock), unreadable (record numbers whose read always
fails with ProtocolError, like records rolled out of memory).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.errors import ProtocolError, TransportError
from drivers.readings import DeviceInfo, GoldReading
from drivers.timeouts import Timeouts
from firmware_sim.signal_model import one_gold_profile
from kuaijian_schema.kits import DEMO_KITS

KIT = "imidacloprid-v1"
_FAILS_LEFT: dict[tuple[str, float], int] = {}  # (serial, t0) → open() calls still to fail
_FAILS_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _profiles(kit: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    spec = DEMO_KITS[kit]
    rng = np.random.default_rng(7)
    cal = spec.lines[0].calibration
    high = (cal.c * 6.0) if cal is not None else 5.0
    blank = one_gold_profile(spec, rng, concentration=0.0).profile
    positive = one_gold_profile(spec, rng, concentration=high).profile
    return blank, positive


def is_positive(record_no: int) -> bool:
    return record_no % 10 == 0


class FastGoldSource:
    """`drivers.readings.Analyzer` over a deterministic record sequence."""

    def __init__(self, params: dict[str, Any], timeouts: Timeouts) -> None:
        self.serial = str(params.get("serial", "FAST-0001"))
        self.t0 = float(params.get("t0", time.time()))
        self.rate = float(params.get("rate", 100.0))
        self.total = int(params.get("total", 1_000_000))
        self.channels = int(params.get("channels", 8))
        self.kit = str(params.get("kit", KIT))
        self.fail_open_until = float(params.get("fail_open_until", 0.0))
        self.unreadable = {int(n) for n in params.get("unreadable", [])}
        self._fail_key = (self.serial, self.t0)
        _FAILS_LEFT.setdefault(self._fail_key, int(params.get("fail_opens", 0)))
        self.timeouts = timeouts
        self.opened = False
        self._latest_seen = 0  # records up to here have completed already (the clock only moves on)
        self._id_prefix = f"{self.serial}-S"

    def open(self) -> None:
        if time.time() < self.fail_open_until:
            raise TransportError(f"{self.serial}: port busy (simulated)")
        with _FAILS_LOCK:
            left = _FAILS_LEFT[self._fail_key]
            _FAILS_LEFT[self._fail_key] = max(0, left - 1)
        if left > 0:
            raise TransportError(f"{self.serial}: port busy (simulated, {left} more failure(s))")
        self.opened = True

    def close(self) -> None:
        self.opened = False

    def identify(self) -> DeviceInfo:
        return DeviceInfo(
            serial=self.serial,
            model="FAST-G",
            firmware="1",
            driver="plugin",
            method="gold",
            channels=self.channels,
        )

    def latest_record(self) -> int:
        latest = max(0, min(self.total, int((time.time() - self.t0) * self.rate)))
        self._latest_seen = max(self._latest_seen, latest)
        return latest

    def read_record(self, record_no: int) -> GoldReading:
        # the clock is read only for a record past the latest seen complete (not once per record)
        if not 1 <= record_no <= self._latest_seen and not 1 <= record_no <= self.latest_record():
            raise ProtocolError(f"record {record_no} is not in memory")
        if record_no in self.unreadable:
            raise ProtocolError(f"record {record_no} is not in memory")
        blank, positive = _profiles(self.kit)
        return GoldReading(
            record_no,
            1 + record_no % self.channels,
            self.kit,
            f"{self._id_prefix}{record_no:06d}",
            "菠菜",
            datetime.fromtimestamp(self.t0 + record_no / self.rate, UTC),
            positive if record_no % 10 == 0 else blank,  # is_positive
        )


def make(params: dict[str, Any], timeouts: Timeouts) -> FastGoldSource:
    """Plugin factory (`factory = "tests.gateway.fast_source:make"`)."""
    return FastGoldSource(params, timeouts)


class ClockRefusingSource(FastGoldSource):
    """A source that has a clock interface but refuses clock commands (as older firmware would)."""

    def get_clock(self) -> datetime:
        raise ProtocolError(f"{self.serial}: GET_CLOCK refused (NAK)")

    def sync_clock(self, now: datetime) -> None:
        raise ProtocolError(f"{self.serial}: SET_CLOCK refused (NAK)")


def make_clock_refusing(params: dict[str, Any], timeouts: Timeouts) -> ClockRefusingSource:
    """Plugin factory (`factory = "tests.gateway.fast_source:make_clock_refusing"`)."""
    return ClockRefusingSource(params, timeouts)
