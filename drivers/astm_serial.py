"""Colloidal-gold reader with ASTM LIS output ("astm-gold"): E1381 session, analyzer and family.

Does:
- `AstmSession` — the host side of ASTM E1381 over any `drivers.transport.Transport`: one exchange
  sends a message (ENQ → ACK, frames each ACKed, NAKed frames re-sent up to 6 times, EOT) and then
  receives the analyzer's answer (its ENQ is ACKed, each frame checked — checksum, frame number — and
  ACKed or NAKed, until EOT). A failed exchange is repeated whole under the shared policy of
  `drivers.backoff` (a busy analyzer — NAK to our ENQ — or a lost link is waited for with the lock
  released). The only place with retries, timeouts and the lock; the port's lifecycle is
  `drivers.port_session.PortSession`'s, shared with the gold-serial session.
- `AstmGoldAnalyzer` — the `drivers.readings.Analyzer`: it asks with E1394 query records
  (``Q|1|^LAST||^^^ALL||||||||O`` for the newest record number, ``Q|1|^<n>||^^^ALL||||||||F`` for
  record n) and maps the answer (H, P, O, R reflectance, R CRC-32, L) to a `GoldReading`. Every
  answer's header names the analyzer's serial number; an answer from another device is refused.
- `FAMILY` — the `driver = "astm-gold"` instrument table and its serial probe (`drivers.registry`).
Lifecycle, the same-device guard, the record-number check and the probe are the record-memory analyzer's
(`drivers.record_memory`), shared with `drivers.gold_serial`.
Protocol, record fields and byte vectors: docs/protocols/astm.md.

Does not: frame or parse records (`drivers.astm_framing`, `drivers.astm_records`), accept results the
analyzer pushes on its own (an unsolicited ENQ while we wait is contention: we step back and ask
again later), or interpret profiles (`gateway.interpret.gold`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import Field

from drivers.astm_framing import (
    ACK,
    ENQ,
    EOT,
    NAK,
    BadChecksum,
    BadFrame,
    Control,
    Frame,
    Reassembler,
    decode,
    encode_frame,
    frames_for,
)
from drivers.astm_records import (
    Header,
    Order,
    Query,
    Record,
    Result,
    Terminator,
    check_message,
    decode_record,
    encode_record,
)
from drivers.backoff import Again
from drivers.errors import (
    DriverTimeout,
    FrameError,
    ProtocolError,
    TransportError,
)
from drivers.port_session import PortSession
from drivers.readings import Analyzer, DeviceInfo, GoldReading
from drivers.record_memory import RecordMemoryAnalyzer, SerialGoldInstrument, check_record_no, probe
from drivers.registry import DriverFamily, Probed, ProbeOptions
from drivers.timeouts import Timeouts
from drivers.transport import Transport, transport_for

DRIVER_NAME: Final = "astm-gold"
MAX_SENDS: Final = 6  # E1381: a frame NAKed six times aborts the transfer
DEVICE_TZ: Final = ZoneInfo("Asia/Shanghai")  # the analyzer's clock shows local time
DEFAULT_TIMEOUTS: Final = Timeouts(response_s=2.0, retries=3, inter_byte_s=0.5)
PROBE_TIMEOUTS: Final = Timeouts(response_s=0.5, retries=0, inter_byte_s=0.2)
HOST_ID: Final = "KUAIJIAN"


class AnalyzerBusy(ProtocolError):
    """The analyzer answered our ENQ with NAK (not ready) or with its own ENQ (contention)."""


@dataclass
class AstmStats:
    """Counters of one session (diagnostics and tests)."""

    exchanges: int = 0
    frames_sent: int = 0
    frames_resent: int = 0
    frames_received: int = 0
    naks_sent: int = 0
    duplicates: int = 0
    noise_bytes: int = 0
    busy: int = 0
    reconnects: int = 0


class AstmSession(PortSession):
    """ASTM E1381 host over a `Transport`: `exchange(message) -> answer`, one at a time."""

    def __init__(self, transport: Transport, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        super().__init__(transport, timeouts)
        self.stats = AstmStats()

    def exchange(self, message: list[Record]) -> list[Record]:
        """Send `message` (H … L) and return the analyzer's answer (H … L), checked."""
        texts = [encode_record(r) for r in message]
        return self._retrying(lambda: self._attempt(texts))

    def _attempt(self, texts: list[bytes]) -> list[Record]:
        if self._reopen():
            self.stats.reconnects += 1
        self.stats.exchanges += 1
        try:
            self._send(texts)
            answer = self._receive()
        except AnalyzerBusy as exc:
            self.stats.busy += 1
            raise Again(exc, wait=True) from exc
        except DriverTimeout as exc:
            raise Again(exc, wait=False) from exc
        except TransportError as exc:
            self.transport.close()
            self._buf.clear()
            raise Again(exc, wait=True) from exc
        except FrameError as exc:
            raise Again(exc, wait=False) from exc
        try:
            records = [decode_record(t) for t in answer]
        except FrameError as exc:
            raise Again(exc, wait=False) from exc
        check_message(records)
        return records

    # ------------------------------------------------------------ E1381 sender
    def _send(self, texts: list[bytes]) -> None:
        self._buf.clear()
        self.transport.discard_input()
        self.transport.write(bytes((ENQ,)))
        answer = self._control("ACK to our ENQ")
        if answer == Control.NAK:
            raise AnalyzerBusy("the analyzer is not ready (NAK to ENQ)")
        if answer == Control.ENQ:
            raise AnalyzerBusy("line contention: the analyzer wants to send (ENQ)")
        if answer != Control.ACK:
            self._abort()
            raise ProtocolError(f"answer {answer.name} to our ENQ")
        for frame in frames_for(texts):
            for send in range(MAX_SENDS):
                if send:
                    self.stats.frames_resent += 1
                self.stats.frames_sent += 1
                self.transport.write(encode_frame(frame))
                answer = self._control(f"ACK to frame {frame.fn}")
                if answer in (Control.ACK, Control.EOT):  # EOT = receiver interrupt: treated as ACK
                    break
                if answer != Control.NAK:
                    self._abort()
                    raise ProtocolError(f"answer {answer.name} to frame {frame.fn}")
            else:
                self._abort()
                raise FrameError(f"frame {frame.fn} NAKed {MAX_SENDS} times")
        self.transport.write(bytes((EOT,)))

    def _abort(self) -> None:
        self.transport.write(bytes((EOT,)))

    def _control(self, what: str) -> Control:
        """The next control character within `response_s` (frames and noise are dropped)."""
        deadline = time.monotonic() + self.timeouts.response_s
        while True:
            token = self._token(deadline)
            if token is None:
                self._abort()
                raise DriverTimeout(f"no {what} within {self.timeouts.response_s:.2f}s")
            if isinstance(token, Control):
                return token

    # ------------------------------------------------------------ E1381 receiver
    def _receive(self) -> list[bytes]:
        deadline = time.monotonic() + self.timeouts.response_s
        while True:  # wait for the analyzer to establish its transfer
            token = self._token(deadline)
            if token is None:
                raise DriverTimeout(f"no answer (ENQ) within {self.timeouts.response_s:.2f}s")
            if token == Control.ENQ:
                break
        self.transport.write(bytes((ACK,)))
        rea = Reassembler()
        while True:
            deadline = time.monotonic() + self.timeouts.response_s
            try:
                token = self._token(deadline)
            except (BadFrame, BadChecksum):
                self.stats.naks_sent += 1
                self.transport.write(bytes((NAK,)))
                continue
            if token is None:
                raise DriverTimeout(f"no frame within {self.timeouts.response_s:.2f}s")
            if token == Control.EOT:
                if rea.complete and rea.records:
                    return rea.records
                raise FrameError("the analyzer ended its transfer before a complete message")
            if token == Control.ENQ:  # the analyzer restarted its transfer
                rea = Reassembler()
                self.transport.write(bytes((ACK,)))
                continue
            if isinstance(token, Frame):
                self.stats.frames_received += 1
                try:
                    if rea.accept(token) == "duplicate":
                        self.stats.duplicates += 1
                except BadFrame:
                    self.stats.naks_sent += 1
                    self.transport.write(bytes((NAK,)))
                    continue
                self.transport.write(bytes((ACK,)))

    def _token(self, deadline: float) -> Control | Frame | None:
        """The next token before `deadline` (None: nothing came). A frame whose bytes stop for
        `inter_byte_s` raises `BadFrame`; a broken frame raises `BadFrame` / `BadChecksum`."""
        while True:
            try:
                consumed, token = decode(self._buf)
            except (BadFrame, BadChecksum) as exc:
                del self._buf[: exc.consumed]
                raise
            if consumed:
                del self._buf[:consumed]
                if token is not None:
                    return token
                self.stats.noise_bytes += consumed
                continue
            now = time.monotonic()
            if now >= deadline and not self._buf:
                return None
            in_frame = bool(self._buf)
            wait = self.timeouts.inter_byte_s if in_frame else deadline - now
            data = self.transport.read(4096, max(wait, 0.0))
            if data:
                self._buf.extend(data)
            elif in_frame:
                self._buf.clear()
                raise BadFrame(f"frame cut off (no byte for {self.timeouts.inter_byte_s:.2f}s)", consumed=0)


