"""Byte transports under the driver codecs: serial (pyserial), TCP (serial servers), in-memory loopback.

Does: a small `Transport` protocol — open/close/write/read-with-timeout/discard_input — and three
implementations. Every failure of the underlying link is raised as `drivers.errors.TransportError`
(translated with ``raise ... from exc``); a read that simply times out returns ``b""``.
`transport_for(port)` picks the implementation from a port string, so a simulator and a real port are
interchangeable by configuration (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, ``tcp://host:port``).

Does not: frame, retry, reconnect or lock — that is the session layer of each protocol.
"""

from __future__ import annotations

import os
import select
import socket
import termios
import threading
import time
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import serial

from drivers.errors import TransportError

# Everything pyserial lets through on POSIX: its own exception, raw OS errors (ioctl on a vanished
# device) and termios.error (tcsetattr on a hung-up tty), which is not an OSError.
_SERIAL_ERRORS: tuple[type[Exception], ...] = (serial.SerialException, OSError, termios.error)
_SERIAL_OPEN_ERRORS: tuple[type[Exception], ...] = (*_SERIAL_ERRORS, ValueError)  # ValueError: bad settings


@runtime_checkable
class Transport(Protocol):
    """A bidirectional byte stream.

    `read` waits at most `timeout` seconds for the first byte and returns whatever is available then
    (up to `max_bytes`), or ``b""`` on timeout. Link failures raise `TransportError`. `open` on an open
    transport is a no-op; `close` on a closed one too.
    """

    @property
    def name(self) -> str: ...

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def read(self, max_bytes: int, timeout: float) -> bytes: ...

    def discard_input(self) -> None: ...


class SerialTransport:
    """A serial port via pyserial (POSIX): a tty, a USB adapter, a /dev/serial/by-id link or a pty slave.

    The path is opened as given; a /dev/serial/by-id/… symlink is resolved by the OS at every open, so
    reopening after an unplug/replug finds the device under its new /dev/ttyUSBn. The port is opened
    exclusively (flock) so two processes cannot interleave frames on one line.
    """

    def __init__(self, path: str, *, baudrate: int = 115200, write_timeout: float = 2.0) -> None:
        self._path = path
        self._baudrate = baudrate
        self._write_timeout = write_timeout
        self._ser: serial.Serial | None = None

    @property
    def name(self) -> str:
        return self._path

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def open(self) -> None:
        if self._ser is not None:
            return
        try:
            ser = serial.Serial(
                port=self._path,
                baudrate=self._baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=0,
                write_timeout=self._write_timeout,
                exclusive=True,
            )
            ser.reset_input_buffer()
        except _SERIAL_OPEN_ERRORS as exc:
            raise TransportError(f"cannot open serial port {self._path}: {exc}") from exc
        self._ser = ser

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except _SERIAL_ERRORS:
                pass  # the port is gone already (unplugged); nothing left to release

    def _port(self) -> serial.Serial:
        if self._ser is None:
            raise TransportError(f"serial port {self._path} is not open")
        return self._ser

    def write(self, data: bytes) -> None:
        ser = self._port()
        try:
            ser.write(data)
            ser.flush()
        except _SERIAL_ERRORS as exc:
            raise TransportError(f"write to {self._path} failed: {exc}") from exc

    def read(self, max_bytes: int, timeout: float) -> bytes:
        ser = self._port()
        try:
            # Our own select(): changing pyserial's timeout per call would re-run tcsetattr every time.
            ready, _, _ = select.select([ser.fileno()], [], [], max(timeout, 0.0))
            if not ready:
                return b""
            # timeout=0: read what is there; a hung-up tty (unplugged) is "ready" and fails with EIO.
            data = ser.read(max(1, min(ser.in_waiting, max_bytes)))
        except _SERIAL_ERRORS as exc:
            raise TransportError(f"read from {self._path} failed: {exc}") from exc
        if not data:
            raise TransportError(f"read from {self._path} failed: port ready but no data (unplugged?)")
        return bytes(data)

    def discard_input(self) -> None:
        try:
            self._port().reset_input_buffer()
        except _SERIAL_ERRORS as exc:
            raise TransportError(f"flush of {self._path} failed: {exc}") from exc


