"""Simulated colloidal-gold strip reader speaking the gold-serial protocol on a real pseudo-terminal.

Does: `GoldFirmware` — the instrument's protocol state machine (bytes in → frames out) with record
memory, device clock, the one-deep reply cache that makes retransmissions idempotent, and fault
injection (`FaultConfig`: garbled bytes, bad CRCs, truncated frames, line noise, silence, slow replies,
NAK storms), changeable at runtime. `GoldSimulator` — the firmware on a real pty
(`firmware_sim.ptylink`: a stable symlink like /dev/serial/by-id, unplug/replug). Profiles come from `firmware_sim.signal_model`; the
exact profile the device sends and the model's truth are kept in `GoldSimulator.truth[record_no]`.

Does not: interpret profiles, import `gateway`/`cloud`, or use the driver's session layer (it shares
only the pure codec and framing, whose byte layouts are pinned by test vectors).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Self

import numpy as np
import numpy.typing as npt

from drivers.errors import ProtocolError
from drivers.framing import (
    MAX_PAYLOAD,
    CrcMismatch,
    Frame,
    MalformedFrame,
    decode_frame,
    encode_frame,
    frame_body,
    stuff,
)
from drivers.gold_serial import (
    BROADCAST,
    CHUNK_POINTS,
    PROTOCOL_VERSION,
    STATUS_BUSY,
    STATUS_CLOCK_UNSET,
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
    NakReason,
    ProfileChunk,
    RecordHeader,
    Refused,
    Reply,
    SetClock,
    StatusReply,
    decode_request,
    encode_reply,
    profile_crc32,
    split_profile,
)
from firmware_sim.ptylink import PtyLink
from firmware_sim.signal_model import DEMO_KITS, GoldSample, one_gold_profile
from kuaijian_schema.specs import StripSpec

FULL_SCALE = 65535
DEMO_PRODUCTS = ("菠菜", "青菜", "韭菜", "芹菜", "豇豆", "黄瓜", "番茄", "苹果")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults the simulated reader injects; probabilities are per outgoing frame unless noted.

    garble:   one byte of the frame replaced by a different random byte
    bad_crc:  the CRC is wrong (frame otherwise intact)
    truncate: the frame is cut short (no closing flag)
    noise:    1–16 random bytes of line noise are sent before the frame
    silence:  per request: no reply at all (1.0 = the device is dead)
    nak:      per request: the device NAKs a valid request (BUSY) instead of executing it (NAK storm)
    rx_garble: per chunk of bytes the device receives: one byte corrupted on the way in (host → device
              line noise; the device NAKs the frame)
    delay_s:  every reply is sent this late (slow device)
    """

    garble: float = 0.0
    bad_crc: float = 0.0
    truncate: float = 0.0
    noise: float = 0.0
    silence: float = 0.0
    nak: float = 0.0
    rx_garble: float = 0.0
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("garble", "bad_crc", "truncate", "noise", "silence", "nak", "rx_garble"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault probability {name}={p} is not in [0, 1]")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")


NO_FAULTS = FaultConfig()


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


@dataclass
class FirmwareStats:
    """What the simulated reader did (tests use it to prove a fault was really injected)."""

    frames_in: int = 0
    rx_garbled: int = 0
    bad_frames_in: int = 0
    executed: int = 0
    from_cache: int = 0
    sent: int = 0
    garbled: int = 0
    bad_crc: int = 0
    truncated: int = 0
    noise: int = 0
    silenced: int = 0
    naks_sent: int = 0
    by_command: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Cached:
    seq: int
    cmd: int
    payload: bytes
    reply: Frame


