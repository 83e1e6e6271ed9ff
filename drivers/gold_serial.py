"""Colloidal-gold strip reader over serial ("gold-serial"): message codec, session layer and driver.

Does, in three layers (protocol reference: docs/protocols/serial-gold.md):
- codec — pure: typed request/reply messages ⇄ (command code, payload bytes); no I/O. Framing and CRC
  are `drivers.framing`.
- `GoldSession` — the one place for retries, timeouts, ACK/NAK retransmission, request/response
  matching by sequence number and the lock; over any `drivers.transport.Transport`.
- `GoldSerialAnalyzer` — the `drivers.readings.Analyzer` the gateway uses; `probe_serial` for scans.

Does not: interpret profiles (`gateway.interpret.gold`), retry on a policy of its own (reopening an
unplugged port follows `drivers.backoff`, shared by every session), or store anything.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from drivers.backoff import Again, RetryStats, retrying
from drivers.errors import (
    ChecksumError,
    DeviceNotFound,
    DriverError,
    DriverTimeout,
    FrameError,
    ProtocolError,
    TransportError,
)
from drivers.framing import FLAG, MAX_PAYLOAD, CrcMismatch, Frame, MalformedFrame, decode_frame, encode_frame
from drivers.readings import Analyzer, DeviceInfo, GoldReading
from drivers.registry import DriverFamily, InstrumentSettings, Probed, ProbeOptions
from drivers.timeouts import Timeouts
from drivers.transport import Transport, transport_for

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
BROADCAST = 0xFF  # "whichever device is on this line"; replies carry the device's own address
REPLY_BIT = 0x80
CHUNK_POINTS = 256  # profile points per GET_PROFILE reply (512 payload bytes)
MAX_PROFILE_POINTS = 4096
MAX_CHUNKS = 256  # GET_PROFILE addresses a chunk with one byte: chunks 0..255
DEFAULT_TIMEOUTS = Timeouts()
PROBE_TIMEOUTS = Timeouts(response_s=0.5, retries=1, inter_byte_s=0.2)


class Cmd(enum.IntEnum):
    """Command codes. A reply to request X has code X | 0x80; ACK/NAK/CAN are ASCII control codes."""

    ACK = 0x06
    NAK = 0x15
    CAN = 0x18
    IDENTIFY = 0x20
    GET_CLOCK = 0x21
    SET_CLOCK = 0x22
    GET_STATUS = 0x23
    GET_RECORD = 0x24
    GET_PROFILE = 0x25


class NakReason(enum.IntEnum):
    """Why a frame was rejected at the link layer (the sender retransmits)."""

    CRC = 0x01
    MALFORMED = 0x02
    BUSY = 0x03


class ErrorCode(enum.IntEnum):
    """Why a valid request was refused (CAN reply; retransmitting does not help)."""

    UNKNOWN_COMMAND = 0x01
    BAD_ARGUMENT = 0x02
    NO_SUCH_RECORD = 0x03


STATUS_BUSY = 0x01
STATUS_CLOCK_UNSET = 0x02


# ---------------------------------------------------------------- messages (requests)
@dataclass(frozen=True, slots=True)
class Identify:
    pass


@dataclass(frozen=True, slots=True)
class GetClock:
    pass


@dataclass(frozen=True, slots=True)
class SetClock:
    unix_s: int


@dataclass(frozen=True, slots=True)
class GetStatus:
    pass


@dataclass(frozen=True, slots=True)
class GetRecord:
    record_no: int


@dataclass(frozen=True, slots=True)
class GetProfile:
    record_no: int
    chunk: int


Request = Identify | GetClock | SetClock | GetStatus | GetRecord | GetProfile


# ---------------------------------------------------------------- messages (replies)
@dataclass(frozen=True, slots=True)
class IdentifyReply:
    protocol: int
    channels: int
    max_payload: int
    serial: str
    model: str
    firmware: str


@dataclass(frozen=True, slots=True)
class ClockReply:
    unix_s: int


@dataclass(frozen=True, slots=True)
class StatusReply:
    latest_record: int  # 0 = no record yet
    oldest_record: int  # oldest record still in memory (0 = none)
    flags: int  # STATUS_BUSY | STATUS_CLOCK_UNSET

    @property
    def busy(self) -> bool:
        return bool(self.flags & STATUS_BUSY)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    record_no: int
    channel: int  # 1-based, as printed on the instrument
    measured_unix_s: int  # device clock, UTC seconds
    points: int
    chunk_points: int
    full_scale: int  # reflectance = value / full_scale
    profile_crc32: int  # zlib.crc32 of the big-endian uint16 profile
    kit: str
    sample_id: str
    product: str
    operator: str

    @property
    def chunks(self) -> int:
        return -(-self.points // self.chunk_points)


@dataclass(frozen=True, slots=True)
class ProfileChunk:
    record_no: int
    chunk: int
    offset: int
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class Nak:
    reason: int


@dataclass(frozen=True, slots=True)
class Refused:
    code: int


Reply = IdentifyReply | ClockReply | StatusReply | RecordHeader | ProfileChunk | Ack | Nak | Refused


# ---------------------------------------------------------------- payload primitives
class _Reader:
    """Cursor over a payload; raises ProtocolError on short/invalid payloads."""

    def __init__(self, payload: bytes, what: str) -> None:
        self._p = payload
        self._i = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        if self._i + n > len(self._p):
            raise ProtocolError(f"{self._what}: payload of {len(self._p)} bytes is too short")
        out = self._p[self._i : self._i + n]
        self._i += n
        return out

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def str8(self) -> str:
        raw = self._take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{self._what}: text field is not UTF-8") from exc

    def rest(self) -> bytes:
        out = self._p[self._i :]
        self._i = len(self._p)
        return out

    def end(self) -> None:
        if self._i != len(self._p):
            raise ProtocolError(f"{self._what}: {len(self._p) - self._i} unexpected trailing bytes")


def _u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def _u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def _str8(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"text field of {len(raw)} UTF-8 bytes exceeds 255: {s[:20]!r}…")
    return _u8(len(raw)) + raw


# ---------------------------------------------------------------- codec
def encode_request(msg: Request) -> tuple[int, bytes]:
    """(command code, payload) of a request."""
    match msg:
        case Identify():
            return Cmd.IDENTIFY, b""
        case GetClock():
            return Cmd.GET_CLOCK, b""
        case SetClock(unix_s=t):
            return Cmd.SET_CLOCK, _u32(t)
        case GetStatus():
            return Cmd.GET_STATUS, b""
        case GetRecord(record_no=n):
            return Cmd.GET_RECORD, _u32(n)
        case GetProfile(record_no=n, chunk=k):
            return Cmd.GET_PROFILE, _u32(n) + _u8(k)
    raise TypeError(f"not a request: {msg!r}")


def decode_request(cmd: int, payload: bytes) -> Request:
    """Inverse of `encode_request` (device side). Unknown commands/bad payloads raise ProtocolError."""
    r = _Reader(payload, f"request {cmd:#04x}")
    msg: Request
    if cmd == Cmd.IDENTIFY:
        msg = Identify()
    elif cmd == Cmd.GET_CLOCK:
        msg = GetClock()
    elif cmd == Cmd.SET_CLOCK:
        msg = SetClock(r.u32())
    elif cmd == Cmd.GET_STATUS:
        msg = GetStatus()
    elif cmd == Cmd.GET_RECORD:
        msg = GetRecord(r.u32())
    elif cmd == Cmd.GET_PROFILE:
        msg = GetProfile(r.u32(), r.u8())
    else:
        raise ProtocolError(f"unknown command {cmd:#04x}")
    r.end()
    return msg


def encode_reply(msg: Reply, request_cmd: int = 0) -> tuple[int, bytes]:
    """(command code, payload) of a reply (device side). ACK/NAK/CAN ignore `request_cmd`."""
    match msg:
        case IdentifyReply():
            payload = (
                _u8(msg.protocol)
                + _u8(msg.channels)
                + _u16(msg.max_payload)
                + _str8(msg.serial)
                + _str8(msg.model)
                + _str8(msg.firmware)
            )
            return Cmd.IDENTIFY | REPLY_BIT, payload
        case ClockReply(unix_s=t):
            return Cmd.GET_CLOCK | REPLY_BIT, _u32(t)
        case StatusReply():
            return Cmd.GET_STATUS | REPLY_BIT, _u32(msg.latest_record) + _u32(msg.oldest_record) + _u8(
                msg.flags
            )
        case RecordHeader():
            payload = (
                _u32(msg.record_no)
                + _u8(msg.channel)
                + _u32(msg.measured_unix_s)
                + _u16(msg.points)
                + _u16(msg.chunk_points)
                + _u16(msg.full_scale)
                + _u32(msg.profile_crc32)
                + _str8(msg.kit)
                + _str8(msg.sample_id)
                + _str8(msg.product)
                + _str8(msg.operator)
            )
            return Cmd.GET_RECORD | REPLY_BIT, payload
        case ProfileChunk():
            values = np.asarray(msg.values, dtype=">u2").tobytes()
            head = _u32(msg.record_no) + _u8(msg.chunk) + _u16(msg.offset) + _u16(len(msg.values))
            return Cmd.GET_PROFILE | REPLY_BIT, head + values
        case Ack():
            return Cmd.ACK, b""
        case Nak(reason=reason):
            return Cmd.NAK, _u8(reason)
        case Refused(code=code):
            return Cmd.CAN, _u8(request_cmd) + _u8(code)
    raise TypeError(f"not a reply: {msg!r}")


def decode_reply(cmd: int, payload: bytes) -> Reply:
    """Inverse of `encode_reply` (host side). Bad payloads raise ProtocolError."""
    r = _Reader(payload, f"reply {cmd:#04x}")
    msg: Reply
    if cmd == Cmd.IDENTIFY | REPLY_BIT:
        msg = IdentifyReply(r.u8(), r.u8(), r.u16(), r.str8(), r.str8(), r.str8())
    elif cmd == Cmd.GET_CLOCK | REPLY_BIT:
        msg = ClockReply(r.u32())
    elif cmd == Cmd.GET_STATUS | REPLY_BIT:
        msg = StatusReply(r.u32(), r.u32(), r.u8())
    elif cmd == Cmd.GET_RECORD | REPLY_BIT:
        msg = RecordHeader(
            record_no=r.u32(),
            channel=r.u8(),
            measured_unix_s=r.u32(),
            points=r.u16(),
            chunk_points=r.u16(),
            full_scale=r.u16(),
            profile_crc32=r.u32(),
            kit=r.str8(),
            sample_id=r.str8(),
            product=r.str8(),
            operator=r.str8(),
        )
        if msg.points == 0 or msg.chunk_points == 0 or msg.full_scale == 0:
            raise ProtocolError(f"record header with zero points/chunk size/full scale: {msg}")
        if msg.chunks > MAX_CHUNKS:
            # GET_PROFILE names its chunk in one byte: such a profile cannot be fetched at all
            raise ProtocolError(
                f"record {msg.record_no}: {msg.points} points in chunks of {msg.chunk_points} need "
                f"{msg.chunks} chunks; the protocol addresses at most {MAX_CHUNKS}"
            )
    elif cmd == Cmd.GET_PROFILE | REPLY_BIT:
        record_no, chunk, offset, count = r.u32(), r.u8(), r.u16(), r.u16()
        raw = r.rest()
        if len(raw) != 2 * count:
            raise ProtocolError(f"profile chunk says {count} points but carries {len(raw)} bytes")
        values = tuple(int(v) for v in np.frombuffer(raw, dtype=">u2"))
        msg = ProfileChunk(record_no, chunk, offset, values)
    elif cmd == Cmd.ACK:
        msg = Ack()
    elif cmd == Cmd.NAK:
        msg = Nak(r.u8())
    elif cmd == Cmd.CAN:
        r.u8()  # the refused command, informative only
        msg = Refused(r.u8())
    else:
        raise ProtocolError(f"unknown reply code {cmd:#04x}")
    r.end()
    return msg


def profile_crc32(values: npt.ArrayLike) -> int:
    """End-to-end check of a whole profile: CRC-32 (zlib) of the values as big-endian uint16."""
    return zlib.crc32(np.asarray(values, dtype=">u2").tobytes())


def split_profile(
    record_no: int, values: tuple[int, ...], chunk_points: int = CHUNK_POINTS
) -> list[ProfileChunk]:
    """The GET_PROFILE replies that carry `values` (device side)."""
    return [
        ProfileChunk(record_no, k, off, values[off : off + chunk_points])
        for k, off in enumerate(range(0, len(values), chunk_points))
    ]


# ---------------------------------------------------------------- session layer
@dataclass(slots=True)
class _Exchange:
    """One request across its attempts: the same sequence number, the frame to (re)send next."""

    cmd: int
    payload: bytes
    seq: int | None = None
    request: bytes = b""
    nak: bytes = b""
    outgoing: bytes = b""
    attempts: int = 0


@dataclass
class SessionStats:
    """Counters of one session (for logs, status and tests)."""

    requests: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    malformed: int = 0
    truncated: int = 0
    naks_received: int = 0
    stale_replies: int = 0
    noise_bytes: int = 0
    foreign_frames: int = 0
    reconnects: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class GoldSession:
    """Request/response over a `Transport` with retries, ACK/NAK retransmission and seq matching.

    One request is outstanding at a time (guarded by a lock). Per attempt the session waits
    `timeouts.response_s` for a reply with the request's sequence number:
    - a corrupt reply (CRC/format error, or a frame cut off for `inter_byte_s`) → send NAK(seq), the
      device retransmits its cached reply;
    - a NAK from the device (whatever its seq), or no reply → retransmit the request with the same seq
      (the device answers a repeated seq from its cache and does not execute the command twice);
    - a reply with another seq is stale (an earlier retransmission) and is dropped, and so are frames
      addressed FF (host frames: an echo or a second host) or, with a specific `address`, from others.
    A `TransportError` (unplugged) closes the port; the next attempt reopens the same path after a
    backoff wait taken with the lock released (`drivers.backoff`, the policy every session shares).
    After `timeouts.retries` + 1 attempts in all the last failure is raised. `close()` stops all that.
    """

    def __init__(
        self, transport: Transport, timeouts: Timeouts = DEFAULT_TIMEOUTS, *, address: int = BROADCAST
    ) -> None:
        self.transport = transport
        self.timeouts = timeouts
        self.address = address
        self.stats = SessionStats()
        self.retry = RetryStats()
        self.lock = threading.RLock()  # one outstanding request; reentrant for open()+identify()
        self._closed = threading.Event()  # set by close(): no reopening, a backoff wait ends
        self._seq = os.urandom(1)[0]
        self._buf = bytearray()
        self._corrupt: FrameError | None = None  # a corrupt frame not yet judged (see _decode_buffered)

    def open(self) -> None:
        self._closed.clear()
        with self.lock:
            if not self.transport.is_open:
                self._buf.clear()
                self.transport.open()

    def close(self) -> None:
        """Close the port; a request waiting to reopen it gives up with `TransportError` at once."""
        self._closed.set()
        with self.lock:
            self.transport.close()
            self._buf.clear()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def request(self, msg: Request) -> Reply:
        """Send `msg`, return the decoded reply (never NAK). CAN replies raise ProtocolError."""
        cmd, payload = encode_request(msg)
        exchange = _Exchange(cmd, payload)
        try:
            reply = retrying(
                self.lock,
                lambda: self._attempt(exchange),
                self.timeouts,
                cancel=self._closed,
                stats=self.retry,
            )
        except DriverError as exc:
            if exchange.attempts <= 1:
                raise
            raise _same_kind(
                exc, f"{exc} (after {exchange.attempts} attempts on {self.transport.name})"
            ) from exc
        if isinstance(reply, Refused):
            try:
                code = ErrorCode(reply.code).name
            except ValueError:
                code = f"{reply.code:#04x}"
            raise ProtocolError(f"device refused {type(msg).__name__}: {code}")
        return reply

    def _attempt(self, ex: _Exchange) -> Reply:
        """One send of the exchange's request (or of a NAK of a corrupt reply), under the lock."""
        if not self.transport.is_open:
            if self._closed.is_set():
                raise TransportError(f"{self.transport.name} is not open")
            try:  # the link failed during an earlier attempt: reopen the same path
                self._buf.clear()
                self.transport.open()
            except TransportError as exc:
                raise Again(exc, wait=True) from exc
            self.stats.reconnects += 1
        if ex.seq is None:
            self.stats.requests += 1
            ex.seq = self._next_seq()
            ex.request = encode_frame(Frame(self.address, ex.seq, ex.cmd, ex.payload))
            ex.nak = encode_frame(Frame(self.address, ex.seq, Cmd.NAK, bytes((NakReason.CRC,))))
            ex.outgoing = ex.request
            self._buf.clear()
        else:
            self.stats.retransmissions += 1
        ex.attempts += 1
        seq = ex.seq
        try:
            self.transport.write(ex.outgoing)
            frame = self._await(seq)
        except DriverTimeout as exc:  # a silent device is not a broken link; keep the port open
            ex.outgoing = ex.request
            self._debug(ex, exc)
            raise Again(exc, wait=False) from exc
        except TransportError as exc:  # unplugged: close now, reopen after a backoff wait
            self.transport.close()
            self._buf.clear()
            self._debug(ex, exc)
            raise Again(exc, wait=True) from exc
        except FrameError as exc:
            ex.outgoing = ex.nak
            self._debug(ex, exc)
            raise Again(exc, wait=False) from exc
        reply = decode_reply(frame.cmd, frame.payload)
        if isinstance(reply, Nak):
            self.stats.naks_received += 1
            ex.outgoing = ex.request
            failure = ProtocolError(f"device NAKed the request (reason {reply.reason:#04x})")
            self._debug(ex, failure)
            raise Again(failure, wait=False)
        if isinstance(reply, Refused | Ack) or frame.cmd == ex.cmd | REPLY_BIT:
            return reply
        raise ProtocolError(f"reply {frame.cmd:#04x} does not answer command {ex.cmd:#04x}")

    def _debug(self, ex: _Exchange, exc: DriverError) -> None:
        log.debug(
            "%s: cmd %02X seq %02X attempt %d: %s", self.transport.name, ex.cmd, ex.seq, ex.attempts, exc
        )

    def _await(self, seq: int) -> Frame:
        """The next valid frame with sequence `seq`; FrameError on a corrupt one, DriverTimeout if none."""
        t = self.timeouts
        deadline = time.monotonic() + t.response_s
        self._corrupt = None
        while True:
            frame = self._decode_buffered(seq)
            if frame is not None:
                return frame
            now = time.monotonic()
            if now >= deadline:
                partial = len(self._buf) > 1
                self._buf.clear()
                if self._corrupt is not None:
                    corrupt, self._corrupt = self._corrupt, None
                    raise corrupt
                self.stats.timeouts += 1
                if partial:
                    self.stats.truncated += 1
                    raise MalformedFrame("reply truncated (no closing flag before the deadline)", consumed=0)
                raise DriverTimeout(f"no reply within {t.response_s:.2f}s")
            in_frame = len(self._buf) > 1  # after decoding, the buffer holds at most "7E <partial frame>"
            wait = min(deadline - now, t.inter_byte_s) if in_frame else deadline - now
            data = self.transport.read(4096, wait)
            if data:
                self._buf.extend(data)
            elif in_frame:
                self.stats.truncated += 1
                self._buf.clear()
                raise MalformedFrame(f"reply truncated (no byte for {t.inter_byte_s:.2f}s)", consumed=0)

    def _decode_buffered(self, seq: int) -> Frame | None:
        """Our reply if it is in the buffer; raise a corrupt frame only once nothing valid follows it.

        A corrupt frame followed by a valid one (a late duplicate reply behind line noise, say) shows the
        line is in step again, so it is dropped without a NAK; the session waits for its own reply instead
        of making the device retransmit. A corrupt frame with nothing behind it is raised at once (NAK).
        """
        while self._buf:
            try:
                consumed, frame = decode_frame(self._buf)
            except MalformedFrame as exc:
                self.stats.malformed += 1
                del self._buf[: exc.consumed]
                self._corrupt = exc
                continue
            except CrcMismatch as exc:
                self.stats.crc_errors += 1
                del self._buf[: exc.consumed]
                self._corrupt = exc
                continue
            if consumed == 0:
                break
            if frame is None and self._buf[0] != FLAG:
                self.stats.noise_bytes += consumed  # not just a spare flag
            del self._buf[:consumed]
            if frame is None:
                continue
            self._corrupt = None  # a valid frame behind it: the line is in step again
            if frame.addr == BROADCAST or (self.address != BROADCAST and frame.addr != self.address):
                self.stats.foreign_frames += 1  # our own request echoed, another host, another device
                continue
            if frame.seq != seq and frame.cmd != Cmd.NAK:  # a NAK of a corrupt request may carry any seq
                self.stats.stale_replies += 1
                continue
            return frame
        if self._corrupt is not None and len(self._buf) <= 1:  # else a frame right behind it is arriving
            corrupt, self._corrupt = self._corrupt, None
            raise corrupt
        return None


