"""Colloidal-gold strip reader protocol ("gold-serial"): the session layer.

Does: `GoldSession` — the one place for retries, timeouts, ACK/NAK retransmission, request/response
matching by sequence number and the lock, over any `drivers.transport.Transport`; the port's lifecycle
(open, close, reopening an unplugged port under the shared policy of `drivers.backoff`) is
`drivers.port_session.PortSession`'s, shared with the ASTM session.

Does not: encode or decode messages (`drivers.gold_codec`), frame bytes (`drivers.framing`), or know what a
record is (`drivers.gold_serial`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from drivers.backoff import Again
from drivers.errors import (
    ChecksumError,
    DriverError,
    DriverTimeout,
    FrameError,
    ProtocolError,
    TransportError,
)
from drivers.framing import FLAG, CrcMismatch, Frame, MalformedFrame, decode_frame, encode_frame
from drivers.gold_codec import (
    BROADCAST,
    REPLY_BIT,
    Ack,
    Cmd,
    ErrorCode,
    Nak,
    NakReason,
    Refused,
    Reply,
    Request,
    decode_reply,
    encode_request,
)
from drivers.port_session import PortSession
from drivers.timeouts import Timeouts
from drivers.transport import Transport

log = logging.getLogger(__name__)

DEFAULT_TIMEOUTS = Timeouts()


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


class GoldSession(PortSession):
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
        super().__init__(transport, timeouts)
        self.address = address
        self.stats = SessionStats()
        self._seq = os.urandom(1)[0]
        self._corrupt: FrameError | None = None  # a corrupt frame not yet judged (see _decode_buffered)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def request(self, msg: Request) -> Reply:
        """Send `msg`, return the decoded reply (never NAK). CAN replies raise ProtocolError."""
        cmd, payload = encode_request(msg)
        exchange = _Exchange(cmd, payload)
        try:
            reply = self._retrying(lambda: self._attempt(exchange))
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
        if self._reopen():  # the link failed during an earlier attempt: the same path reopened
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