class GoldFirmware:
    """The reader's protocol logic; thread-safe (`measure` runs beside the serving thread)."""

    def __init__(
        self,
        *,
        serial: str,
        model: str,
        channels: int,
        firmware: str,
        kits: Mapping[str, StripSpec],
        seed: int,
        faults: FaultConfig,
        address: int = 0x01,
        capacity: int = 1000,
        clock_offset_s: float = 0.0,
        chunk_points: int = CHUNK_POINTS,
    ) -> None:
        if not 1 <= channels <= 255:
            raise ValueError("channels must be 1..255")
        if not 1 <= chunk_points <= 0xFFFF:
            raise ValueError("chunk_points must be 1..65535")
        self.serial = serial
        self.model = model
        self.channels = channels
        self.firmware = firmware
        self.kits = dict(kits)
        self.address = address
        self.capacity = capacity
        self.faults = faults
        self.chunk_points = chunk_points  # points per GET_PROFILE reply; changeable at runtime
        self.stats = FirmwareStats()
        self.records: dict[int, SimRecord] = {}
        self._latest = 0
        self._clock_offset = timedelta(seconds=clock_offset_s)
        self._clock_set = False
        self.busy = False  # a strip is incubating / being scanned (STATUS flag bit 0); set by the owner
        self._rng = np.random.default_rng(seed)
        self._fault_rng = random.Random(seed ^ 0x5EED)
        self._lock = threading.RLock()
        self._inbuf = bytearray()
        self._cache: _Cached | None = None

    # ------------------------------------------------------------ instrument side
    def device_now(self) -> datetime:
        return datetime.now(UTC) + self._clock_offset

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

    def reply_delay_s(self) -> float:
        return self.faults.delay_s

    def reset_link(self) -> None:
        """Power-cycle of the serial interface: drop partial input and the reply cache."""
        with self._lock:
            self._inbuf.clear()
            self._cache = None

    # ------------------------------------------------------------ protocol side
    def receive(self, data: bytes) -> list[bytes]:
        """Feed bytes from the host; return the byte strings to send back (faults applied)."""
        out: list[bytes] = []
        with self._lock:
            p = self.faults.rx_garble
            if p and data and self._fault_rng.random() < p:
                self.stats.rx_garbled += 1
                corrupted = bytearray(data)
                corrupted[self._fault_rng.randrange(len(corrupted))] ^= self._fault_rng.randrange(1, 256)
                data = bytes(corrupted)
            self._inbuf.extend(data)
            while self._inbuf:
                try:
                    consumed, frame = decode_frame(self._inbuf)
                except CrcMismatch as exc:
                    del self._inbuf[: exc.consumed]
                    self.stats.bad_frames_in += 1
                    out += self._send(Frame(self.address, exc.seq, Cmd.NAK, bytes((NakReason.CRC,))))
                    continue
                except MalformedFrame as exc:
                    del self._inbuf[: exc.consumed]
                    self.stats.bad_frames_in += 1
                    out += self._send(Frame(self.address, 0, Cmd.NAK, bytes((NakReason.MALFORMED,))))
                    continue
                if consumed == 0:
                    break
                del self._inbuf[:consumed]
                if frame is not None:
                    out += self._on_frame(frame)
        return out

    def _on_frame(self, frame: Frame) -> list[bytes]:
        if frame.addr not in (self.address, BROADCAST):
            return []  # another device on the bus
        self.stats.frames_in += 1
        f = self.faults
        cache = self._cache
        if frame.cmd == Cmd.NAK:  # the host got our reply corrupted: retransmit it
            if cache is not None and cache.seq == frame.seq:
                self.stats.from_cache += 1
                return self._send(cache.reply)
            return []
        if f.silence and self._fault_rng.random() < f.silence:
            self.stats.silenced += 1
            return []
        if f.nak and self._fault_rng.random() < f.nak:
            return self._send(Frame(self.address, frame.seq, Cmd.NAK, bytes((NakReason.BUSY,))))
        if (
            cache is not None
            and cache.seq == frame.seq
            and cache.cmd == frame.cmd
            and cache.payload == frame.payload
            and frame.cmd != Cmd.IDENTIFY
        ):
            self.stats.from_cache += 1
            return self._send(cache.reply)
        reply_cmd, reply_payload = self._execute(frame.cmd, frame.payload)
        reply = Frame(self.address, frame.seq, reply_cmd, reply_payload)
        self._cache = _Cached(frame.seq, frame.cmd, frame.payload, reply)
        return self._send(reply)

    def _execute(self, cmd: int, payload: bytes) -> tuple[int, bytes]:
        self.stats.executed += 1
        try:
            name = Cmd(cmd).name
        except ValueError:
            name = f"{cmd:#04x}"
        self.stats.by_command[name] = self.stats.by_command.get(name, 0) + 1
        try:
            request = decode_request(cmd, payload)
        except ProtocolError:
            known = cmd in {c.value for c in Cmd}
            code = ErrorCode.BAD_ARGUMENT if known else ErrorCode.UNKNOWN_COMMAND
            return encode_reply(Refused(code), cmd)
        reply: Reply
        match request:
            case Identify():
                self._cache = None
                reply = IdentifyReply(
                    PROTOCOL_VERSION, self.channels, MAX_PAYLOAD, self.serial, self.model, self.firmware
                )
            case GetClock():
                reply = ClockReply(int(self.device_now().timestamp()))
            case SetClock(unix_s=t):
                self._clock_offset = datetime.fromtimestamp(t, tz=UTC) - datetime.now(UTC)
                self._clock_set = True
                reply = Ack()
            case GetStatus():
                flags = (STATUS_BUSY if self.busy else 0) | (0 if self._clock_set else STATUS_CLOCK_UNSET)
                reply = StatusReply(self._latest, min(self.records, default=0), flags)
            case GetRecord(record_no=n):
                reply = self._header(n)
            case GetProfile(record_no=n, chunk=k):
                reply = self._chunk(n, k)
        return encode_reply(reply, cmd)

    def _header(self, n: int) -> RecordHeader | Refused:
        rec = self.records.get(n)
        if rec is None:
            return Refused(ErrorCode.NO_SUCH_RECORD)
        return RecordHeader(
            record_no=n,
            channel=rec.channel,
            measured_unix_s=int(rec.measured_at.timestamp()),
            points=len(rec.raw),
            chunk_points=self.chunk_points,
            full_scale=FULL_SCALE,
            profile_crc32=profile_crc32(rec.raw),
            kit=rec.kit,
            sample_id=rec.sample_id,
            product=rec.product,
            operator=rec.operator,
        )

    def _chunk(self, n: int, k: int) -> ProfileChunk | Refused:
        rec = self.records.get(n)
        if rec is None:
            return Refused(ErrorCode.NO_SUCH_RECORD)
        chunks = split_profile(n, tuple(int(v) for v in rec.raw), self.chunk_points)
        if k >= len(chunks):
            return Refused(ErrorCode.BAD_ARGUMENT)
        return chunks[k]

    def _send(self, frame: Frame) -> list[bytes]:
        """Wire bytes of `frame` after the configured line faults."""
        f = self.faults
        r = self._fault_rng
        self.stats.sent += 1
        if frame.cmd == Cmd.NAK:
            self.stats.naks_sent += 1
        if f.bad_crc and r.random() < f.bad_crc:
            self.stats.bad_crc += 1
            wire = bytearray(b"\x7e" + stuff(frame_body(frame, crc_xor=r.randrange(1, 0x10000))) + b"\x7e")
        else:
            wire = bytearray(encode_frame(frame))
        if f.garble and r.random() < f.garble:
            self.stats.garbled += 1
            i = r.randrange(len(wire))
            wire[i] ^= r.randrange(1, 256)
        if f.truncate and r.random() < f.truncate:
            self.stats.truncated += 1
            del wire[r.randrange(1, len(wire) - 1) :]
        if f.noise and r.random() < f.noise:
            self.stats.noise += 1
            wire[:0] = bytes(r.randrange(256) for _ in range(r.randrange(1, 17)))
        return [bytes(wire)]


