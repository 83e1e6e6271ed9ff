"""The simulated colloidal-gold readers' record memory, and the surface of their simulators on a pty.

Does: `RecordStore` — what a simulated gold reader is and holds, whatever protocol it speaks: its identity
(serial, model, firmware, channels, kits), its device clock (an offset from real time that a protocol may
set), and its memory of numbered measurements (`measure` draws a profile from `firmware_sim.signal_model`,
numbers it 1, 2, 3, … and keeps the newest `capacity`; `stored`, `latest`, `oldest`; `records` is the
ground truth tests compare a driver's readings with); thread-safe. `SimRecord`, one measurement.
`RecordSimulator`, the public surface both reader simulators share: start/stop, unplug/replug, the pty
paths, the truth, `measure` and `auto_measure`.

Does not: speak a protocol (firmware_sim.gold_serial, firmware_sim.astm_gold), inject faults, or know the
driver side.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

import numpy as np
import numpy.typing as npt

from firmware_sim.ptylink import Device, PtyLink
from firmware_sim.signal_model import GoldSample, one_gold_profile
from kuaijian_schema.specs import StripSpec

FULL_SCALE = 65535
DEMO_PRODUCTS = ("菠菜", "青菜", "韭菜", "芹菜", "豇豆", "黄瓜", "番茄", "苹果")


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One measurement in the reader's memory, with its ground truth.

    `raw` is what the device transmits (uint16, full scale 65535); `profile` = raw / 65535 is exactly
    what a correct driver must return; `sample` is the signal model's truth (concentration, ratio, verdict).
    """

    record_no: int
    channel: int
    kit: str
    sample_id: str
    product: str
    operator: str
    measured_at: datetime
    raw: npt.NDArray[np.uint16]
    sample: GoldSample

    @property
    def profile(self) -> npt.NDArray[np.float64]:
        """raw / 65535 as float64: bit for bit what a correct driver returns."""
        return self.raw.astype(np.float64) / float(FULL_SCALE)


class RecordStore:
    """A simulated gold reader's identity, clock and record memory; thread-safe (`measure` runs beside the
    thread serving the protocol). `seed` also seeds each protocol's fault generator."""

    def __init__(
        self,
        *,
        serial: str,
        model: str,
        channels: int,
        firmware: str,
        kits: Mapping[str, StripSpec],
        seed: int,
        capacity: int = 1000,
        clock_offset_s: float = 0.0,
    ) -> None:
        if not 1 <= channels <= 255:
            raise ValueError("channels must be 1..255")
        self.serial = serial
        self.model = model
        self.channels = channels
        self.firmware = firmware
        self.kits = dict(kits)
        self.seed = seed
        self.capacity = capacity
        self.records: dict[int, SimRecord] = {}
        self.clock_set = False  # set by a protocol's clock command
        self._latest = 0
        self._clock_offset = timedelta(seconds=clock_offset_s)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()

    def device_now(self) -> datetime:
        return datetime.now(UTC) + self._clock_offset

    def set_clock(self, now: datetime) -> None:
        """Set the device clock to `now` (it runs on from there)."""
        self._clock_offset = now - datetime.now(UTC)
        self.clock_set = True

    def measure(
        self,
        kit: str,
        channel: int,
        sample_id: str,
        product: str,
        concentration: float | Sequence[float] | None = None,
        *,
        operator: str = "",
    ) -> int:
        """Complete one measurement (a signal-model profile) and return its record number."""
        if kit not in self.kits:
            raise KeyError(f"unknown kit {kit!r}; this reader knows {sorted(self.kits)}")
        if not 1 <= channel <= self.channels:
            raise ValueError(f"channel {channel} not in 1..{self.channels}")
        with self._lock:
            sample = one_gold_profile(self.kits[kit], self._rng, concentration=concentration)
            raw = np.clip(np.rint(sample.profile * FULL_SCALE), 0, FULL_SCALE).astype(np.uint16)
            raw.setflags(write=False)
            self._latest += 1
            record = SimRecord(
                record_no=self._latest,
                channel=channel,
                kit=kit,
                sample_id=sample_id,
                product=product,
                operator=operator,
                measured_at=self.device_now().replace(microsecond=0),
                raw=raw,
                sample=sample,
            )
            self.records[record.record_no] = record
            while len(self.records) > self.capacity:
                del self.records[min(self.records)]
            return record.record_no

    def stored(self, record_no: int | None = None) -> SimRecord | None:
        """Record `record_no` (None: the newest) if it is still in memory."""
        with self._lock:
            if record_no is None:
                record_no = max(self.records, default=0)
            return self.records.get(record_no)

    @property
    def latest(self) -> int:
        """The newest record number ever measured (0 = none)."""
        return self._latest

    @property
    def oldest(self) -> int:
        """The oldest record number still in memory (0 = none)."""
        with self._lock:
            return min(self.records, default=0)