def _device_time(stamp: str) -> datetime:
    """YYYYMMDDHHMMSS in the analyzer's local time (Asia/Shanghai) → timezone-aware UTC."""
    try:
        local = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=DEVICE_TZ)
    except ValueError as exc:
        raise ProtocolError(f"bad ASTM date/time {stamp!r}") from exc
    return local.astimezone(UTC)


def host_message(query: Query) -> list[Record]:
    """The host's message around one query (header with our name, L)."""
    return [Header(sender=(HOST_ID,), receiver=""), query, Terminator()]


class AstmGoldAnalyzer(RecordMemoryAnalyzer):
    """A colloidal-gold strip reader with ASTM E1381/E1394 LIS output on a serial port (or
    ``tcp://host:port`` serial server). Records are pulled by number with query records; `open()`
    identifies the device and is idempotent (`drivers.record_memory`)."""

    driver = DRIVER_NAME
    session: AstmSession

    def __init__(self, port: str, *, baudrate: int = 9600, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.port = port
        self.timeouts = timeouts
        self.session = AstmSession(transport_for(port, baudrate=baudrate), timeouts)
        self._info: DeviceInfo | None = None

    def _ask(self, record: str, status: Literal["O", "F"]) -> list[Record]:
        answer = self.session.exchange(host_message(Query(1, record, status)))
        header = answer[0]
        assert isinstance(header, Header)  # noqa: S101 — check_message guarantees it
        self._same_device(self._device_info(header))
        return answer

    def _device_info(self, header: Header) -> DeviceInfo:
        sender = (*header.sender, "", "", "", "", "")
        _vendor, model, firmware, serial, channels = sender[:5]
        if not serial:
            raise ProtocolError(f"the analyzer's header names no serial number: {header.sender}")
        return DeviceInfo(
            serial=serial,
            model=model,
            firmware=firmware,
            driver=DRIVER_NAME,
            method="gold",
            channels=int(channels) if channels.isdigit() else 1,
        )

    def identify(self) -> DeviceInfo:
        self._ask("LAST", "O")
        assert self._info is not None  # noqa: S101 — set by _ask
        return self._info

    def latest_record(self) -> int:
        """The newest record number in the analyzer's memory (0 = none)."""
        answer = self._ask("LAST", "O")
        orders = [r for r in answer if isinstance(r, Order)]
        if not orders:
            return 0
        return max(o.record_no for o in orders)

    def read_record(self, record_no: int) -> GoldReading:
        check_record_no(record_no)
        answer = self._ask(str(record_no), "F")
        end = answer[-1]
        assert isinstance(end, Terminator)  # noqa: S101 — check_message guarantees it
        orders = [r for r in answer if isinstance(r, Order)]
        if end.code == "I" or not orders:
            raise ProtocolError(f"record {record_no}: not in the analyzer's memory (L code {end.code})")
        (order,) = orders
        if order.record_no != record_no:
            raise ProtocolError(f"asked for record {record_no}, the analyzer answered {order.record_no}")
        results = {r.kind: r for r in answer if isinstance(r, Result)}
        refl, crc = results.get("REFLECTANCE"), results.get("CRC32")
        if refl is None or crc is None:
            raise ProtocolError(f"record {record_no}: no REFLECTANCE and CRC32 results")
        full_scale = _full_scale(refl.units)
        try:
            raw = np.array([int(v) for v in refl.value.split("\\")], dtype=np.int64)
        except ValueError as exc:
            raise ProtocolError(f"record {record_no}: reflectance values are not integers") from exc
        if raw.size < 2 or raw.min() < 0 or raw.max() > full_scale:
            raise ProtocolError(f"record {record_no}: reflectance outside 0..{full_scale}")
        if f"{zlib.crc32(raw.astype('>u2').tobytes()):08X}" != crc.value.upper():
            raise ProtocolError(f"record {record_no}: profile CRC-32 mismatch")
        profile = raw.astype(np.float64) / float(full_scale)
        profile.setflags(write=False)
        return GoldReading(
            record_no=record_no,
            channel=order.channel,
            kit=order.test,
            sample_id=order.specimen_id,
            product=order.product,
            measured_at=_device_time(refl.completed_at),
            profile=profile,
            operator=order.operator,
        )


def _full_scale(units: str) -> int:
    head, _, scale = units.partition("/")
    if head != "1" or not scale.isdigit() or not 0 < int(scale) <= 0xFFFF:
        raise ProtocolError(f"reflectance units {units!r} are not 1/<full scale ≤ 65535>")
    return int(scale)


def probe_serial(path: str, timeouts: Timeouts = PROBE_TIMEOUTS, baudrate: int = 9600) -> DeviceInfo:
    """Identify an ASTM gold reader at `path`; DeviceNotFound if none answers."""
    return probe(AstmGoldAnalyzer(path, baudrate=baudrate, timeouts=timeouts), "ASTM analyzer")


# ---------------------------------------------------------------- registration (drivers.registry)
class AstmGoldInstrument(SerialGoldInstrument):
    """`driver = "astm-gold"`: a colloidal-gold reader with ASTM E1381/E1394 LIS output."""

    driver: Literal["astm-gold"]
    baudrate: int = Field(default=9600, gt=0)


def _make(settings: AstmGoldInstrument, timeouts: Timeouts) -> Callable[[], Analyzer]:
    def astm() -> Analyzer:
        return AstmGoldAnalyzer(settings.port, baudrate=settings.baudrate, timeouts=timeouts)

    return astm


def _probe(path: str, options: ProbeOptions) -> Probed:
    t = Timeouts(response_s=options.timeout_s, retries=0, inter_byte_s=min(0.2, options.timeout_s))
    info = probe_serial(path, t)
    return Probed(info, "astm-serial", {"port": path}, port_key="port")


FAMILY: DriverFamily[AstmGoldInstrument] = DriverFamily(
    name=DRIVER_NAME,
    settings=AstmGoldInstrument,
    factory=_make,
    probe_serial=_probe,
    probe_order=30,
    doc="colloidal-gold reader with ASTM E1381/E1394 (LIS2-A2) output",
)
