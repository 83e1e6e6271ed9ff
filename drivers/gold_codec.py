"""Colloidal-gold strip reader protocol ("gold-serial"): the message codec — pure, no I/O.

Does: the protocol's constants (command codes, NAK reasons, refusal codes, status bits), typed request and
reply messages, and their encoding to / decoding from (command code, payload bytes); the profile's
end-to-end CRC-32 and its split into GET_PROFILE chunks. Protocol reference: docs/protocols/serial-gold.md.

Does not: frame bytes or check the link CRC (`drivers.framing`), any I/O, retries or timeouts
(`drivers.gold_session`), or map replies to readings (`drivers.gold_serial`).
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.errors import ProtocolError

PROTOCOL_VERSION = 1
BROADCAST = 0xFF  # "whichever device is on this line"; replies carry the device's own address
REPLY_BIT = 0x80
CHUNK_POINTS = 256  # profile points per GET_PROFILE reply (512 payload bytes)
MAX_PROFILE_POINTS = 4096
MAX_CHUNKS = 256  # GET_PROFILE addresses a chunk with one byte: chunks 0..255


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
