"""Exceptions of the station gateway.

    GatewayError
    ├── ConfigError          station TOML or a pushed StationConfig is invalid (message names the key)
    ├── OutboxError          the SQLite outbox failed
    │   ├── OutboxCorrupt    integrity check failed / not a database; the file was moved aside, not replaced
    │   └── OutboxFull       disk or database full (SQLITE_FULL): nothing was written, retry later
    ├── DataDirLocked        another `gateway run` holds the data dir's lock (its PID in the message)
    ├── RegistrationError    a sample registration is refused (unknown producer, bad field); nothing stored
    │   └── DuplicateCode    the sample code is already registered at this station
    ├── LinkError            the MQTT link cannot be set up (bad broker URL, unreadable TLS/credential files)
    └── OffloadError         the interpretation process failed on a batch or is gone (the worker interprets it)

Driver failures stay `drivers.errors.DriverError` and are handled by the worker supervisor (instrument
marked unavailable, reconnect with backoff); they never escape a worker thread.
"""

from __future__ import annotations

from pathlib import Path


class GatewayError(Exception):
    """Base of every error raised by `gateway` (outside `gateway.interpret`)."""


class ConfigError(GatewayError):
    """Invalid station configuration; the message names the offending key."""


class OutboxError(GatewayError):
    """The outbox database failed."""


class OutboxCorrupt(OutboxError):
    """The outbox database is corrupt; it was renamed to `moved_to` and kept for inspection."""

    def __init__(self, message: str, moved_to: Path | None = None) -> None:
        super().__init__(message)
        self.moved_to = moved_to


class OutboxFull(OutboxError):
    """The disk (or the configured outbox size cap) is full; the transaction was rolled back."""


class DataDirLocked(GatewayError):
    """Another gateway process holds the data directory's lock; `holder_pid` when it could be read."""

    def __init__(self, message: str, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class RegistrationError(GatewayError):
    """A sample registration is refused; the message says why (Chinese first). Nothing was stored."""


class DuplicateCode(RegistrationError):
    """The sample code is already registered at this station."""


class LinkError(GatewayError):
    """The MQTT link cannot be configured."""


class OffloadError(GatewayError):
    """The interpretation process could not interpret a batch (it failed, or is gone): the worker's thread
    interprets it."""
