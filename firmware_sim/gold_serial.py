"""Simulated colloidal-gold strip reader speaking the gold-serial protocol on a real pseudo-terminal.

Does: `GoldFirmware` — the instrument's protocol state machine (bytes in → frames out) over its
`firmware_sim.record_store.RecordStore` (record memory, device clock, identity — shared with the ASTM
reader), with the one-deep reply cache that makes retransmissions idempotent, and fault injection
(`FaultConfig`: garbled bytes, bad CRCs, truncated frames, line noise, silence, slow replies, NAK storms),
changeable at runtime. `GoldSimulator` — the firmware on a real pty (`firmware_sim.record_store.
RecordSimulator` over `firmware_sim.ptylink`: a stable symlink like /dev/serial/by-id, unplug/replug).
Profiles come from `firmware_sim.signal_model`; the exact profile the device sends and the model's truth
are kept in `GoldSimulator.truth[record_no]`.

Does not: interpret profiles, import `gateway`/`cloud`, or use the driver's session layer (it shares
only the pure codec and framing, whose byte layouts are pinned by test vectors).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from drivers.gold_codec import (
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
from firmware_sim.record_store import FULL_SCALE, RecordSimulator, RecordStore
from firmware_sim.signal_model import DEMO_KITS
from kuaijian_schema.specs import StripSpec


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
    """The reader's protocol logic over its `RecordStore`; thread-safe (the store is measured into beside
    the serving thread)."""

    def __init__(
        self,
        store: RecordStore,
        *,
        faults: FaultConfig,
        address: int = 0x01,
        chunk_points: int = CHUNK_POINTS,
    ) -> None:
        if not 1 <= chunk_points <= 0xFFFF:
            raise ValueError("chunk_points must be 1..65535")
        self.store = store
        self.address = address
        self.faults = faults
        self.chunk_points = chunk_points  # points per GET_PROFILE reply; changeable at runtime
        self.stats = FirmwareStats()
        self.busy = False  # a strip is incubating / being scanned (STATUS flag bit 0); set by the owner
        self._fault_rng = random.Random(store.seed ^ 0x5EED)
        self._lock = threading.RLock()
        self._inbuf = bytearray()
        self._cache: _Cached | None = None

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
                st = self.store
                reply = IdentifyReply(
                    PROTOCOL_VERSION, st.channels, MAX_PAYLOAD, st.serial, st.model, st.firmware
                )
            case GetClock():
                reply = ClockReply(int(self.store.device_now().timestamp()))
            case SetClock(unix_s=t):
                self.store.set_clock(datetime.fromtimestamp(t, tz=UTC))
                reply = Ack()
            case GetStatus():
                flags = (STATUS_BUSY if self.busy else 0) | (
                    0 if self.store.clock_set else STATUS_CLOCK_UNSET
                )
                reply = StatusReply(self.store.latest, self.store.oldest, flags)
            case GetRecord(record_no=n):
                reply = self._header(n)
            case GetProfile(record_no=n, chunk=k):
                reply = self._chunk(n, k)
        return encode_reply(reply, cmd)

    def _header(self, n: int) -> RecordHeader | Refused:
        rec = self.store.stored(n)
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
        rec = self.store.stored(n)
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


class GoldSimulator(RecordSimulator):
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
        store = RecordStore(
            serial=serial,
            model=model,
            channels=channels,
            firmware=firmware,
            kits=DEMO_KITS if kits is None else kits,
            seed=seed,
            capacity=memory,
            clock_offset_s=clock_offset_s,
        )
        self.firmware = GoldFirmware(store, faults=faults or NO_FAULTS, chunk_points=chunk_points)
        super().__init__(self.firmware, store, link_path=link_path)

    @property
    def faults(self) -> FaultConfig:
        return self.firmware.faults

    @faults.setter
    def faults(self, value: FaultConfig | None) -> None:
        self.firmware.faults = value or NO_FAULTS

    @property
    def stats(self) -> FirmwareStats:
        return self.firmware.stats
