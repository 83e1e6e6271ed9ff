"""Exceptions of the driver layer.

    DriverError
    ├── TransportError          the link failed (port gone, connection refused, unplugged)
    │   └── DriverTimeout       no (complete) answer within the configured timeout
    ├── FrameError              bytes arrived but do not form a valid frame
    │   └── ChecksumError       frame complete, checksum/CRC mismatch
    ├── ProtocolError           a valid frame with unexpected meaning (NAK after retries, wrong reply,
    │   │                       register values out of range)
    │   ├── ModbusExceptionResponse   the device answered a Modbus exception (busy, illegal address …)
    │   ├── UnexpectedReply     a well-formed reply that does not answer the request sent
    │   └── TornRead            the blocks of one multi-request read do not belong together
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


# Modbus exception codes (Modbus application protocol V1.1b3, 7).
MODBUS_EXCEPTION_NAMES: dict[int, str] = {
    0x01: "ILLEGAL_FUNCTION",
    0x02: "ILLEGAL_DATA_ADDRESS",
    0x03: "ILLEGAL_DATA_VALUE",
    0x04: "SLAVE_DEVICE_FAILURE",
    0x05: "ACKNOWLEDGE",
    0x06: "SLAVE_DEVICE_BUSY",
    0x08: "MEMORY_PARITY_ERROR",
    0x0A: "GATEWAY_PATH_UNAVAILABLE",
    0x0B: "GATEWAY_TARGET_NO_RESPONSE",
}


class ModbusExceptionResponse(ProtocolError):
    """The device answered with a Modbus exception response."""

    def __init__(self, function_code: int, exception_code: int) -> None:
        name = MODBUS_EXCEPTION_NAMES.get(exception_code, "UNKNOWN")
        super().__init__(f"FC {function_code:#04x}: exception {exception_code} ({name})")
        self.function_code = function_code
        self.exception_code = exception_code


class UnexpectedReply(ProtocolError):
    """A well-formed reply that does not answer the request sent (wrong function, size or echo) —
    typically a late RTU reply to an earlier request. Retried like a timeout."""


class TornRead(ProtocolError):
    """The blocks of one multi-request read do not belong together (the device changed them between
    requests). The session repeats the whole read."""


class DeviceNotFound(DriverError):
    """No known analyzer answered at this endpoint."""


class DriverConfigError(DriverError):
    """An instrument table names a driver that cannot be built (unknown family, unloadable plugin)."""
