"""Disk space of the outbox: the room check before new results, and the reserve that keeps acks possible.

Does:
- `SpaceGuard.configure()` — the cap `storage.max_db_mb` covers database AND WAL: the WAL is checkpointed
  at half its limit and truncated to it (a quarter of the cap, at most `WAL_LIMIT`; without a cap a
  sixteenth of the free disk, at most `WAL_LIMIT`, followed by `room()` as the disk fills), the database is
  capped by SQLite (`max_page_count`) at the rest; reaching it is SQLITE_FULL → `OutboxFull`.
- `SpaceGuard.room()` — before results are added: keep the WAL within its limit, re-create the reserve when
  space came back, and raise `OutboxFull` when adding would eat into the free disk the reserve stands for —
  unless pages freed by acks inside the database (or an empty outbox) can take the batch; `fits()` — the
  same for a transaction larger than that room (a group commit, raw signals), once its payloads are known.
  So the outbox stops growing *before* the disk is full.
- the reserve: a pre-allocated file `<db>.reserve` (`storage.reserve_mb`). When the disk is (nearly) full —
  filled by something else, or before this guard existed — `essential()` deletes it and checkpoints the WAL
  before an ack is applied, so deleting acknowledged rows (which writes to the WAL, and whose checkpoint may
  extend the database file) always finds room. It is re-created once the disk has room for it again.
- `sizes()`: database, WAL and free-page bytes for the status and the tests.

Does not: decide what is deleted or kept (the outbox does), or free anything but its own reserve.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import OutboxFull

log = logging.getLogger("gateway.outbox")

WAL_LIMIT = 32 * 1024 * 1024
"""Bytes the WAL may hold: at most a quarter of `storage.max_db_mb`, and without a cap at most a sixteenth of
the free disk (`MIN_WAL` at least), followed as the disk fills. SQLite checkpoints at half of it, and each
checkpoint is two fsyncs and a copy of its pages inside the transaction that crossed it, holding the outbox's
write lock: a WAL of a few MB takes them ~10× less often than one of 512 KB under a backlog, and one of 32 MB
8× less often again — and copies a page an enqueue filled and an ack emptied meanwhile once, not twice
(measured under a backlog of 40,000 results: the acks' and the enqueues' hold of the write lock 20-40 % less
than at 4 MB, three alternated benchmark pairs 23.9/24.3/24.5 % of the raw link against 22.1/20.9/22.3 %)."""
MIN_WAL = 64 * 1024
ROOM = 64 * 1024  # room wanted for one more batch of results (an eighth of storage.max_db_mb if smaller)
ROW_OVERHEAD = 256  # bytes a result adds besides its payload: its key row and its index entries
RESERVE_SUFFIX = ".reserve"


@dataclass(frozen=True, slots=True)
class Sizes:
    db: int
    wal: int
    free_pages: int  # bytes of database pages freed by acks, reused before the file grows
    disk_free: int


class SpaceGuard:
    """Space policy of one outbox database (used under the outbox's lock)."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        max_bytes: int | None,
        reserve_bytes: int,
        disk_free: Callable[[Path], int] | None = None,
    ) -> None:
        self.path = path
        self.wal = path.with_name(path.name + "-wal")
        self.reserve = path.with_name(path.name + RESERVE_SUFFIX)
        self._conn = conn
        self.max_bytes = max_bytes
        self._reserve_asked = reserve_bytes
        self.reserve_bytes = reserve_bytes
        self.wal_limit = WAL_LIMIT if max_bytes is None else max(16 * 1024, min(WAL_LIMIT, max_bytes // 4))
        self._page = 4096
        self.room_bytes = ROOM if max_bytes is None else max(4096, min(ROOM, max_bytes // 8))
        self._disk_free = disk_free or (lambda p: shutil.disk_usage(p).free)
        self._measured: Sizes | None = None  # what the last `room` measured (under the outbox's lock)

    def configure(self) -> None:
        """Bound the WAL (SQLite checkpoints it at half `wal_limit` and truncates it to `wal_limit`) and
        cap the database at `max_bytes` less what the WAL may hold."""
        conn = self._conn
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._page = page
        # the reserve holds as many pages as it was sized for at 4096 (an ack writes whole pages to the WAL)
        self.reserve_bytes = self._reserve_asked * max(1, page // 4096)
        if self.max_bytes is None:
            self.wal_limit = self._uncapped_wal(self._free())
        self._bound_wal()
        if self.max_bytes is not None:
            conn.execute(f"PRAGMA max_page_count = {max(16, (self.max_bytes - self.wal_limit) // page)}")

    def _bound_wal(self) -> None:
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {max(4, self.wal_limit // self._page // 2)}")
        self._conn.execute(f"PRAGMA journal_size_limit = {self.wal_limit}")

    @staticmethod
    def _uncapped_wal(disk_free: int) -> int:
        return max(MIN_WAL, min(WAL_LIMIT, disk_free // 16))

    # ------------------------------------------------------------------ measurements
    def sizes(self, disk_free: int | None = None) -> Sizes:
        """`disk_free`: the free disk just measured by the caller (measured here when None)."""
        # (the page size read by `configure`: fixed once the database exists, WAL mode cannot change it)
        free_pages = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        free = self._free() if disk_free is None else disk_free
        return Sizes(_size(self.path), _size(self.wal), free_pages * self._page, free)

    def _free(self) -> int:
        try:
            return self._disk_free(self.path.parent)
        except OSError:
            return 0

    # ------------------------------------------------------------------ before adding results
    def room(self) -> None:
        """Raise `OutboxFull` unless one more batch fits without touching the reserve or the cap."""
        free = self._free()
        if self.max_bytes is None:  # the WAL's bound follows the free disk
            limit = self._uncapped_wal(free)
            if limit != self.wal_limit:
                self.wal_limit = limit
                self._bound_wal()
        if _size(self.wal) > self.wal_limit:
            self.checkpoint()
            free = self._free()  # the truncated WAL gave some back
        sizes = self.sizes(free)
        self.ensure_reserve(sizes.disk_free)
        self._measured = sizes
        self._refuse_unless(self.room_bytes, sizes)

    def fits(self, rows: int, payload_bytes: int) -> None:
        """Inside a transaction that adds `rows` results of `payload_bytes` in all, before it writes them:
        raise `OutboxFull` unless they fit as `room` counts (`room` made sure of `room_bytes` already; a
        group commit of many batches, or results with their raw signal, may need many times more — the
        WAL frames of the table's and the indexes' pages). Refused here, nothing is written: the caller
        rolls back and may try less at a time. The sizes `room` measured at the start of the transaction
        are used (nothing was written since)."""
        need = payload_bytes * 5 // 4 + rows * ROW_OVERHEAD + 4 * self._page
        if need > self.room_bytes:
            self._refuse_unless(need, self._measured if self._measured is not None else self.sizes())

    def _refuse_unless(self, need: int, sizes: Sizes) -> None:
        held = self.reserve_bytes if not self.reserve.exists() else 0
        if sizes.disk_free >= held + need:
            return
        if sizes.free_pages >= need or self._conn.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is None:
            return  # acks freed pages inside the database: new rows reuse them
        raise OutboxFull(
            f"outbox full while enqueueing results: disk almost full ({sizes.disk_free} bytes free, "
            f"{need} wanted; the outbox keeps {self.reserve_bytes} bytes in reserve for applying acks)"
            " — free disk space"
        )

    # ------------------------------------------------------------------ before deleting acked rows
    def essential(self) -> None:
        """Before a write that must succeed on a full disk (an ack): when the disk has less free space than
        the reserve, give the reserve back to the file system and checkpoint the WAL."""
        if self._free() >= max(self.reserve_bytes, self.room_bytes):
            return
        if self.release():
            log.warning(
                "disk full: released the outbox's %d-byte reserve to apply an ack", self.reserve_bytes
            )
        self.checkpoint()

    # ------------------------------------------------------------------ reserve / WAL
    def ensure_reserve(self, disk_free: int | None = None) -> bool:
        """Create the reserve file when missing and the disk has room for it twice over; True if present."""
        if self.reserve_bytes <= 0 or self.reserve.exists():
            return self.reserve_bytes > 0
        free = self._free() if disk_free is None else disk_free
        if free < 2 * self.reserve_bytes + self.room_bytes:
            return False
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError:
            return False
        try:
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.write(fd, bytes(self.reserve_bytes))  # file systems without fallocate: real blocks
            os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.reserve.unlink()
            return False
        os.close(fd)
        return True

    def release(self) -> bool:
        try:
            self.reserve.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot release the outbox reserve %s: %s", self.reserve, exc)
            return False
        return True

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it; a failure (e.g. no room to extend the database)
        is left for the next attempt."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("checkpoint failed: %s", exc)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
