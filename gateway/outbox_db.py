"""The outbox's SQLite file layer: schema migrations, opening, transactions, and SQLite errors → gateway errors.

Does:
- the schema as named, recorded, transactional migrations (`MIGRATIONS`, applied in one transaction by
  `migrate` and recorded in `schema_migrations`);
- `OutboxDb.open`: create the file 0600 (SQLite then creates its -wal/-shm with the same mode; an existing
  one readable by others is tightened to 0600 — it holds signed results and sample data), give a new file
  pages of `PAGE_SIZE` where there is room (`page_size_for`), set WAL + synchronous=FULL, run `PRAGMA
  quick_check` on an existing file (a corrupt one is handed to `gateway.salvage.move_aside` and
  `OutboxCorrupt` raised), apply the space policy (`gateway.diskspace`),
  migrate (a new outbox starts above the seq floor a corrupt predecessor left);
- `OutboxDb.tx`: one `BEGIN IMMEDIATE` write transaction under one lock, rolled back on any failure, with
  the space checks before it (`grows`: refused with `OutboxFull` before anything is written when there is no
  room; `essential`: the reserve is given back first on a full disk so an ack always applies); a commit
  that does not wait for the disk (`durable=False`) and `OutboxDb.sync`, which flushes the WAL outside the
  write lock (every commit so far made durable; on opening too);
- `translate`: an `sqlite3.Error` → `OutboxFull` (SQLITE_FULL) / `OutboxCorrupt` / `OutboxError`;
- what the store modules share inside a transaction: `COUNT_ENQUEUED` (the seq counter and the enqueued
  total in one statement) and `keep_newest` (a history table cut to its newest rows).

Does not: know what the rows mean (`gateway.outbox`), salvage a corrupt file (`gateway.salvage`), or decide
how much space there is (`gateway.diskspace`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import salvage
from gateway.diskspace import RESERVE_SUFFIX, SpaceGuard
from gateway.errors import OutboxCorrupt, OutboxError, OutboxFull

SQLITE_FULL = 13
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_initial",
        (
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO counters (name, value) VALUES ('seq', 0), ('enqueued', 0), ('acked', 0), "
            "('rejected', 0)",
            # enqueued_at (unix s) is for reporting the oldest unsent age only; nothing is keyed on it.
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, instrument TEXT NOT NULL,"
            " priority INTEGER NOT NULL, enqueued_at REAL NOT NULL, payload TEXT NOT NULL)",
            "CREATE INDEX outbox_by_priority ON outbox (priority DESC, seq)",
            "CREATE TABLE records (instrument TEXT NOT NULL, epoch INTEGER NOT NULL, record_no INTEGER NOT"
            " NULL, line TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,"
            " PRIMARY KEY (instrument, epoch, record_no, line)) WITHOUT ROWID",
            "CREATE TABLE cursors (instrument TEXT PRIMARY KEY, epoch INTEGER NOT NULL,"
            " last_record INTEGER NOT NULL, updated_at REAL NOT NULL)",
            "CREATE TABLE rejected (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, reason TEXT NOT NULL,"
            " rejected_at REAL NOT NULL, payload TEXT NOT NULL)",
            "CREATE TABLE configs (version TEXT PRIMARY KEY, doc TEXT NOT NULL, applied_at REAL NOT NULL)",
            "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ),
    ),
    Migration(
        "0002_skipped_records",
        (
            # Records an instrument could not deliver after repeated attempts (e.g. rolled out of its
            # memory): skipped so acquisition moves on, but recorded with the reason, never silently.
            "CREATE TABLE skipped (instrument TEXT NOT NULL, epoch INTEGER NOT NULL, record_no INTEGER NOT NULL,"
            " reason TEXT NOT NULL, skipped_at REAL NOT NULL, PRIMARY KEY (instrument, epoch, record_no))",
        ),
    ),
    Migration(
        "0003_registrations",
        (
            # Messages the station itself originates (sample registrations), keyed by their unique code;
            # kept after the ack so the station can list them and refuse a duplicate code.
            "CREATE TABLE registrations (code TEXT PRIMARY KEY, seq INTEGER NOT NULL, id TEXT NOT NULL,"
            " created_at REAL NOT NULL, doc TEXT NOT NULL)",
        ),
    ),
    Migration(
        "0004_cursor_identity",
        (
            # The identity (drivers.readings.record_identity) of the record at the cursor: on reconnect the
            # worker re-reads that record and compares, to notice a memory cleared or an analyzer replaced
            # while the gateway was away even when the new memory has MORE records than the cursor.
            "ALTER TABLE cursors ADD COLUMN identity TEXT",
            "CREATE TABLE memory_resets (instrument TEXT NOT NULL, old_epoch INTEGER NOT NULL,"
            " new_epoch INTEGER NOT NULL, old_last_record INTEGER NOT NULL, latest INTEGER NOT NULL,"
            " reason TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (instrument, new_epoch))",
        ),
    ),
    Migration(
        "0005_record_horizon",
        (
            # Per instrument, the (epoch, record_no) up to which de-duplication keys were pruned from
            # `records`: every record at or below it was taken already (the cursor passed it), so the outbox
            # treats it as known exactly as if its keys were still there. `pruned` counts the keys deleted.
            "CREATE TABLE record_horizon (instrument TEXT PRIMARY KEY, epoch INTEGER NOT NULL,"
            " record_no INTEGER NOT NULL, pruned INTEGER NOT NULL)",
        ),
    ),
    Migration(
        "0006_urgent_index",
        (
            # Send order (priority first, then seq) needs an index only for the rows that jump the queue:
            # priority 0 (negative results, most of them) is sent in seq order, the primary key's. A
            # negative result is then stored and deleted without touching a send-order index.
            "DROP INDEX outbox_by_priority",
            "CREATE INDEX outbox_urgent ON outbox (priority DESC, seq) WHERE priority > 0",
        ),
    ),
    Migration(
        "0007_skipped_counter",
        (
            # `skipped` keeps only its newest rows (`gateway.outbox_types.KEEP_SKIPPED`): the total of records
            # ever skipped is a counter from now on, starting from the rows there are.
            "INSERT INTO counters (name, value) SELECT 'skipped', COUNT(*) FROM skipped",
        ),
    ),
)


def migrate(
    conn: sqlite3.Connection, seq_floor: int | None, migrations: Sequence[Migration] | None = None
) -> None:
    """Apply the migrations not yet recorded, in order, and raise the seq counter to `seq_floor` (a new
    outbox replacing a corrupt one). Runs inside the caller's transaction: all or nothing."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
    for mig in MIGRATIONS if migrations is None else migrations:
        if mig.name in done:
            continue
        for stmt in mig.statements:
            conn.execute(stmt)
        conn.execute(
            "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
            (mig.name, datetime.now(UTC).isoformat()),
        )
    if seq_floor is not None:
        conn.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'seq'", (seq_floor,))


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 if missing (SQLite then creates -wal/-shm with the same mode);
    tighten an existing database and its -wal/-shm that others can read to 0600."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        pass
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = p.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            p.chmod(0o600)