class RecordSimulator:
    """A simulated reader with a `RecordStore` on a real pty. `start()` returns the slave path to open
    with pyserial; `link_path` is a symlink to the current slave (a stable name like /dev/serial/by-id/…):
    it is removed on `unplug()` and points at the new pty after `replug()`."""

    def __init__(self, device: Device, store: RecordStore, *, link_path: str | None) -> None:
        self.store = store
        self._link = PtyLink(device, name=f"usb-Kuaijian_{store.model}_{store.serial}", link_path=link_path)
        self._auto: threading.Thread | None = None
        self._auto_stop = threading.Event()

    @property
    def serial(self) -> str:
        return self.store.serial

    @property
    def truth(self) -> Mapping[int, SimRecord]:
        return self.store.records

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions of the serving thread (a test asserts there are none)."""
        return self._link.errors

    @property
    def path(self) -> str:
        """The current pty slave (e.g. /dev/pts/7); changes on every replug."""
        return self._link.path

    @property
    def link_path(self) -> str:
        """Stable symlink to the current slave; configure the gateway with this."""
        return self._link.link_path

    @property
    def plugged(self) -> bool:
        return self._link.plugged

    def start(self) -> str:
        return self._link.start()

    def stop(self) -> None:
        self._auto_stop.set()
        if self._auto is not None:
            self._auto.join(5)
            self._auto = None
        self._link.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """Pull the cable: the pty disappears (open slaves get EIO) and the stable link is removed."""
        self._link.unplug()

    def replug(self) -> str:
        """Plug back in on a new pty; returns the new slave path (`link_path` follows)."""
        return self._link.replug()

    def measure(
        self,
        kit: str,
        channel: int,
        sample_id: str,
        product: str,
        concentration: float | tuple[float, ...] | None = None,
        *,
        operator: str = "",
    ) -> int:
        """Complete one measurement (signal model profile) and return its record number."""
        return self.store.measure(kit, channel, sample_id, product, concentration, operator=operator)

    def auto_measure(
        self,
        interval_s: float,
        *,
        kits: Sequence[str] | None = None,
        products: Sequence[str] = DEMO_PRODUCTS,
        positive_rate: float = 0.1,
        on_record: Callable[[int], None] | None = None,
    ) -> None:
        """Measure a random strip every `interval_s` seconds in a background thread until `stop()`.

        About `positive_rate` of the strips carry a concentration well above the kit's cutoff (via its
        calibration's inflection point); the others are blank.
        """
        if self._auto is not None:
            raise RuntimeError("auto_measure is already running")
        names = list(kits or self.store.kits)
        rng = random.Random(f"{self.serial}-auto")

        def run() -> None:
            n = 0
            while not self._auto_stop.wait(interval_s):
                n += 1
                kit = rng.choice(names)
                spec = self.store.kits[kit]
                cal = spec.lines[0].calibration
                conc = (cal.c * 4.0 if cal else 5.0) if rng.random() < positive_rate else 0.0
                record = self.measure(
                    kit,
                    rng.randrange(1, self.store.channels + 1),
                    f"{self.serial}-S{n:05d}",
                    rng.choice(list(products)),
                    conc,
                    operator="auto",
                )
                if on_record is not None:
                    on_record(record)

        self._auto_stop.clear()
        self._auto = threading.Thread(target=run, name=f"gold-sim-auto-{self.serial}", daemon=True)
        self._auto.start()
