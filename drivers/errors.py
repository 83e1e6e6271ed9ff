"""Exceptions of the driver layer.

    DriverError
    ├── TransportError          the link failed (port gone, connection refused, unplugged)
    │   └── DriverTimeout       no (complete) answer within the configured timeout
    ├── FrameError              bytes arrived but do not form a valid frame
    │   └── ChecksumError       frame complete, checksum/CRC mismatch
    ├── ProtocolError           a valid frame with unexpected meaning (NAK after retries, wrong reply,
    │                           Modbus exception response, register values out of range)
    ├── DeviceNotFound          probing an endpoint found no known analyzer
    └── DriverConfigError       an instrument table names a driver that cannot be built

Codecs raise FrameError/ChecksumError only; the session layer translates transport failures with
``raise ... from exc`` and owns retries. Nothing above the session layer sees pyserial/pymodbus errors.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error raised by `drivers`."""


class TransportError(DriverError):
    """The underlying link failed."""


class DriverTimeout(TransportError):
    """No complete answer within the timeout."""


class FrameError(DriverError):
    """Bytes that do not form a valid frame."""


class ChecksumError(FrameError):
    """A complete frame whose checksum/CRC does not match."""


class ProtocolError(DriverError):
    """A valid frame whose meaning is wrong or unexpected."""


class DeviceNotFound(DriverError):
    """No known analyzer answered at this endpoint."""


class DriverConfigError(DriverError):
    """An instrument table names a driver that cannot be built (unknown family, unloadable plugin)."""