class CorruptFound(Exception):
    """`prepare`: quick_check reported problems (the message lists the first few)."""


PAGE_SIZE = 16384
"""Bytes a page of a new outbox holds (SQLite's default 4096; an existing file keeps its own: a WAL database's
pages cannot change size). A result is ~0.8 KB of payload stored once and deleted once: each commit writes
every page it touched to the WAL, one write each, and a checkpoint copies them again — with 16 KiB pages a
quarter as many writes for the same rows. Measured: inserting and deleting 512 such rows a transaction
3.6-5.1 and 3.3-3.7 µs of CPU a row against 5.8-8.0 and 5.2-5.8 at 4096 (a bare SQLite file, two runs); the
benchmark's fast-source run, three alternated pairs, 25.7/30.9/25.4 % of the raw link against 23.8/22.2/20.1 %,
16,169-16,981 against 13,909-15,498 results/s, the write lock held 0.46-0.75 instead of 0.78-1.00 s by the
enqueues and 0.66-0.77 instead of 0.80-1.06 s by the acks a run of 40,000. Only where there is room for them
(`page_size_for`): otherwise a new file keeps 4096. The reserve that lets acks apply on a full disk is kept
as many pages as at 4096 (`gateway.diskspace.SpaceGuard.configure`)."""
LARGE_PAGES_CAP = 8 * 1024 * 1024
"""The smallest `storage.max_db_mb` cap (bytes) under which a new outbox gets `PAGE_SIZE` pages (each of the
schema's ~20 tables and indexes takes a page at least)."""
LARGE_PAGES_FREE = 1024 * 1024 * 1024
"""The free disk (bytes) a new outbox needs, at its creation, to get `PAGE_SIZE` pages (a disk that small is
one that may fill: there the tested 4096)."""


