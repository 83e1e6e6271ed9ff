"""Shared test helpers: free loopback ports, bounded waits, a real Mosquitto broker process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float, message: str, interval: float = 0.02) -> T:
    """Poll `predicate` until it returns a truthy value; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s: {message}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Mosquitto:
    """A real Mosquitto broker on a random loopback port, restartable (same port) for outage tests."""

    workdir: Path
    port: int = field(default_factory=free_port)
    persistence: bool = False
    extra_conf: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 100000",
            self.extra_conf,
        ]
        conf.write_text("\n".join(lines) + "\n")
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        wait_for(lambda: port_open(self.port), 10, f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def make_test_pki(d: Path) -> None:
    """A throw-away CA (ca.pem) and a server certificate for 127.0.0.1/localhost (server.pem, server.key)
    in `d`, made with the openssl command line, for TLS tests against a local Mosquitto."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kj-test-ca"
    )
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
    )  # fmt: skip


def tls_mosquitto_conf(d: Path, password_file: Path | None = None) -> str:
    """Mosquitto config lines for a TLS listener with the certificates of `make_test_pki(d)`."""
    import os

    lines = [f"cafile {d / 'ca.pem'}", f"certfile {d / 'server.pem'}", f"keyfile {d / 'server.key'}"]
    if password_file is not None:
        lines += [f"password_file {password_file}", "allow_anonymous false"]
    if os.geteuid() == 0:
        # As root, mosquitto drops to user "mosquitto", which cannot read pytest's private tmp dir.
        lines.append("user root")
    return "\n".join(lines)
