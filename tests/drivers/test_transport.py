"""Transports: loopback pair, TCP against a loopback server, serial (pyserial) on a real pty."""

from __future__ import annotations

import os
import socket
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.errors import TransportError
from drivers.transport import (
    LoopbackTransport,
    SerialTransport,
    TcpTransport,
    Transport,
    by_id_alias,
    transport_for,
)
from tests.helpers import free_port, wait_for


def _read_exactly(t: Transport, n: int, timeout: float = 2.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got only {out!r} of {n} bytes within {timeout}s")
        out += t.read(n - len(out), remaining)
    return out


# ------------------------------------------------------------------ loopback
def test_loopback_pair_carries_bytes_both_ways_and_times_out() -> None:
    a, b = LoopbackTransport.pair()
    a.open()
    b.open()
    assert isinstance(a, Transport)
    a.write(b"hello")
    assert _read_exactly(b, 5) == b"hello"
    b.write(b"\x7e\x00\x7d")
    assert a.read(2, 1.0) == b"\x7e\x00"
    assert a.read(10, 1.0) == b"\x7d"
    t0 = time.monotonic()
    assert a.read(10, 0.05) == b""
    assert time.monotonic() - t0 >= 0.04
    b.write(b"stale")
    a.discard_input()
    assert a.read(10, 0.01) == b""


def test_loopback_close_is_an_unplug_for_the_peer() -> None:
    a, b = LoopbackTransport.pair()
    a.open()
    b.open()
    a.open()  # idempotent
    b.close()
    with pytest.raises(TransportError, match="peer closed"):
        a.read(1, 1.0)
    with pytest.raises(TransportError, match="peer closed"):
        a.write(b"x")
    with pytest.raises(TransportError, match="not open"):
        b.read(1, 0.01)
    with pytest.raises(TransportError, match="closed"):
        b.open()


def test_loopback_read_wakes_up_when_data_arrives() -> None:
    a, b = LoopbackTransport.pair()
    a.open()
    b.open()
    timer = threading.Timer(0.05, b.write, args=(b"late",))
    timer.start()
    try:
        t0 = time.monotonic()
        assert a.read(10, 5.0) == b"late"
        assert time.monotonic() - t0 < 2.0
    finally:
        timer.cancel()
        timer.join()


# ------------------------------------------------------------------ TCP
@pytest.fixture
def tcp_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback listener; accepted connections are handed to the test."""
    port = free_port()
    srv = socket.create_server(("127.0.0.1", port))
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conns.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port, conns
    finally:
        stop.set()
        thread.join(5)
        srv.close()
        for c in conns:
            c.close()


def test_tcp_transport_round_trip_and_peer_close(tcp_server: tuple[int, list[socket.socket]]) -> None:
    port, conns = tcp_server
    t = transport_for(f"tcp://127.0.0.1:{port}")
    assert isinstance(t, TcpTransport)
    assert t.name == f"tcp://127.0.0.1:{port}"
    t.open()
    t.open()
    try:
        wait_for(lambda: conns, 5, "the server did not accept the connection")
        peer = conns[0]
        t.write(b"\x7e\x01")
        peer.settimeout(2)
        assert peer.recv(10) == b"\x7e\x01"
        peer.sendall(b"reply")
        assert _read_exactly(t, 5) == b"reply"
        assert t.read(10, 0.02) == b""
        t.discard_input()  # nothing pending: returns at once, the link stays usable
        peer.sendall(b"more")
        assert _read_exactly(t, 4) == b"more"
        peer.close()
        with pytest.raises(TransportError, match="closed the connection"):
            t.read(10, 2.0)
    finally:
        t.close()
    assert not t.is_open


def test_tcp_connection_refused_is_a_transport_error() -> None:
    t = TcpTransport("127.0.0.1", free_port(), connect_timeout=1.0)
    with pytest.raises(TransportError, match="cannot connect"):
        t.open()
    with pytest.raises(TransportError, match="not open"):
        t.write(b"x")


def test_transport_for_rejects_bad_tcp_urls() -> None:
    with pytest.raises(ValueError, match="tcp://host:port"):
        transport_for("tcp://nohost")
    assert isinstance(transport_for("/dev/serial/by-id/usb-X"), SerialTransport)


# ------------------------------------------------------------------ serial on a real pty
@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    try:
        yield master, path
    finally:
        os.close(master)


def test_serial_transport_over_a_pty(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    t = SerialTransport(path, baudrate=115200)
    t.open()
    t.open()
    try:
        t.write(b"\x7e\xff\x01\x20")
        assert os.read(master, 100) == b"\x7e\xff\x01\x20"
        os.write(master, b"\x00\x11\x13\x7e")  # XON/XOFF bytes pass through: no software flow control
        assert _read_exactly(t, 4) == b"\x00\x11\x13\x7e"
        t0 = time.monotonic()
        assert t.read(10, 0.05) == b""
        assert time.monotonic() - t0 >= 0.04
    finally:
        t.close()
    t.close()
    with pytest.raises(TransportError, match="not open"):
        t.read(1, 0.01)


def test_serial_transport_fails_with_transport_error_when_the_pty_vanishes() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    t = SerialTransport(path)
    t.open()
    try:
        os.close(master)  # unplug
        with pytest.raises(TransportError):
            t.read(10, 1.0)
        with pytest.raises(TransportError):
            t.write(b"x" * 64)
    finally:
        t.close()


def test_serial_transport_missing_port() -> None:
    with pytest.raises(TransportError, match="cannot open"):
        SerialTransport("/dev/serial/by-id/usb-nothing-here").open()


def test_by_id_alias_finds_the_stable_name(tmp_path: Path, pty_pair: tuple[int, str]) -> None:
    _, path = pty_pair
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-Other_Device_123-if00-port0").symlink_to("/dev/null")
    alias = by_id / "usb-Kuaijian_KJ-G8_GR-0001-if00-port0"
    alias.symlink_to(path)
    assert by_id_alias(path, str(by_id)) == str(alias)
    assert by_id_alias("/dev/zero", str(by_id)) is None
    assert by_id_alias(path, str(tmp_path / "missing")) is None
    # the alias is what a gateway opens; it works like the device path itself
    t = SerialTransport(str(alias))
    t.open()
    t.close()
