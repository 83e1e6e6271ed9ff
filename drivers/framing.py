"""Link-layer framing of the colloidal-gold serial protocol: 0x7E flags, byte stuffing, CRC-16/CCITT.

Does: turn a `Frame` (address, sequence, command, payload) into wire bytes and back, pure and
incremental: `encode_frame(frame) -> bytes`, `decode_frame(buffer) -> (consumed, frame | None)`.
Resynchronises after line noise, truncated and corrupted frames (see docs/protocols/serial-gold.md).

Does not: know what commands mean (`drivers.gold_serial`), do any I/O, sleep or retry.

Wire format (all multi-byte integers big-endian)::

    7E | stuffed( ADDR SEQ CMD LEN_hi LEN_lo PAYLOAD[LEN] CRC_hi CRC_lo ) | 7E

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) over ADDR..PAYLOAD before
stuffing. Stuffing: 0x7E → 7D 5E, 0x7D → 7D 5D; any other escape is malformed.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from drivers.errors import ChecksumError, FrameError

FLAG = 0x7E
ESC = 0x7D
ESC_XOR = 0x20
HEADER_LEN = 5  # addr, seq, cmd, len16
CRC_LEN = 2
MAX_PAYLOAD = 1024
# Longest stuffed body a valid frame can have (every byte escaped); anything longer is noise.
MAX_STUFFED = 2 * (HEADER_LEN + MAX_PAYLOAD + CRC_LEN)


class MalformedFrame(FrameError):
    """Bytes between two flags that are not a frame (bad escape, wrong length, too short/long).

    `consumed` is how many bytes of the buffer the decoder discarded; the caller drops them and goes on.
    """

    def __init__(self, message: str, *, consumed: int) -> None:
        super().__init__(message)
        self.consumed = consumed


class CrcMismatch(ChecksumError):
    """A complete, well-formed frame whose CRC does not match. `consumed` as in `MalformedFrame`."""

    def __init__(self, message: str, *, consumed: int, seq: int) -> None:
        super().__init__(message)
        self.consumed = consumed
        self.seq = seq  # the (untrustworthy) sequence byte as received, for a NAK


@dataclass(frozen=True, slots=True)
class Frame:
    """One link-layer frame. `cmd` and `payload` are interpreted by `drivers.gold_serial`."""

    addr: int
    seq: int
    cmd: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        for name in ("addr", "seq", "cmd"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{name} must fit one byte, got {value}")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")


def crc16_ccitt(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of `data` (check value of b"123456789" is 0x29B1)."""
    return binascii.crc_hqx(data, crc)


def stuff(data: bytes | bytearray) -> bytes:
    """Escape FLAG and ESC bytes."""
    return bytes(data).replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")


def unstuff(data: bytes | bytearray | memoryview) -> bytes:
    """Undo `stuff`; raise ValueError on an escape that `stuff` never produces."""
    raw = bytes(data)
    if ESC not in raw:
        return raw
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b == ESC:
            if i + 1 >= n:
                raise ValueError("escape byte at end of frame")
            nxt = raw[i + 1] ^ ESC_XOR
            if nxt not in (FLAG, ESC):
                raise ValueError(f"invalid escape 7D {raw[i + 1]:02X}")
            out.append(nxt)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


def frame_body(frame: Frame, *, crc_xor: int = 0) -> bytes:
    """Unstuffed ADDR..CRC bytes of `frame` (`crc_xor` != 0 deliberately corrupts the CRC; simulator only)."""
    head = bytes((frame.addr, frame.seq, frame.cmd)) + len(frame.payload).to_bytes(2, "big") + frame.payload
    return head + (crc16_ccitt(head) ^ crc_xor).to_bytes(2, "big")


def encode_frame(frame: Frame) -> bytes:
    """Wire bytes of `frame`, opening and closing flag included."""
    return b"\x7e" + stuff(frame_body(frame)) + b"\x7e"


def decode_frame(buffer: bytes | bytearray) -> tuple[int, Frame | None]:
    """Decode the first frame of `buffer`.

    Returns ``(0, None)`` when more bytes are needed, ``(n, None)`` when the first n bytes are noise to
    drop (bytes before a flag, or an empty frame between two adjacent flags), and ``(n, frame)`` for a
    valid frame. Raises `MalformedFrame` / `CrcMismatch` for a bad frame. ``n`` / ``consumed`` always
    stop *before* the closing flag: it may be the opening flag of the next frame (a frame that lost its
    own opening or closing flag then costs at most itself, never its neighbour).
    """
    n = len(buffer)
    if n == 0:
        return 0, None
    start = buffer.find(FLAG)
    if start < 0:
        return n, None
    if start > 0:
        return start, None
    end = buffer.find(FLAG, 1)
    if end < 0:
        if n - 1 > MAX_STUFFED:
            raise MalformedFrame(f"no closing flag within {MAX_STUFFED} bytes", consumed=n)
        return 0, None
    if end == 1:
        return 1, None
    try:
        body = unstuff(bytes(buffer[1:end]))
    except ValueError as exc:
        raise MalformedFrame(str(exc), consumed=end) from exc
    if len(body) < HEADER_LEN + CRC_LEN:
        raise MalformedFrame(f"frame of {len(body)} bytes is shorter than a header", consumed=end)
    length = int.from_bytes(body[3:5], "big")
    if length > MAX_PAYLOAD:
        raise MalformedFrame(f"length field {length} exceeds {MAX_PAYLOAD}", consumed=end)
    if len(body) != HEADER_LEN + length + CRC_LEN:
        raise MalformedFrame(
            f"length field says {length} payload bytes, frame holds {len(body) - HEADER_LEN - CRC_LEN}",
            consumed=end,
        )
    got = int.from_bytes(body[-2:], "big")
    want = crc16_ccitt(body[:-2])
    if got != want:
        raise CrcMismatch(f"CRC {got:04X} != computed {want:04X}", consumed=end, seq=body[1])
    return end, Frame(addr=body[0], seq=body[1], cmd=body[2], payload=bytes(body[HEADER_LEN:-2]))
