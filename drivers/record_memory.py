"""What the analyzers with a numbered record memory on a serial line share (gold-serial, astm-gold).

Does: `RecordMemoryAnalyzer`, the base of such a driver — its lifecycle (`open` opens the session and
identifies the device, idempotently and under the session's lock; `close`; the context manager; `info`)
and the same-device guard (`_same_device`: record numbers are per device, so an answer from a device with
another serial number is refused with `ProtocolError`); `check_record_no` (record numbers are 1..2^32-1);
`probe`, the scan probe (identify, or `DeviceNotFound`); `SerialGoldInstrument`, the keys of a serial gold
reader's `[[instruments]]` table (port, default kit) each family extends with its name and baud rate.

Does not: speak a protocol (each family's session and its `identify` / `latest_record` / `read_record` do),
retry (the sessions do), or decide what a record holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, Self

from pydantic import Field

from drivers.errors import DeviceNotFound, DriverError, ProtocolError
from drivers.readings import DeviceInfo
from drivers.registry import InstrumentSettings
from drivers.transport import Transport

MAX_RECORD_NO = 0xFFFFFFFF


class RecordSession(Protocol):
    """The session under a record-memory analyzer: a port it opens and closes, and the lock it holds."""

    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    @property
    def transport(self) -> Transport: ...

    def open(self) -> None: ...

    def close(self) -> None: ...


class RecordMemoryAnalyzer(ABC):
    """Base of a driver whose analyzer keeps completed measurements numbered 1, 2, 3, … (see
    `drivers.readings`). Subclasses set `driver`, `port` and `session` and implement `identify` (through
    `_same_device`), `latest_record` and `read_record`."""

    driver: ClassVar[str]
    port: str
    session: RecordSession
    _info: DeviceInfo | None = None

    def open(self) -> None:
        """Open the port and identify the device; a no-op while open and identified."""
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

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def info(self) -> DeviceInfo | None:
        """The last identification (None before the first successful `open`/`identify`)."""
        return self._info

    @abstractmethod
    def identify(self) -> DeviceInfo: ...

    def _same_device(self, info: DeviceInfo) -> DeviceInfo:
        """Remember `info`; ProtocolError if an earlier answer came from a device with another serial."""
        if self._info is not None and self._info.serial != info.serial:
            raise ProtocolError(f"{self.port}: expected device {self._info.serial}, found {info.serial}")
        self._info = info
        return info


def check_record_no(record_no: int) -> None:
    """ValueError unless `record_no` is a record number (1..2^32-1)."""
    if not 1 <= record_no <= MAX_RECORD_NO:
        raise ValueError(f"record numbers are 1..2^32-1, got {record_no}")


def probe(analyzer: RecordMemoryAnalyzer, what: str) -> DeviceInfo:
    """Identify the device behind `analyzer` (not yet open) and close it again; DeviceNotFound (naming
    `what`, e.g. "gold-serial analyzer") if none answers."""
    try:
        analyzer.session.open()
        return analyzer.identify()
    except DriverError as exc:
        raise DeviceNotFound(f"no {what} at {analyzer.port}: {exc}") from exc
    finally:
        analyzer.close()


class SerialGoldInstrument(InstrumentSettings):
    """Keys of a colloidal-gold reader on a serial port; a family adds `driver: Literal[…]` and `baudrate`."""

    port: str = Field(min_length=1, description="serial device, e.g. /dev/serial/by-id/… or /dev/ttyUSB0")
    default_kit: str | None = Field(default=None, description="kit used when the reader reports none")

    def default_kit_name(self) -> str | None:
        return self.default_kit