class TcpTransport:
    """A TCP byte stream, e.g. an RS-232 serial device server (transparent mode) at the station."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 3.0) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._sock: socket.socket | None = None

    @property
    def name(self) -> str:
        return f"tcp://{self._host}:{self._port}"

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.name}: {exc}") from exc
        self._sock = sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise TransportError(f"{self.name} is not open")
        return self._sock

    def write(self, data: bytes) -> None:
        sock = self._socket()
        try:
            sock.settimeout(self._connect_timeout)
            sock.sendall(data)
        except OSError as exc:
            raise TransportError(f"send to {self.name} failed: {exc}") from exc

    def read(self, max_bytes: int, timeout: float) -> bytes:
        sock = self._socket()
        try:
            sock.settimeout(max(timeout, 1e-6))
            data = sock.recv(max_bytes)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise TransportError(f"receive from {self.name} failed: {exc}") from exc
        if not data:
            raise TransportError(f"{self.name} closed the connection")
        return data

    def discard_input(self) -> None:
        sock = self._socket()
        try:
            sock.setblocking(False)
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    return
                if not data:
                    raise TransportError(f"{self.name} closed the connection")
        except OSError as exc:
            raise TransportError(f"flush of {self.name} failed: {exc}") from exc
        finally:
            sock.setblocking(True)


class _Pipe:
    """One direction of a loopback link."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.closed = False


class LoopbackTransport:
    """In-memory, thread-safe byte link; `pair()` returns its two connected ends (tests, null modem).

    Closing one end makes the other end's reads and writes fail with `TransportError`, like an unplug.
    """

    def __init__(self, rx: _Pipe, tx: _Pipe, name: str) -> None:
        self._rx = rx
        self._tx = tx
        self._name = name
        self._open = False

    @classmethod
    def pair(cls, name: str = "loop") -> tuple[LoopbackTransport, LoopbackTransport]:
        a_to_b, b_to_a = _Pipe(), _Pipe()
        return cls(b_to_a, a_to_b, f"{name}:a"), cls(a_to_b, b_to_a, f"{name}:b")

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if self._rx.closed or self._tx.closed:
            raise TransportError(f"{self._name}: the link was closed")
        self._open = True

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for pipe in (self._rx, self._tx):
            with pipe.cond:
                pipe.closed = True
                pipe.cond.notify_all()

    def _check(self) -> None:
        if not self._open:
            raise TransportError(f"{self._name} is not open")

    def write(self, data: bytes) -> None:
        self._check()
        with self._tx.cond:
            if self._tx.closed:
                raise TransportError(f"{self._name}: peer closed the link")
            self._tx.buf.extend(data)
            self._tx.cond.notify_all()

    def read(self, max_bytes: int, timeout: float) -> bytes:
        self._check()
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._rx.cond:
            while not self._rx.buf:
                if self._rx.closed:
                    raise TransportError(f"{self._name}: peer closed the link")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                self._rx.cond.wait(remaining)
            data = bytes(self._rx.buf[:max_bytes])
            del self._rx.buf[:max_bytes]
            return data

    def discard_input(self) -> None:
        self._check()
        with self._rx.cond:
            self._rx.buf.clear()


BY_ID_DIR = "/dev/serial/by-id"


def by_id_alias(path: str, by_id_dir: str = BY_ID_DIR) -> str | None:
    """The stable /dev/serial/by-id/… name of a serial device path (e.g. /dev/ttyUSB0), if udev made one.

    Configure gateways with this name: it survives replugging and re-enumeration. None when there is no
    alias (built-in UARTs, ptys, or no udev).
    """
    try:
        names = sorted(os.listdir(by_id_dir))
    except OSError:
        return None
    target = os.path.realpath(path)
    for name in names:
        alias = os.path.join(by_id_dir, name)
        if os.path.realpath(alias) == target:
            return alias
    return None


def transport_for(port: str, *, baudrate: int = 115200) -> Transport:
    """The transport a port string names: ``tcp://host:port`` → TCP, anything else is a serial path."""
    if port.startswith("tcp://"):
        parts = urlsplit(port)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"bad TCP port URL {port!r}; expected tcp://host:port")
        return TcpTransport(parts.hostname, parts.port)
    return SerialTransport(port, baudrate=baudrate)
