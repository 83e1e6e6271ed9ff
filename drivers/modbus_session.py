"""Modbus session: one link (TCP or RTU on a serial line) to one unit, over the pymodbus sync client.

Does: the one place the enzyme driver's requests are retried, timed out, reconnected and translated
into `drivers.errors`. A call is a *transaction* — one request, or several whose answers must belong
together (a run page) — and a failed transaction is repeated whole under the shared policy of
`drivers.backoff.retrying`: lost, corrupt or mismatched replies and torn reads are repeated at once
under the lock; a link that cannot be (re)opened, or a busy device, is waited for with the lock
released. pymodbus runs with retries=0 so this is the only retry loop.

Does not: know any register map (`drivers.enzyme_map`), decode values (`drivers.enzyme_codec`) or
retry across calls (the gateway worker does that, with the same `Backoff`).
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from drivers.backoff import Again, RetryStats, retrying
from drivers.enzyme_codec import MAX_WRITE_REGISTERS, plan_reads
from drivers.errors import (
    DriverError,
    DriverTimeout,
    FrameError,
    ModbusExceptionResponse,
    TornRead,
    TransportError,
    UnexpectedReply,
)
from drivers.timeouts import Timeouts

# Exception codes that mean "try again later" (busy / acknowledged, still working) → waited for.
RETRYABLE_EXCEPTIONS: Final = frozenset({0x05, 0x06})

T = TypeVar("T")
if TYPE_CHECKING:  # pymodbus (and the asyncio it brings, ~3 MiB) is imported when a session connects
    from pymodbus.client import ModbusSerialClient, ModbusTcpClient

    _Client = ModbusTcpClient | ModbusSerialClient


def _close_client(client: _Client) -> None:
    client.close()  # type: ignore[no-untyped-call]  # pymodbus leaves close() unannotated


def _caused(error: DriverError, cause: BaseException) -> DriverError:
    error.__cause__ = cause
    return error


def _check_reply(rsp: object, function_code: int) -> None:
    """Exception responses → ModbusExceptionResponse; a reply to another function → UnexpectedReply
    (e.g. a late RTU reply to an earlier request, which carries no transaction id)."""
    fc = int(getattr(rsp, "function_code", -1))
    if fc == function_code | 0x80:
        raise ModbusExceptionResponse(function_code, int(getattr(rsp, "exception_code", 0)))
    if fc != function_code:
        raise UnexpectedReply(f"reply has function code {fc:#04x}, expected {function_code:#04x}")


class Registers:
    """Holding-register access inside one transaction (one attempt; no retries of its own)."""

    def __init__(self, client: _Client, unit: int) -> None:
        self._client = client
        self._unit = unit

    def read(self, address: int, count: int) -> list[int]:
        """Read `count` holding registers from `address` (FC 03), in ≤125-register requests."""
        out: list[int] = []
        for a, n in plan_reads(address, count):
            rsp = self._client.read_holding_registers(a, count=n, device_id=self._unit)
            _check_reply(rsp, 0x03)
            regs = list(getattr(rsp, "registers", []))
            if len(regs) != n:
                raise UnexpectedReply(f"asked {n} registers at {a}, got {len(regs)}")
            out.extend(regs)
        return out

    def write(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers (FC 06 for one, FC 16 for several)."""
        vals = [int(v) for v in values]
        if not 1 <= len(vals) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"write of {len(vals)} registers outside 1..{MAX_WRITE_REGISTERS}")
        if len(vals) == 1:
            rsp = self._client.write_register(address, vals[0], device_id=self._unit)
            _check_reply(rsp, 0x06)
            echoed = [getattr(rsp, "address", None), *getattr(rsp, "registers", [])[:1]]
            if echoed != [address, vals[0]]:
                raise UnexpectedReply(f"write {address}: echo {echoed} does not match the request")
        else:
            rsp = self._client.write_registers(address, vals, device_id=self._unit)
            _check_reply(rsp, 0x10)
            if getattr(rsp, "address", None) != address or getattr(rsp, "count", None) != len(vals):
                raise UnexpectedReply(f"write {address}+{len(vals)}: reply does not match the request")

    def device_identification(self) -> dict[int, str]:
        """FC 43/14 Read Device Identification, basic objects (0 vendor, 1 product code, 2 revision)."""
        rsp = self._client.read_device_information(device_id=self._unit)
        _check_reply(rsp, 0x2B)
        info = getattr(rsp, "information", {})
        return {
            int(k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
            for k, v in info.items()
        }


class ModbusSession:
    """One Modbus link (TCP or RTU) to one unit: retries, timeouts, reconnect, error translation.

    Thread-safe: one transaction at a time holds the lock; a transaction waiting to reconnect (or for
    a busy device) does not. `close()` ends such a wait at once.
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 502,
        serial_port: str | None = None,
        baudrate: int = 19200,
        unit: int = 1,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 — frozen, immutable default
    ) -> None:
        if (host is None) == (serial_port is None):
            raise ValueError("give exactly one of host= or serial_port=")
        if not 0 <= unit <= 247:
            raise ValueError("unit must be 0..247")
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.unit = unit
        self.timeouts = timeouts
        self.lock = threading.RLock()
        self._closed = threading.Event()
        self._client: _Client | None = None
        self.stats = RetryStats()  # counters, for diagnostics and tests
        self.requests = 0
        self.reconnects = 0
        self.rereads = 0  # transactions repeated because their blocks did not belong together

    @property
    def endpoint(self) -> str:
        if self.host is not None:
            return f"tcp://{self.host}:{self.port}"
        return f"rtu://{self.serial_port}"

    def _make_client(self) -> _Client:
        from pymodbus.client import ModbusSerialClient, ModbusTcpClient

        if self.host is not None:
            return ModbusTcpClient(
                self.host, port=self.port, timeout=self.timeouts.response_s, retries=0, reconnect_delay=0
            )
        assert self.serial_port is not None  # noqa: S101 — guaranteed by __init__
        return ModbusSerialClient(
            self.serial_port, baudrate=self.baudrate, timeout=self.timeouts.response_s, retries=0
        )

    def open(self) -> None:
        """Connect now (TransportError if the endpoint is unreachable)."""
        self._closed.clear()
        with self.lock:
            self._connect()

    def close(self) -> None:
        """Close the link; a call waiting to reconnect gives up with `TransportError` at once."""
        self._closed.set()
        with self.lock:
            client, self._client = self._client, None
            if client is not None:
                _close_client(client)

    def _connect(self) -> _Client:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is None:
            self._client = self._make_client()
        if not self._client.connect():
            _close_client(self._client)
            self._client = None
            raise TransportError(f"cannot connect to {self.endpoint}")
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            _close_client(self._client)
            self._client = None
        self.reconnects += 1

    def transaction(self, what: str, op: Callable[[Registers], T]) -> T:
        """Run `op` (one or several requests) as one attempt, repeated whole on failure.

        Raises the last attempt's error: `TransportError` (link down), `DriverTimeout` (no valid
        reply), `ModbusExceptionResponse`, `UnexpectedReply`, `TornRead`, or a codec's `FrameError`.
        """
        return retrying(
            self.lock,
            lambda: self._attempt(what, op),
            self.timeouts,
            cancel=self._closed,
            stats=self.stats,
        )

    def _attempt(self, what: str, op: Callable[[Registers], T]) -> T:
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        self.requests += 1
        try:
            client = self._connect()
        except TransportError as exc:
            raise Again(exc, wait=True) from exc
        try:
            return op(Registers(client, self.unit))
        except ModbusExceptionResponse as exc:
            if exc.exception_code not in RETRYABLE_EXCEPTIONS:
                raise
            raise Again(exc, wait=True) from exc
        except ConnectionException as exc:
            self._drop()
            err = TransportError(f"{what} on {self.endpoint}: connection failed: {exc}")
            raise Again(_caused(err, exc), wait=False) from exc
        except ModbusIOException as exc:
            # no (valid) answer in time: a timeout, a CRC-failed frame, or a mismatched reply.
            # Serial lines stay open; TCP is reopened so a late reply cannot be mismatched.
            if self.host is not None:
                self._drop()
            else:
                self._quiet_line()
            err = DriverTimeout(f"{what} on {self.endpoint}: no valid reply: {exc}")
            raise Again(_caused(err, exc), wait=False) from exc
        except (ModbusException, OSError) as exc:
            self._drop()
            err = TransportError(f"{what} on {self.endpoint}: {exc}")
            raise Again(_caused(err, exc), wait=False) from exc
        except (FrameError, TornRead) as exc:
            self.rereads += 1
            if self.host is None:
                self._quiet_line()
            raise Again(exc, wait=False) from exc
        except UnexpectedReply as exc:
            if self.host is None:
                self._quiet_line()
            raise Again(exc, wait=False) from exc

    def _quiet_line(self) -> None:
        """After a missed reply on a serial line, drain it until no byte arrives for `inter_byte_s`
        (at most `response_s`), so a late reply cannot be taken for the answer to the next request
        (RTU frames carry no transaction id). Waits on the line, not on a clock."""
        client = self._client
        sock = getattr(client, "socket", None) if client is not None else None
        if sock is None:
            return
        deadline = time.monotonic() + self.timeouts.response_s
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([sock.fileno()], [], [], self.timeouts.inter_byte_s)
                if not ready:
                    return
                if not sock.read(max(1, sock.in_waiting)):
                    break  # ready but no data: the line hung up (unplugged)
        except (OSError, ValueError, AttributeError):
            pass  # the port is gone; dropped below
        self._drop()

    def read(self, address: int, count: int) -> list[int]:
        """Read `count` holding registers from `address` as one transaction."""
        return self.transaction(f"read {address}+{count}", lambda regs: regs.read(address, count))

    def write(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers (FC 06 for one, FC 16 for several) as one transaction."""
        self.transaction(f"write {address}", lambda regs: regs.write(address, values))

    def device_identification(self) -> dict[int, str]:
        """FC 43/14 Read Device Identification, basic objects (0 vendor, 1 product code, 2 revision)."""
        return self.transaction("read device identification", lambda regs: regs.device_identification())
