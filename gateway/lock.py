"""Exclusive lock on a station's data directory: one `gateway run` per outbox.

Does: `DataDirLock.acquire(data_dir)` takes a non-blocking `flock` on `<data_dir>/gateway.lock` (created
0600) and writes the holder's PID into it; a second process — or a second service in the same process —
gets `DataDirLocked` naming that PID. The kernel drops the lock when its holder exits, however it exits
(SIGKILL included), so a stale lock file never blocks a restart.

Does not: lock against the short-lived CLI verbs that read or add to the outbox while a gateway runs
(`gateway status`, `gateway sample register`): SQLite serialises those; or work across machines (a data
dir on a network file system is not supported).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from gateway.errors import DataDirLocked, GatewayError

LOCK_NAME = "gateway.lock"


class DataDirLock:
    """A held lock; `release()` (idempotent) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        path = data_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise GatewayError(f"cannot create the data dir lock {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise DataDirLocked(
                f"数据目录 {data_dir} 已被另一个网关进程 ({who}) 使用 — another `gateway run` ({who}) "
                f"already uses the data dir {data_dir}; stop it first (two gateways on one outbox would "
                "read the same analyzers and fight over the MQTT client id)",
                holder_pid=holder,
            ) from exc
        except OSError as exc:
            os.close(fd)
            raise GatewayError(f"cannot lock the data dir {data_dir}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
