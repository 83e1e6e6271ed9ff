"""ASTM E1381 (CLSI LIS1-A) low-level framing: control characters, frames, checksums — pure.

Does: encode a frame ``STX FN text ETX|ETB C1 C2 CR LF`` and decode the next token of a byte buffer
(`decode(buffer) -> (consumed, token | None)`, 0 consumed = need more bytes): a link control character
(ENQ, ACK, NAK, EOT) or a `Frame`. Splits a record's text into frames (≤ 240 text bytes each, ETB for
intermediate frames, ETX for the last) and numbers them (FN 1…7, 0, 1, … per transfer).
Protocol reference with byte vectors: docs/protocols/astm.md.

Does not: know what records mean (`drivers.astm_records`), do any I/O, wait, or decide when to ACK
(`drivers.astm_serial`).

Checksum: the sum of the bytes from FN through ETX/ETB inclusive, modulo 256, as two uppercase hex
digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from drivers.errors import ChecksumError, FrameError

STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ENQ: Final = 0x05
ACK: Final = 0x06
LF: Final = 0x0A
CR: Final = 0x0D
NAK: Final = 0x15
ETB: Final = 0x17
MAX_TEXT: Final = 240  # text bytes per frame (a frame is at most 247 bytes)
# Bytes never allowed inside frame text (E1381 6.6.2): the link's own control characters, LF, DLE,
# DC1–DC4 and SYN. CR is the record terminator and allowed.
RESTRICTED: Final = frozenset(
    {0x01, STX, ETX, EOT, ENQ, ACK, LF, 0x10, 0x11, 0x12, 0x13, 0x14, NAK, 0x16, ETB}
)


class Control(IntEnum):
    """Link control characters, each sent on its own."""

    EOT = EOT
    ENQ = ENQ
    ACK = ACK
    NAK = NAK


class BadFrame(FrameError):
    """Bytes from STX to LF that are not a frame (bad FN, no terminator, restricted byte).

    `consumed` is how many bytes to drop; `fn` is the frame number as received when there was one."""

    def __init__(self, message: str, *, consumed: int, fn: int | None = None) -> None:
        super().__init__(message)
        self.consumed = consumed
        self.fn = fn


class BadChecksum(ChecksumError):
    """A complete frame whose checksum does not match. `consumed`, `fn` as in `BadFrame`."""

    def __init__(self, message: str, *, consumed: int, fn: int) -> None:
        super().__init__(message)
        self.consumed = consumed
        self.fn = fn


@dataclass(frozen=True, slots=True)
class Frame:
    """One E1381 frame: frame number 0–7, text (no restricted bytes), and whether it ends a record
    (ETX) or continues it (ETB)."""

    fn: int
    text: bytes
    final: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.fn <= 7:
            raise ValueError(f"frame number {self.fn} is not 0..7")
        if len(self.text) > MAX_TEXT:
            raise ValueError(f"frame text of {len(self.text)} bytes exceeds {MAX_TEXT}")
        bad = RESTRICTED.intersection(self.text)
        if bad:
            raise ValueError(f"frame text holds restricted bytes {sorted(bad)}")


Token = Control | Frame


def checksum(body: bytes) -> bytes:
    """The two checksum characters of `body` = FN … ETX/ETB inclusive."""
    return f"{sum(body) & 0xFF:02X}".encode("ascii")


def encode_frame(frame: Frame, *, corrupt: bool = False) -> bytes:
    """Wire bytes of `frame` (`corrupt` sends a wrong checksum; simulator fault injection only)."""
    body = bytes((0x30 + frame.fn,)) + frame.text + bytes((ETX if frame.final else ETB,))
    cs = checksum(body)
    if corrupt:
        cs = f"{(int(cs, 16) + 1) & 0xFF:02X}".encode("ascii")
    return bytes((STX,)) + body + cs + bytes((CR, LF))


def decode(buffer: bytes | bytearray) -> tuple[int, Token | None]:
    """The next token of `buffer`.

    ``(0, None)``: need more bytes. ``(n, None)``: n bytes of noise to drop (anything before a control
    character or STX). ``(1, Control)`` for ENQ/ACK/NAK/EOT. ``(n, Frame)`` for a valid frame.
    Raises `BadFrame` / `BadChecksum` (with `consumed`) for a broken frame; a frame is delimited by its
    LF, and a control character or STX inside a frame ends it as broken *before* that byte, so the
    next token is never lost.
    """
    n = len(buffer)
    if n == 0:
        return 0, None
    first = buffer[0]
    if first in (EOT, ENQ, ACK, NAK):
        return 1, Control(first)
    if first != STX:
        for i in range(1, n):
            if buffer[i] in (STX, EOT, ENQ, ACK, NAK):
                return i, None
        return n, None
    # STX FN text ETX|ETB C1 C2 CR LF
    end = -1
    for i in range(1, n):
        b = buffer[i]
        if b in (ETX, ETB):
            end = i
            break
        if b in (STX, EOT, ENQ, ACK, NAK):
            raise BadFrame("frame cut off by a control character", consumed=i)
        if i > 1 + 1 + MAX_TEXT:
            raise BadFrame(f"no ETX/ETB within {MAX_TEXT} text bytes", consumed=i)
    if end < 0:
        return 0, None
    if n < end + 5:
        return 0, None
    tail = bytes(buffer[end + 1 : end + 5])
    consumed = end + 5
    fn_byte = buffer[1]
    if end < 2 or not 0x30 <= fn_byte <= 0x37:
        raise BadFrame(f"frame number byte {fn_byte:#04x} is not '0'..'7'", consumed=consumed)
    fn = fn_byte - 0x30
    if tail[2:] != bytes((CR, LF)):
        raise BadFrame("frame does not end with CR LF", consumed=consumed, fn=fn)
    body = bytes(buffer[1 : end + 1])
    want = checksum(body)
    if tail[:2] != want:
        raise BadChecksum(f"checksum {tail[:2]!r} != computed {want!r}", consumed=consumed, fn=fn)
    text = body[1:-1]
    bad = RESTRICTED.intersection(text)
    if bad:
        raise BadFrame(f"frame text holds restricted bytes {sorted(bad)}", consumed=consumed, fn=fn)
    return consumed, Frame(fn, text, final=buffer[end] == ETX)


def frames_for(records: list[bytes], first_fn: int = 1) -> list[Frame]:
    """The frames of one transfer: each record (its text ends with CR) in ≤ 240-byte pieces, ETB on
    all but its last piece; frame numbers run on from `first_fn` modulo 8."""
    frames: list[Frame] = []
    fn = first_fn % 8
    for rec in records:
        if not rec.endswith(b"\r"):
            raise ValueError("record text must end with CR")
        pieces = [rec[i : i + MAX_TEXT] for i in range(0, len(rec), MAX_TEXT)]
        for k, piece in enumerate(pieces):
            frames.append(Frame(fn, piece, final=k == len(pieces) - 1))
            fn = (fn + 1) % 8
    return frames


class Reassembler:
    """Receiver side of one transfer: frames in order → record texts (pure; no I/O).

    `accept(frame)` returns "ok" for the next expected frame, "duplicate" for a repeat of the previous
    one (its ACK was lost; ACK it again and drop it), and raises `BadFrame` for any other number.
    """

    def __init__(self, first_fn: int = 1) -> None:
        self.expected = first_fn % 8
        self._partial = bytearray()
        self.records: list[bytes] = []

    def accept(self, frame: Frame) -> str:
        if frame.fn == (self.expected - 1) % 8 and (self.records or self._partial):
            return "duplicate"
        if frame.fn != self.expected:
            raise BadFrame(f"frame number {frame.fn}, expected {self.expected}", consumed=0, fn=frame.fn)
        self.expected = (self.expected + 1) % 8
        self._partial.extend(frame.text)
        if frame.final:
            text = bytes(self._partial)
            self._partial.clear()
            self.records.extend(r + b"\r" for r in text.split(b"\r") if r)
        return "ok"

    @property
    def complete(self) -> bool:
        """No record is half received (an EOT now ends the transfer cleanly)."""
        return not self._partial