def _same_kind(error: DriverError, message: str) -> DriverError:
    """A fresh exception of the public class of `error` with `message` (drops framing internals)."""
    for kind in (DriverTimeout, TransportError, ChecksumError, FrameError, ProtocolError):
        if isinstance(error, kind):
            return kind(message)
    return DriverError(message)


# ---------------------------------------------------------------- driver
def _as_utc(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC)


class GoldSerialAnalyzer:
    """A colloidal-gold strip reader on a serial port (or ``tcp://host:port`` serial server).

    `open()` opens the port and identifies the device (which also resets the device's link state); it
    is idempotent. After an unplug the session reopens the same path within the call (with backoff) —
    use a /dev/serial/by-id/… path (or the simulator's `link_path`) so a replugged device is found
    again. After every reopen the device is identified again before any reply is returned; if a device
    with a different serial number answers, `ProtocolError` is raised (record numbers are per device).
    """

    driver = "gold-serial"

    def __init__(self, port: str, *, baudrate: int = 115200, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeouts = timeouts
        self.session = GoldSession(transport_for(port, baudrate=baudrate), timeouts)
        self._info: DeviceInfo | None = None
        self._identified_at = 0  # session.stats.reconnects when the device was last identified

    @classmethod
    def from_transport(
        cls, transport: Transport, *, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> GoldSerialAnalyzer:
        """The same driver over any `Transport` (e.g. a `LoopbackTransport` to an in-process device)."""
        analyzer = cls(transport.name, timeouts=timeouts)
        analyzer.session = GoldSession(transport, timeouts)
        return analyzer

    def open(self) -> None:
        with self.session.lock:
            if self.session.transport.is_open and self._info is not None:
                return
            self.session.open()
            try:
                self.identify()
            except DriverError:
                self.session.close()
                raise

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> GoldSerialAnalyzer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def info(self) -> DeviceInfo | None:
        """The last identification (None before the first successful `open`/`identify`)."""
        return self._info

    def _request(self, msg: Request) -> Reply:
        """`session.request`, but a reply that crossed a reopened link is only returned once the device
        behind it has identified as the same one (a refusal, too, may come from another device)."""
        try:
            return self.session.request(msg)
        finally:
            if self.session.stats.reconnects != self._identified_at and self.session.transport.is_open:
                self.identify()

    def identify(self) -> DeviceInfo:
        reply = self.session.request(Identify())
        if not isinstance(reply, IdentifyReply):
            raise ProtocolError(f"IDENTIFY answered with {reply!r}")
        if reply.protocol != PROTOCOL_VERSION:
            raise ProtocolError(f"device speaks protocol version {reply.protocol}, driver {PROTOCOL_VERSION}")
        info = DeviceInfo(
            serial=reply.serial,
            model=reply.model,
            firmware=reply.firmware,
            driver=self.driver,
            method="gold",
            channels=reply.channels,
        )
        if self._info is not None and self._info.serial != info.serial:
            raise ProtocolError(f"{self.port}: expected device {self._info.serial}, found {info.serial}")
        self._info = info
        self._identified_at = self.session.stats.reconnects
        return info

    def status(self) -> StatusReply:
        reply = self._request(GetStatus())
        if not isinstance(reply, StatusReply):
            raise ProtocolError(f"GET_STATUS answered with {reply!r}")
        return reply

    def latest_record(self) -> int:
        return self.status().latest_record

    def get_clock(self) -> datetime:
        reply = self._request(GetClock())
        if not isinstance(reply, ClockReply):
            raise ProtocolError(f"GET_CLOCK answered with {reply!r}")
        return _as_utc(reply.unix_s)

    def sync_clock(self, now: datetime) -> None:
        """Set the device clock to `now` (timezone-aware; sent as whole UTC seconds)."""
        if now.tzinfo is None:
            raise ValueError("sync_clock needs a timezone-aware datetime")
        reply = self._request(SetClock(int(now.timestamp())))
        if not isinstance(reply, Ack):
            raise ProtocolError(f"SET_CLOCK answered with {reply!r}")

    def read_record(self, record_no: int) -> GoldReading:
        """Fetch record `record_no`: header, then the profile chunk by chunk, checked end to end."""
        if not 1 <= record_no <= 0xFFFFFFFF:
            raise ValueError(f"record numbers are 1..2^32-1, got {record_no}")
        header = self._request(GetRecord(record_no))
        if not isinstance(header, RecordHeader) or header.record_no != record_no:
            raise ProtocolError(f"GET_RECORD {record_no} answered with {header!r}")
        if header.points > MAX_PROFILE_POINTS or header.chunk_points * 2 + 9 > MAX_PAYLOAD:
            raise ProtocolError(f"record {record_no}: implausible profile geometry {header}")
        raw = np.empty(header.points, dtype=np.uint16)
        for k in range(header.chunks):
            chunk = self._request(GetProfile(record_no, k))
            off = k * header.chunk_points
            want = min(header.chunk_points, header.points - off)
            if (
                not isinstance(chunk, ProfileChunk)
                or chunk.record_no != record_no
                or chunk.chunk != k
                or chunk.offset != off
                or len(chunk.values) != want
            ):
                raise ProtocolError(f"record {record_no} chunk {k}: unexpected reply {chunk!r:.120}")
            raw[off : off + want] = chunk.values
        if profile_crc32(raw) != header.profile_crc32:
            raise ProtocolError(f"record {record_no}: profile CRC-32 mismatch after reassembly")
        if int(raw.max()) > header.full_scale:
            raise ProtocolError(f"record {record_no}: value above full scale {header.full_scale}")
        profile = raw.astype(np.float64) / float(header.full_scale)
        profile.setflags(write=False)
        return GoldReading(
            record_no=header.record_no,
            channel=header.channel,
            kit=header.kit,
            sample_id=header.sample_id,
            product=header.product,
            measured_at=_as_utc(header.measured_unix_s),
            profile=profile,
            operator=header.operator,
        )


def probe_serial(path: str, timeouts: Timeouts | None = None) -> DeviceInfo:
    """Identify a gold reader at `path` (serial path or tcp://host:port); DeviceNotFound if none answers."""
    analyzer = GoldSerialAnalyzer(path, timeouts=timeouts or PROBE_TIMEOUTS)
    try:
        analyzer.session.open()
        return analyzer.identify()
    except DriverError as exc:
        raise DeviceNotFound(f"no gold-serial analyzer at {path}: {exc}") from exc
    finally:
        analyzer.close()


# ---------------------------------------------------------------- registration (drivers.registry)
class GoldSerialInstrument(InstrumentSettings):
    """`driver = "gold-serial"`: a colloidal-gold strip reader on a serial port."""

    driver: Literal["gold-serial"]
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=115200, gt=0)
    default_kit: str | None = Field(default=None, description="kit used when the reader reports none")

    def default_kit_name(self) -> str | None:
        return self.default_kit


def _make(settings: GoldSerialInstrument, timeouts: Timeouts) -> Callable[[], Analyzer]:
    def gold() -> Analyzer:
        return GoldSerialAnalyzer(settings.port, baudrate=settings.baudrate, timeouts=timeouts)

    return gold


def _probe(path: str, options: ProbeOptions) -> Probed:
    info = probe_serial(path, options.timeouts())
    return Probed(info, "serial", {"port": path}, port_key="port")


FAMILY: DriverFamily[GoldSerialInstrument] = DriverFamily(
    name="gold-serial",
    settings=GoldSerialInstrument,
    factory=_make,
    probe_serial=_probe,
    probe_order=10,
    doc="colloidal-gold strip reader, 0x7E/CRC-16 framed serial protocol",
)