class GoldSimulator:
    """A simulated gold reader on a real pty. `start()` returns the slave path to open with pyserial.

    `link_path` is a symlink to the current slave (a stable name like /dev/serial/by-id/…): it is
    removed on `unplug()` and points at the new pty after `replug()`.
    """

    def __init__(
        self,
        *,
        serial: str = "GR-0001",
        model: str = "KJ-G8",
        channels: int = 8,
        kits: Mapping[str, StripSpec] | None = None,
        seed: int = 0,
        faults: FaultConfig | None = None,
        firmware: str = "2.3.1",
        link_path: str | None = None,
        clock_offset_s: float = 0.0,
        memory: int = 1000,
        chunk_points: int = CHUNK_POINTS,
    ) -> None:
        self.firmware = GoldFirmware(
            serial=serial,
            model=model,
            channels=channels,
            firmware=firmware,
            kits=DEMO_KITS if kits is None else kits,
            seed=seed,
            faults=faults or NO_FAULTS,
            capacity=memory,
            clock_offset_s=clock_offset_s,
            chunk_points=chunk_points,
        )
        self._link = PtyLink(self.firmware, name=f"usb-Kuaijian_{model}_{serial}", link_path=link_path)
        self._auto: threading.Thread | None = None
        self._auto_stop = threading.Event()

    # ------------------------------------------------------------ public surface
    @property
    def serial(self) -> str:
        return self.firmware.serial

    @property
    def faults(self) -> FaultConfig:
        return self.firmware.faults

    @faults.setter
    def faults(self, value: FaultConfig | None) -> None:
        self.firmware.faults = value or NO_FAULTS

    @property
    def truth(self) -> Mapping[int, SimRecord]:
        return self.firmware.records

    @property
    def stats(self) -> FirmwareStats:
        return self.firmware.stats

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
        return self.firmware.measure(kit, channel, sample_id, product, concentration, operator=operator)

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
        names = list(kits or self.firmware.kits)
        rng = random.Random(f"{self.serial}-auto")

        def run() -> None:
            n = 0
            while not self._auto_stop.wait(interval_s):
                n += 1
                kit = rng.choice(names)
                spec = self.firmware.kits[kit]
                cal = spec.lines[0].calibration
                conc = (cal.c * 4.0 if cal else 5.0) if rng.random() < positive_rate else 0.0
                record = self.measure(
                    kit,
                    rng.randrange(1, self.firmware.channels + 1),
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
