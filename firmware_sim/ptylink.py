"""A simulated instrument's serial cable: a real pseudo-terminal served from one thread.

Does: own a pty master, keep a stable symlink to the current slave (like /dev/serial/by-id/…), feed
every byte the host writes to a `Device` and write back what it answers (each answer `delay_s()`
late), and simulate unplug (the pty disappears, open slaves get EIO, the link is removed) and replug
(a new pty, the link follows). Serving uses select() with a bounded timeout and stops cleanly; an
exception in the device is recorded in `errors`, never lost.

Does not: know any protocol (the `Device` does), or open the slave (the driver under test does).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import tempfile
import threading
import time
import tty
from typing import Protocol


class Device(Protocol):
    """The instrument behind the cable: bytes in → byte strings out; `reset_link` on every plug-in."""

    def receive(self, data: bytes) -> list[bytes]: ...

    def reset_link(self) -> None: ...

    def reply_delay_s(self) -> float: ...


class PtyLink:
    """Serve `device` on a pty. `start()` returns the slave path; `link_path` is the stable name."""

    def __init__(self, device: Device, *, name: str, link_path: str | None = None) -> None:
        self._device = device
        self._name = name
        self._requested_link = link_path
        self._link_dir: str | None = None
        self._link: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self.errors: list[BaseException] = []

    @property
    def path(self) -> str:
        """The current pty slave (e.g. /dev/pts/7); changes on every replug."""
        if self._path is None:
            raise RuntimeError("simulator is not plugged in")
        return self._path

    @property
    def link_path(self) -> str:
        """Stable symlink to the current slave; configure the gateway with this."""
        if self._link is None:
            raise RuntimeError("simulator was not started")
        return self._link

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def start(self) -> str:
        if self._link is None:
            if self._requested_link is None:
                self._link_dir = tempfile.mkdtemp(prefix="kuaijian-sim-")
                self._link = os.path.join(self._link_dir, self._name)
            else:
                self._link = self._requested_link
        if not self.plugged:
            self._plug()
        return self.path

    def stop(self) -> None:
        self._unplug()
        if self._link_dir is not None:
            shutil.rmtree(self._link_dir, ignore_errors=True)
            self._link_dir = None
            self._link = None

    def unplug(self) -> None:
        self._unplug()

    def replug(self) -> str:
        self._unplug()
        self._plug()
        return self.path

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._path = os.ttyname(slave)
        if self._link is not None:
            if os.path.lexists(self._link) and not os.path.islink(self._link):
                os.close(master)
                os.close(slave)
                self._master = self._slave = self._path = None
                raise FileExistsError(f"{self._link} exists and is not a symlink; refusing to replace it")
            tmp = f"{self._link}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self._path, tmp)
            os.replace(tmp, self._link)
        self._device.reset_link()
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"sim-{self._name}", daemon=True)
        self._thread.start()

    def _unplug(self) -> None:
        if self._thread is not None:
            self._stop.set()
            if self._wake_w is not None:
                os.write(self._wake_w, b"x")
            self._thread.join(5)
            if self._thread.is_alive():
                raise RuntimeError(f"simulator thread {self._name} did not stop within 5 s")
            self._thread = None
        if self._link is not None and self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._link)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = None
        self._path = None

    def _serve(self) -> None:
        master, wake = self._master, self._wake_r
        if master is None or wake is None:
            raise RuntimeError("_serve started before _plug")
        pending: list[tuple[float, bytes]] = []
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = 0.2 if not pending else max(0.0, min(0.2, pending[0][0] - now))
                readable, _, _ = select.select([master, wake], [], [], timeout)
                if wake in readable:
                    os.read(wake, 64)
                if master in readable:
                    try:
                        data = os.read(master, 4096)
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        data = b""  # no slave open (cannot happen while we hold one); do not spin
                        self._stop.wait(0.05)
                    if data:
                        due = time.monotonic() + self._device.reply_delay_s()
                        pending.extend((due, out) for out in self._device.receive(data))
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    _, out = pending.pop(0)
                    self._write(master, out)
        except Exception as exc:  # noqa: BLE001 - recorded for tests/CLI; the thread must not die silently
            self.errors.append(exc)

    def _write(self, master: int, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view:
            try:
                n = os.write(master, view)
            except BlockingIOError:
                if time.monotonic() > deadline or self._stop.is_set():
                    return  # nobody reads the line; a real UART would drop the bytes too
                select.select([], [master], [], 0.05)
                continue
            view = view[n:]