def page_size_for(max_db_bytes: int | None, disk_free: int) -> int:
    """The page size of a new outbox: `PAGE_SIZE` with no cap or one of at least `LARGE_PAGES_CAP`, on a disk
    with `LARGE_PAGES_FREE` free; else SQLite's 4096."""
    roomy = disk_free >= LARGE_PAGES_FREE and (max_db_bytes is None or max_db_bytes >= LARGE_PAGES_CAP)
    return PAGE_SIZE if roomy else 4096


def prepare(conn: sqlite3.Connection, path: Path, *, check: bool, page_size: int | None = None) -> None:
    """Busy timeout, optional `PRAGMA quick_check` (→ `CorruptFound`), `page_size` (for a new, empty file:
    SQLite ignores it once the file holds a table), WAL journal, synchronous=FULL."""
    conn.execute("PRAGMA busy_timeout = 10000")
    if check:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise CorruptFound("; ".join(str(r[0]) for r in rows[:5]))
    if page_size is not None:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")  # before WAL mode: an empty file takes it
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        raise OutboxError(f"cannot switch {path} to WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")


def error_code(exc: sqlite3.Error) -> int | None:
    """The primary result code of `exc` (None when SQLite gave none)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF  # primary result code of an extended one


def is_corrupt(exc: sqlite3.Error) -> bool:
    return error_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def translate(exc: sqlite3.Error, what: str) -> OutboxError:
    """The gateway error for an SQLite failure while doing `what` (raise it `from exc`)."""
    if error_code(exc) == SQLITE_FULL:
        return OutboxFull(f"outbox full while {what}: {exc} (free disk space or raise storage.max_db_mb)")
    if is_corrupt(exc):
        return OutboxCorrupt(f"outbox database corrupt while {what}: {exc}")
    return OutboxError(f"outbox failure while {what}: {exc}")


class OutboxDb:
    """One connection to the outbox database, used under one lock. Create with `OutboxDb.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, space: SpaceGuard) -> None:
        self._conn = conn
        self.lock = threading.RLock()
        self.path = path
        self.space = space
        self._reader: sqlite3.Connection | None = None  # opened on the first read
        self._read_lock = threading.RLock()
        self._wal_fd: int | None = None  # the WAL file, opened by the first `sync`
        self._wal_lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, max_db_bytes: int | None, check: bool, reserve_bytes: int) -> OutboxDb:
        """Open (creating if needed) and migrate the database at `path` (see the module docstring).

        When opening fails (e.g. no room for the WAL index on a full disk) and a reserve file exists, it is
        given back and the open tried once more.
        """
        try:
            return cls._open(path, max_db_bytes=max_db_bytes, check=check, reserve_bytes=reserve_bytes)
        except OutboxCorrupt:
            raise
        except OutboxError:
            reserve = path.with_name(path.name + RESERVE_SUFFIX)
            if not reserve.exists():
                raise
            reserve.unlink()
            return cls._open(path, max_db_bytes=max_db_bytes, check=check, reserve_bytes=reserve_bytes)

    @classmethod
    def _open(cls, path: Path, *, max_db_bytes: int | None, check: bool, reserve_bytes: int) -> OutboxDb:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = not path.exists()
        try:
            create_private(path)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        try:
            page = page_size_for(max_db_bytes, shutil.disk_usage(path.parent).free) if fresh else None
            prepare(conn, path, check=check and not fresh, page_size=page)
            space = SpaceGuard(path, conn, max_bytes=max_db_bytes, reserve_bytes=reserve_bytes)
            space.configure()
            db = cls(conn, path, space)
            with db.tx("migrating") as tx:
                migrate(tx, salvage.read_seq_floor(path) if fresh else None)
            space.ensure_reserve()
            db.sync()  # what a process that died before its last sync left is durable before it is sent
        except CorruptFound as exc:
            conn.close()
            raise salvage.move_aside(path, str(exc)) from exc
        except sqlite3.Error as exc:
            conn.close()
            if is_corrupt(exc):
                raise salvage.move_aside(path, str(exc)) from exc
            raise translate(exc, "opening") from exc
        except BaseException:
            conn.close()
            raise
        return db

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self.lock:
            self._conn.close()
        with self._wal_lock:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None

    def sync(self) -> None:
        """Make every transaction committed so far durable — what a `durable=True` commit does at its end,
        here without the write lock: other writers go on meanwhile (a commit that ends during this call
        may or may not be included). The WAL file is flushed to the disk (`os.fsync` of a descriptor of
        its own, opened again when the file was replaced); the database file when there is no WAL.
        `OutboxError` when the disk refuses."""
        wal = f"{self.path}-wal"
        with self._wal_lock:
            fd = self._wal_fd
            try:
                try:
                    current = os.stat(wal)
                except FileNotFoundError:
                    current = None
                if fd is not None and (current is None or not os.path.samestat(current, os.fstat(fd))):
                    os.close(fd)
                    fd = self._wal_fd = None
                if fd is None and current is not None:
                    fd = self._wal_fd = os.open(wal, os.O_RDONLY)
            except OSError as exc:
                raise OutboxError(f"cannot open the outbox's WAL {wal} to flush it: {exc}") from exc
        try:
            if fd is not None:
                os.fsync(fd)
            else:
                main = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(main)
                finally:
                    os.close(main)
        except OSError as exc:
            raise OutboxError(f"cannot flush the outbox {self.path} to the disk: {exc}") from exc

    @contextlib.contextmanager
    def tx(
        self, what: str, *, grows: bool = False, essential: bool = False, durable: bool = True
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction. `grows`: it adds results — refused with `OutboxFull` before anything is
        written when there is no room (`SpaceGuard.room`); `essential`: it must succeed on a full disk (an ack
        deleting rows) — the reserve is given back first if the disk is full (`SpaceGuard.essential`);
        `durable=False`: the commit does not wait for the disk (synchronous=NORMAL for this transaction:
        the next durable commit, checkpoint or `sync` makes it durable; a power cut before that may undo it
        whole, never part of it)."""
        with self.lock:
            conn = self._conn
            if grows:
                self.space.room()
            if essential:
                self.space.essential()
            try:
                if not durable:
                    conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise translate(exc, what) from exc
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            finally:
                if not durable:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("PRAGMA synchronous = FULL")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query (a failure translated like a write's), on a connection of their own: WAL
        readers see every committed transaction and never wait for a write (the link's reads do not wait
        for an enqueue's fsync); nothing reads inside a write transaction."""
        with self._read_lock:
            try:
                return self._reading().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise translate(exc, "reading") from exc

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """`read`s inside see one committed state (one read transaction)."""
        with self._read_lock:
            conn = self._reading()
            try:
                conn.execute("BEGIN")
                yield
            except sqlite3.Error as exc:
                raise translate(exc, "reading") from exc
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")

    def _reading(self) -> sqlite3.Connection:
        """The read connection (called with `_read_lock` held)."""
        if self._reader is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
                conn.execute("PRAGMA busy_timeout = 10000")
                conn.execute("PRAGMA query_only = 1")
            except sqlite3.Error as exc:
                raise translate(exc, "opening the read connection") from exc
            self._reader = conn
        return self._reader


LAST_SEQ = "SELECT value FROM counters WHERE name = 'seq'"
"""The last seq given out (the seq counter)."""
# The seq counter set to the last seq given out, the enqueued total raised by the rows added (one statement).
COUNT_ENQUEUED = "UPDATE counters SET value = CASE name WHEN 'seq' THEN ? ELSE value + ? END WHERE name IN ('seq', 'enqueued')"


def keep_newest(conn: sqlite3.Connection, table: str, keep: int) -> None:
    """Delete all but the `keep` rows of `table` added last (highest rowid: a new row, or one replaced, gets
    one above every row there; time is not used, a station clock may be set back). Inside the caller's
    transaction; one statement, finding the cut by stepping over the `keep` + 1 highest rowids."""
    conn.execute(
        f"DELETE FROM {table} WHERE rowid <="  # noqa: S608 - the table is ours, the value bound
        f" (SELECT rowid FROM {table} ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
        (keep,),
    )
