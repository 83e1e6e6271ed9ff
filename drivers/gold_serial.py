"""Colloidal-gold strip reader over serial ("gold-serial"): the analyzer and its instrument family.

Does: `GoldSerialAnalyzer` — the `drivers.readings.Analyzer` the gateway uses: identify, status, clock, and
a record read header first, then its profile chunk by chunk, checked end to end; `probe_serial` for scans;
`FAMILY`, the `driver = "gold-serial"` instrument table (`drivers.registry`). The layers below: the codec
(`drivers.gold_codec`, pure) over the link framing (`drivers.framing`), under one session
(`drivers.gold_session`). Lifecycle, the same-device guard and the probe are the record-memory analyzer's
(`drivers.record_memory`), shared with the ASTM reader. Protocol reference: docs/protocols/serial-gold.md.

Does not: interpret profiles (`gateway.interpret.gold`), retry (the session does), or store anything.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import Field

from drivers.errors import ProtocolError
from drivers.framing import MAX_PAYLOAD
from drivers.gold_codec import (
    MAX_PROFILE_POINTS,
    PROTOCOL_VERSION,
    Ack,
    ClockReply,
    GetClock,
    GetProfile,
    GetRecord,
    GetStatus,
    Identify,
    IdentifyReply,
    ProfileChunk,
    RecordHeader,
    Reply,
    Request,
    SetClock,
    StatusReply,
    profile_crc32,
)
from drivers.gold_session import DEFAULT_TIMEOUTS, GoldSession
from drivers.readings import Analyzer, DeviceInfo, GoldReading
from drivers.record_memory import RecordMemoryAnalyzer, SerialGoldInstrument, check_record_no, probe
from drivers.registry import DriverFamily, Probed, ProbeOptions
from drivers.timeouts import Timeouts
from drivers.transport import Transport, transport_for

PROBE_TIMEOUTS = Timeouts(response_s=0.5, retries=1, inter_byte_s=0.2)


def _as_utc(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC)


class GoldSerialAnalyzer(RecordMemoryAnalyzer):
    """A colloidal-gold strip reader on a serial port (or ``tcp://host:port`` serial server).

    `open()` opens the port and identifies the device (which also resets the device's link state); it
    is idempotent. After an unplug the session reopens the same path within the call (with backoff) —
    use a /dev/serial/by-id/… path (or the simulator's `link_path`) so a replugged device is found
    again. After every reopen the device is identified again before any reply is returned; if a device
    with a different serial number answers, `ProtocolError` is raised (record numbers are per device).
    """

    driver = "gold-serial"
    session: GoldSession

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
        self._same_device(info)
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
        check_record_no(record_no)
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
    return probe(GoldSerialAnalyzer(path, timeouts=timeouts or PROBE_TIMEOUTS), "gold-serial analyzer")


# ---------------------------------------------------------------- registration (drivers.registry)
class GoldSerialInstrument(SerialGoldInstrument):
    """`driver = "gold-serial"`: a colloidal-gold strip reader on a serial port."""

    driver: Literal["gold-serial"]
    baudrate: int = Field(default=115200, gt=0)


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
