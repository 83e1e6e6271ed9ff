"""Durable store-and-forward outbox of the station gateway (SQLite, WAL, synchronous=FULL).

Does: in ONE transaction per batch of instrument records, allocate the persistent per-station `seq`,
give each result its UUIDv7 id, sign it, store it, remember its unique key (instrument, epoch,
record no, line) and advance the instrument's cursor — so a crash anywhere re-reads at most the records
after the cursor, and a re-read is a no-op. Rows are keyed by seq / result id (never by time) and leave
the outbox ONLY on the cloud's application ack (station-originated sample registrations take the same path,
`enqueue_registration`, and are also kept by code in `registrations`); rejected rows move to the `rejected` table with the
reason. Also stores the cloud-pushed station config with its version. Schema changes are named,
recorded, transactional migrations (`MIGRATIONS`, table `schema_migrations`).

The database (and so its -wal/-shm, which SQLite creates with the database's mode) is created 0600, and an
existing one readable by others is tightened to 0600 at open: it holds signed results and sample data.

Failure handling: `PRAGMA quick_check` at open; a corrupt file is renamed aside (never replaced or
deleted) and `OutboxCorrupt` raised; the seq high-water mark is salvaged from it when possible so a new
outbox never reuses a seq, and `salvage_from` later restores its readable un-sent results, de-duplication
keys and instrument cursors into the new outbox. SQLITE_FULL (disk full or `max_db_bytes` reached) → `OutboxFull` after a
rollback: nothing half-written, the caller retries later. Disk space (`gateway.diskspace.SpaceGuard`): new results
are refused with `OutboxFull` *before* the disk or the cap is reached (the WAL is kept small and counted in the cap),
and a pre-allocated reserve file is given back when the disk is full so that applying an ack always works.

Does not: talk MQTT, read instruments or interpret signals. Thread-safe (one connection, one lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.diskspace import RESERVE_SUFFIX, SpaceGuard
from gateway.errors import DuplicateCode, OutboxCorrupt, OutboxError, OutboxFull
from kuaijian_schema.wire import Rejection, ResultBody, canonical_json, new_result_id, payload_sha256

SQLITE_FULL = 13
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
SEQ_FLOOR_SUFFIX = ".seq-floor"
PRIORITY = {"positive": 3, "suspect": 2, "invalid": 1, "negative": 0}
"""Send priority by verdict: positives first (higher is sooner)."""


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
)


@dataclass(frozen=True, slots=True)
class Draft:
    """One result to enqueue: its line key within the record, send priority, and body.

    `body` holds every `kuaijian_schema.Result` field except `id`, `seq` and `sig`, which the outbox adds.
    """

    line: str
    priority: int
    body: ResultBody


@dataclass(frozen=True, slots=True)
class RecordDrafts:
    """All results of one instrument record (they are committed together)."""

    record_no: int
    drafts: tuple[Draft, ...]


@dataclass(frozen=True, slots=True)
class Enqueued:
    seq: int
    id: str
    priority: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """Last record persisted from an instrument; `epoch` grows when its record memory restarts (counter
    went back, or the record at the cursor is no longer the one read: `identity`, see
    `drivers.readings.record_identity`; None when unknown, e.g. a skipped record)."""

    epoch: int
    last_record: int
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class MemoryReset:
    """An instrument whose memory was found cleared or replaced: a new cursor epoch was started."""

    instrument: str
    old_epoch: int
    new_epoch: int
    old_last_record: int
    latest: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What `Outbox.salvage_from` recovered from a moved-aside corrupt outbox."""

    source: Path
    results_found: int  # outbox rows read from the corrupt file
    results_restored: int  # of those, newly queued here (the rest were already here, or invalid)
    results_invalid: int  # unparsable, id/seq not matching the row, or signature not verifying
    records_restored: int  # de-duplication keys (instrument, epoch, record, line)
    cursors_restored: int  # instrument cursors, so the instruments are not read again from the start
    errors: tuple[str, ...]  # tables or ranges that could not be read

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "results_found": self.results_found,
            "results_restored": self.results_restored,
            "results_invalid": self.results_invalid,
            "records_restored": self.records_restored,
            "cursors_restored": self.cursors_restored,
            "errors": list(self.errors),
        }


@dataclass(frozen=True, slots=True)
class AckOutcome:
    acked: tuple[int, ...]  # seqs deleted now
    rejected: tuple[int, ...]  # seqs moved to the rejected table now
    unknown: int  # ack entries matching no outbox row (already acked: redelivered ack)
    ignored: int = 0  # rejections not naming exactly a pending row (id + seq + payload hash): nothing changed


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    oldest_enqueued_at: float | None
    last_seq: int
    enqueued_total: int
    acked_total: int
    rejected_total: int
    skipped_total: int
    config_version: str | None

    def oldest_age_s(self, now: float | None = None) -> float | None:
        if self.oldest_enqueued_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_enqueued_at)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    seq: int
    id: str
    reason: str
    rejected_at: float


# Move an instrument's cursor forward (never back) within its epoch; the identity follows the record the
# cursor ends on (right-hand sides see the row as it was before the update).
_ADVANCE_CURSOR = (
    "INSERT INTO cursors (instrument, epoch, last_record, updated_at, identity) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (instrument) DO UPDATE SET last_record = MAX(last_record, excluded.last_record),"
    " identity = CASE WHEN excluded.last_record >= last_record THEN excluded.identity ELSE identity END,"
    " updated_at = excluded.updated_at WHERE epoch = excluded.epoch"
)


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF  # primary result code of an extended one


def _translate(exc: sqlite3.Error, what: str) -> OutboxError:
    code = _code(exc)
    if code == SQLITE_FULL:
        return OutboxFull(f"outbox full while {what}: {exc} (free disk space or raise storage.max_db_mb)")
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return OutboxCorrupt(f"outbox database corrupt while {what}: {exc}")
    return OutboxError(f"outbox failure while {what}: {exc}")


class Outbox:
    """The outbox database. Create with `Outbox.open(path)`; close with `close()`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, space: SpaceGuard | None = None) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.space = space or SpaceGuard(path, conn, max_bytes=None, reserve_bytes=0)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, path: Path, *, max_db_bytes: int | None = None, check: bool = True, reserve_bytes: int = 0
    ) -> Outbox:
        """Open (creating if needed) and migrate the outbox at `path`; keep `reserve_bytes` of disk in a
        reserve file for acks and the database + WAL under `max_db_bytes` (`gateway.diskspace`).

        Raises `OutboxCorrupt` (after renaming the file aside) when the integrity check fails. When opening
        fails (e.g. no room for the WAL index on a full disk) and a reserve file exists, it is given back and
        the open tried once more.
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
    def _open(cls, path: Path, *, max_db_bytes: int | None, check: bool, reserve_bytes: int) -> Outbox:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = not path.exists()
        try:
            _private(path)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        try:
            _prepare(conn, path, check=check and not fresh)
            space = SpaceGuard(path, conn, max_bytes=max_db_bytes, reserve_bytes=reserve_bytes)
            space.configure()
            box = cls(conn, path, space)
            box._migrate(seq_floor=_read_seq_floor(path) if fresh else None)
            space.ensure_reserve()
        except _CorruptFound as exc:
            conn.close()
            raise _move_aside(path, str(exc)) from exc
        except sqlite3.Error as exc:
            conn.close()
            if _code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB):
                raise _move_aside(path, str(exc)) from exc
            raise _translate(exc, "opening") from exc
        except BaseException:
            conn.close()
            raise
        return box

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self, what: str, *, grows: bool = False, essential: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction. `grows`: it adds results — refused with `OutboxFull` before anything is
        written when there is no room (`SpaceGuard.room`); `essential`: it must succeed on a full disk (an ack
        deleting rows) — the reserve is given back first if the disk is full (`SpaceGuard.essential`)."""
        with self._lock:
            conn = self._conn
            if grows:
                self.space.room()
            if essential:
                self.space.essential()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise _translate(exc, what) from exc
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _translate(exc, "reading") from exc

    def _migrate(self, seq_floor: int | None) -> None:
        with self._tx("migrating") as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for mig in MIGRATIONS:
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

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM schema_migrations ORDER BY name")]

    # ------------------------------------------------------------------ acquisition side
    def cursor(self, instrument: str) -> Cursor | None:
        rows = self._read(
            "SELECT epoch, last_record, identity FROM cursors WHERE instrument = ?", (instrument,)
        )
        return Cursor(int(rows[0][0]), int(rows[0][1]), rows[0][2]) if rows else None

    def set_cursor(self, instrument: str, cursor: Cursor) -> None:
        """Set an instrument's cursor (first sight with start_from=latest, or its identity learnt)."""
        with self._tx("setting a cursor") as conn:
            conn.execute(
                "INSERT INTO cursors (instrument, epoch, last_record, updated_at, identity) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (instrument) DO UPDATE SET epoch = excluded.epoch, "
                "last_record = excluded.last_record, updated_at = excluded.updated_at, identity = excluded.identity",
                (instrument, cursor.epoch, cursor.last_record, time.time(), cursor.identity),
            )

    def new_epoch(self, instrument: str, old: Cursor, latest: int, reason: str) -> Cursor:
        """The instrument's memory was cleared or replaced: record the event and start epoch + 1 at record 0,
        in one transaction (its records are then read again from the first, under new keys)."""
        new = Cursor(old.epoch + 1, 0)
        now = time.time()
        with self._tx("starting a new cursor epoch") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO memory_resets (instrument, old_epoch, new_epoch, old_last_record, latest,"
                " reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (instrument, old.epoch, new.epoch, old.last_record, latest, reason, now),
            )
            conn.execute(
                "UPDATE cursors SET epoch = ?, last_record = 0, identity = NULL, updated_at = ? WHERE instrument = ?",
                (new.epoch, now, instrument),
            )
        return new

    def memory_resets(self) -> list[MemoryReset]:
        rows = self._read(
            "SELECT instrument, old_epoch, new_epoch, old_last_record, latest, reason, at FROM memory_resets"
            " ORDER BY at"
        )
        return [
            MemoryReset(str(a), int(b), int(c), int(d), int(e), str(f), float(g))
            for a, b, c, d, e, f, g in rows
        ]

    def enqueue(
        self,
        instrument: str,
        epoch: int,
        records: Sequence[RecordDrafts],
        sign: Callable[[dict[str, Any]], str],
        identity: str | None = None,
    ) -> list[Enqueued]:
        """Persist every result of `records` and advance the cursor, all in one transaction.

        Results whose key (instrument, epoch, record_no, line) is already known are skipped (a re-read
        after a crash). `identity` is that of the last of `records` (stored with the cursor when it moves
        there). Returns the newly enqueued rows.
        """
        if not records:
            return []
        out: list[Enqueued] = []
        now = time.time()
        with self._tx("enqueueing results", grows=True) as conn:
            seq = int(conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0])
            for rec in records:
                for draft in rec.drafts:
                    key = (instrument, epoch, rec.record_no, draft.line)
                    if conn.execute(
                        "SELECT 1 FROM records WHERE instrument = ? AND epoch = ? AND record_no = ? "
                        "AND line = ?",
                        key,
                    ).fetchone():
                        continue
                    seq += 1
                    rid = str(new_result_id())
                    doc = draft.body.wire()
                    doc["id"] = rid
                    doc["seq"] = seq
                    doc["sig"] = sign(doc)
                    conn.execute(
                        "INSERT INTO outbox (seq, id, instrument, priority, enqueued_at, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (seq, rid, instrument, draft.priority, now, canonical_json(doc).decode()),
                    )
                    conn.execute(
                        "INSERT INTO records (instrument, epoch, record_no, line, seq, id) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (*key, seq, rid),
                    )
                    out.append(Enqueued(seq, rid, draft.priority))
            last = max(r.record_no for r in records)
            conn.execute("UPDATE counters SET value = ? WHERE name = 'seq'", (seq,))
            conn.execute("UPDATE counters SET value = value + ? WHERE name = 'enqueued'", (len(out),))
            conn.execute(_ADVANCE_CURSOR, (instrument, epoch, last, now, identity))
        return out

    def skip_record(self, instrument: str, epoch: int, record_no: int, reason: str) -> None:
        """Record that `record_no` could not be read and move the cursor past it (one transaction)."""
        now = time.time()
        with self._tx("skipping a record") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO skipped (instrument, epoch, record_no, reason, skipped_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (instrument, epoch, record_no, reason, now),
            )
            conn.execute(_ADVANCE_CURSOR, (instrument, epoch, record_no, now, None))

    def skipped_records(self) -> list[tuple[str, int, int, str]]:
        """(instrument, epoch, record_no, reason) of every skipped record."""
        rows = self._read("SELECT instrument, epoch, record_no, reason FROM skipped ORDER BY skipped_at")
        return [(str(a), int(b), int(c), str(d)) for a, b, c, d in rows]

    # ------------------------------------------------------------------ delivery side
    def due_order(self, limit: int) -> list[tuple[int, int]]:
        """(seq, priority) of up to `limit` outbox rows in send order: priority first, then seq."""
        rows = self._read("SELECT seq, priority FROM outbox ORDER BY priority DESC, seq LIMIT ?", (limit,))
        return [(int(s), int(p)) for s, p in rows]

    def payloads(self, seqs: Sequence[int]) -> dict[int, str]:
        """Stored signed JSON of the given seqs (missing ones were acked meanwhile)."""
        out: dict[int, str] = {}
        for i in range(0, len(seqs), 500):
            chunk = list(seqs[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for seq, payload in self._read(f"SELECT seq, payload FROM outbox WHERE seq IN ({marks})", chunk):  # noqa: S608
                out[int(seq)] = str(payload)
        return out

    def ack(
        self,
        ids: Iterable[str] = (),
        seqs: Iterable[int] = (),
        rejected: Iterable[Rejection] = (),
    ) -> AckOutcome:
        """Apply an application ack: delete acked rows; move rejected rows aside.

        A rejection moves a row only when its id, its seq and the SHA-256 of its stored payload all equal the
        rejection's: the cloud received exactly this result and refused it. Any other rejection (forged
        content under a real id or seq, an id not pending here, no hash from an older cloud) is counted in
        `ignored` and changes nothing — a pending row stays and is re-sent.
        """
        acked: list[int] = []
        moved: list[int] = []
        unknown = 0
        ignored = 0
        now = time.time()
        with self._tx("applying an ack", essential=True) as conn:
            for rid in ids:
                row = conn.execute("DELETE FROM outbox WHERE id = ? RETURNING seq", (str(rid),)).fetchone()
                if row:
                    acked.append(int(row[0]))
                else:
                    unknown += 1
            for seq in seqs:
                row = conn.execute("DELETE FROM outbox WHERE seq = ? RETURNING seq", (int(seq),)).fetchone()
                if row:
                    acked.append(int(row[0]))
                else:
                    unknown += 1
            for rej in rejected:
                if rej.seq is None or rej.sha256 is None:
                    ignored += 1
                    continue
                row = conn.execute(
                    "SELECT seq, id, payload FROM outbox WHERE id = ? AND seq = ?", (rej.id, int(rej.seq))
                ).fetchone()
                if row is None or stored_sha256(str(row[2])) != rej.sha256:
                    ignored += 1
                    continue
                conn.execute("DELETE FROM outbox WHERE seq = ?", (int(row[0]),))
                conn.execute(
                    "INSERT OR REPLACE INTO rejected (seq, id, reason, rejected_at, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (int(row[0]), str(row[1]), rej.reason, now, str(row[2])),
                )
                moved.append(int(row[0]))
            conn.execute("UPDATE counters SET value = value + ? WHERE name = 'acked'", (len(acked),))
            conn.execute("UPDATE counters SET value = value + ? WHERE name = 'rejected'", (len(moved),))
        return AckOutcome(tuple(acked), tuple(moved), unknown, ignored)

    def requeue_rejected(self, seqs: Sequence[int] | None = None) -> list[int]:
        """Move rejected results (all, or those with `seqs`) back into the outbox, unchanged (same id, seq and
        signature), for delivery once the cause is fixed — e.g. the station enrolled, or its key updated.
        Returns the seqs requeued."""
        now = time.time()
        with self._tx("requeueing rejected results") as conn:
            if seqs is None:
                rows = conn.execute("SELECT seq, id, payload FROM rejected ORDER BY seq").fetchall()
            else:
                rows = [
                    r
                    for s in seqs
                    if (
                        r := conn.execute(
                            "SELECT seq, id, payload FROM rejected WHERE seq = ?", (int(s),)
                        ).fetchone()
                    )
                ]
            moved: list[int] = []
            for seq, rid, payload in rows:
                doc = json.loads(payload)
                inst = doc.get("instrument") or {}
                instrument = f"{inst.get('driver', '?')}:{inst.get('serial', '?')}"
                conn.execute(
                    "INSERT INTO outbox (seq, id, instrument, priority, enqueued_at, payload) VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, rid, instrument, PRIORITY.get(str(doc.get("verdict")), 0), now, payload),
                )
                conn.execute("DELETE FROM rejected WHERE seq = ?", (seq,))
                moved.append(int(seq))
            conn.execute("UPDATE counters SET value = value - ? WHERE name = 'rejected'", (len(moved),))
        return moved

    def rejected_rows(self, limit: int = 100) -> list[RejectedRow]:
        rows = self._read(
            "SELECT seq, id, reason, rejected_at FROM rejected ORDER BY seq DESC LIMIT ?", (limit,)
        )
        return [RejectedRow(int(a), str(b), str(c), float(d)) for a, b, c, d in rows]

    def stats(self) -> OutboxStats:
        with self._lock:
            counters = dict(self._read("SELECT name, value FROM counters"))
            depth, oldest = self._read("SELECT COUNT(*), MIN(enqueued_at) FROM outbox")[0]
            version = self._read("SELECT value FROM settings WHERE name = 'config_version'")
            skipped = self._read("SELECT COUNT(*) FROM skipped")[0][0]
        return OutboxStats(
            depth=int(depth),
            oldest_enqueued_at=None if oldest is None else float(oldest),
            last_seq=int(counters["seq"]),
            enqueued_total=int(counters["enqueued"]),
            acked_total=int(counters["acked"]),
            rejected_total=int(counters["rejected"]),
            skipped_total=int(skipped),
            config_version=str(version[0][0]) if version else None,
        )

    def cursors(self) -> dict[str, Cursor]:
        rows = self._read("SELECT instrument, epoch, last_record, identity FROM cursors ORDER BY instrument")
        return {str(i): Cursor(int(e), int(n), ident) for i, e, n, ident in rows}

    # ------------------------------------------------------------------ recovery
    def salvage_from(self, corrupt: Path, verify: Callable[[dict[str, Any]], bool]) -> SalvageReport:
        """Recover what can still be read from a corrupt outbox moved aside by `open`: un-sent results
        (each kept only if its JSON names the row's id and seq and `verify` accepts its signature), the
        de-duplication keys and the instrument cursors — so nothing un-sent is lost and the instruments are
        not read again from the start (which would queue duplicates under new ids).

        Reads each table in key order up to the first unreadable page, then backwards from the end to it,
        so rows on both sides of one damaged region are recovered. Idempotent: rows already here are kept.
        Writes `<corrupt>.salvaged` with the report, which `unsalvaged()` uses to skip the file next time.
        """
        errors: list[str] = []
        try:
            src = sqlite3.connect(f"file:{corrupt}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error as exc:
            report = SalvageReport(corrupt, 0, 0, 0, 0, 0, (f"cannot open: {exc}",))
            _write_salvage_marker(corrupt, report)
            return report
        try:
            outbox_rows = _read_table(
                src, "outbox", "seq, id, instrument, priority, enqueued_at, payload", ("seq",), errors
            )
            records = _read_table(
                src,
                "records",
                "instrument, epoch, record_no, line, seq, id",
                ("instrument", "epoch", "record_no", "line"),
                errors,
            )
            cursors = _read_table(
                src, "cursors", "instrument, epoch, last_record, updated_at", ("instrument",), errors
            )
        finally:
            src.close()
        valid: list[tuple[Any, ...]] = []
        invalid = 0
        for seq, rid, instrument, priority, enqueued_at, payload in outbox_rows:
            try:
                doc = json.loads(payload)
                ok = isinstance(doc, dict) and doc.get("id") == rid and doc.get("seq") == seq and verify(doc)
            except (TypeError, ValueError):
                ok = False
            if ok:
                valid.append((seq, rid, instrument, priority, enqueued_at, payload))
            else:
                invalid += 1
        with self._tx("restoring salvaged rows") as conn:
            restored = 0
            for row in valid:
                seq, rid = row[0], row[1]
                holder = conn.execute("SELECT id FROM outbox WHERE seq = ?", (seq,)).fetchone()
                if holder is not None:
                    if holder[0] != rid:  # cannot happen with the seq floor; never overwrite, say so
                        errors.append(f"seq {seq} is taken by another result here; {rid} left in {corrupt}")
                    continue
                if conn.execute("SELECT 1 FROM outbox WHERE id = ?", (rid,)).fetchone():
                    continue
                conn.execute(
                    "INSERT INTO outbox (seq, id, instrument, priority, enqueued_at, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
                restored += 1
            before = conn.total_changes
            for row in records:
                conn.execute(
                    "INSERT OR IGNORE INTO records (instrument, epoch, record_no, line, seq, id)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
            records_restored = conn.total_changes - before
            before = conn.total_changes
            for row in cursors:
                conn.execute(
                    "INSERT INTO cursors (instrument, epoch, last_record, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (instrument) DO UPDATE SET last_record = MAX(last_record, excluded.last_record)"
                    " WHERE epoch = excluded.epoch",
                    row,
                )
            cursors_restored = conn.total_changes - before
            conn.execute("UPDATE counters SET value = value + ? WHERE name = 'enqueued'", (restored,))
            # never hand out a seq the old outbox used (the floor file normally guarantees it already)
            top = max([r[0] for r in valid] + [r[4] for r in records], default=0)
            conn.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'seq'", (top,))
        report = SalvageReport(
            corrupt, len(outbox_rows), restored, invalid, records_restored, cursors_restored, tuple(errors)
        )
        _write_salvage_marker(corrupt, report)
        return report

    def unsalvaged(self) -> list[Path]:
        """Corrupt outboxes moved aside next to this one that `salvage_from` has not processed yet."""
        found = sorted(self.path.parent.glob(f"{self.path.name}.corrupt-*"))
        return [
            p
            for p in found
            if not p.name.endswith(("-wal", "-shm", ".salvaged"))
            and not p.with_name(p.name + ".salvaged").exists()
        ]

    # ------------------------------------------------------------------ station-originated messages
    def enqueue_registration(
        self, code: str, body: dict[str, Any], priority: int, sign: Callable[[dict[str, Any]], str]
    ) -> tuple[Enqueued, dict[str, Any]]:
        """Store a registration under its unique `code` and queue it for delivery, in ONE transaction with
        the seq counter (same id/seq/sig/ack rules as a result). Raises DuplicateCode if `code` is taken."""
        now = time.time()
        with self._tx("enqueueing a registration", grows=True) as conn:
            if conn.execute("SELECT 1 FROM registrations WHERE code = ?", (code,)).fetchone():
                raise DuplicateCode(f"样品编号 {code} 已被登记 (sample code {code} is already registered)")
            seq = int(conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0]) + 1
            doc = dict(body)
            doc["id"] = str(new_result_id())
            doc["seq"] = seq
            doc["sig"] = sign(doc)
            payload = canonical_json(doc).decode()
            conn.execute(
                "INSERT INTO outbox (seq, id, instrument, priority, enqueued_at, payload) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, doc["id"], "@registrations", priority, now, payload),
            )
            conn.execute(
                "INSERT INTO registrations (code, seq, id, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                (code, seq, doc["id"], now, payload),
            )
            conn.execute("UPDATE counters SET value = ? WHERE name = 'seq'", (seq,))
            conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'enqueued'")
        return Enqueued(seq, doc["id"], priority), doc

    def registrations(self, limit: int = 100, prefix: str = "") -> list[dict[str, Any]]:
        """Stored registrations (newest first), optionally those whose code starts with `prefix`; each with
        `delivered` (False while still in the outbox)."""
        rows = self._read(
            "SELECT r.doc, o.seq IS NULL FROM registrations r LEFT JOIN outbox o ON o.seq = r.seq"
            " WHERE substr(r.code, 1, ?) = ? ORDER BY r.seq DESC LIMIT ?",
            (len(prefix), prefix, limit),
        )
        return [{**json.loads(doc), "delivered": bool(done)} for doc, done in rows]

    # ------------------------------------------------------------------ pushed config
    def store_config(self, version: str, doc: dict[str, Any]) -> bool:
        """Record `doc` as the current config `version` atomically; False when already current."""
        with self._tx("storing the station config") as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = 'config_version'").fetchone()
            if row and row[0] == version:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO configs (version, doc, applied_at) VALUES (?, ?, ?)",
                (version, json.dumps(doc, ensure_ascii=False, sort_keys=True), time.time()),
            )
            conn.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES ('config_version', ?)", (version,)
            )
        return True

    def current_config(self) -> tuple[str, dict[str, Any]] | None:
        rows = self._read(
            "SELECT c.version, c.doc FROM settings s JOIN configs c ON c.version = s.value "
            "WHERE s.name = 'config_version'"
        )
        if not rows:
            return None
        doc = json.loads(rows[0][1])
        if not isinstance(doc, dict):
            raise OutboxCorrupt(f"stored config {rows[0][0]} is not an object")
        return str(rows[0][0]), doc


def _private(path: Path) -> None:
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


class _CorruptFound(Exception):
    """Internal: quick_check reported problems."""


def stored_sha256(payload: str) -> str:
    """`payload_sha256` of a stored payload (its canonical JSON; the raw text if it does not parse)."""
    try:
        return payload_sha256(json.loads(payload))
    except (ValueError, TypeError, RecursionError):
        return hashlib.sha256(payload.encode()).hexdigest()


def _prepare(conn: sqlite3.Connection, path: Path, *, check: bool) -> None:
    conn.execute("PRAGMA busy_timeout = 10000")
    if check:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise _CorruptFound("; ".join(str(r[0]) for r in rows[:5]))
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        raise OutboxError(f"cannot switch {path} to WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")


def _salvage_seq(path: Path) -> int | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    best: int | None = None
    try:
        for sql in (
            "SELECT value FROM counters WHERE name = 'seq'",
            "SELECT MAX(seq) FROM outbox",
            "SELECT MAX(seq) FROM records",
            "SELECT MAX(seq) FROM rejected",
        ):
            try:
                row = conn.execute(sql).fetchone()
            except sqlite3.Error:
                continue
            if row and row[0] is not None:
                best = max(best or 0, int(row[0]))
    finally:
        conn.close()
    return best


def _read_table(
    conn: sqlite3.Connection,
    table: str,
    columns: str,
    key: tuple[str, ...],
    errors: list[str],
    chunk: int = 500,
) -> list[tuple[Any, ...]]:
    """Rows of `table` in primary-key order, paging by key so a damaged page costs only its own rows where
    possible: for an integer key the scan skips ahead past an unreadable stretch (doubling the jump);
    otherwise, or when that fails too, it reads backwards from the end to the damage."""
    names = [c.strip() for c in columns.split(",")]
    idx = [names.index(k) for k in key]
    order_by = ", ".join(key)
    tup = f"({', '.join(key)})" if len(key) > 1 else key[0]
    marks = f"({', '.join('?' for _ in key)})" if len(key) > 1 else "?"
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def page(cmp: str, direction: str, after: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
        where = "" if after is None else f"WHERE {tup} {cmp} {marks}"
        sql = (
            f"SELECT {columns} FROM {table} {where} "  # noqa: S608 - identifiers are ours, values bound
            f"ORDER BY {', '.join(f'{k} {direction}' for k in key)} LIMIT {chunk}"
        )
        return [tuple(r) for r in conn.execute(sql, () if after is None else after).fetchall()]

    for cmp, direction in ((">", "ASC"), ("<", "DESC")):
        after: tuple[Any, ...] | None = None
        failed = False
        while True:
            try:
                batch = page(cmp, direction, after)
            except sqlite3.Error as exc:
                resumed = None
                if direction == "ASC" and len(key) == 1 and after is not None and isinstance(after[0], int):
                    jump = 1
                    while resumed is None and jump <= 1 << 24:
                        with contextlib.suppress(sqlite3.Error):
                            resumed = page(cmp, direction, (after[0] + jump,))
                        jump *= 2
                errors.append(
                    f"{table} ({direction.lower()} scan after {order_by}={after}): {exc}"
                    + ("" if resumed is None else "; skipped ahead")
                )
                if resumed is None:
                    failed = True
                    break
                batch = resumed
            if not batch:
                break
            for row in batch:
                rows[tuple(row[i] for i in idx)] = row
            after = tuple(batch[-1][i] for i in idx)
        if not failed:
            break  # this scan reached the end of the table: no need to come back from the other end
    return [rows[k] for k in sorted(rows)]


def _write_salvage_marker(corrupt: Path, report: SalvageReport) -> None:
    with contextlib.suppress(OSError):
        corrupt.with_name(corrupt.name + ".salvaged").write_text(
            json.dumps(report.as_dict(), indent=2) + "\n"
        )


def _read_seq_floor(path: Path) -> int | None:
    floor_file = path.with_name(path.name + SEQ_FLOOR_SUFFIX)
    try:
        return int(floor_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _move_aside(path: Path, detail: str) -> OutboxCorrupt:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
    except OSError as exc:
        return OutboxCorrupt(
            f"outbox {path} is corrupt ({detail}) and could not be moved aside: {exc}; "
            "the gateway refuses to start over it"
        )
    salvaged = _salvage_seq(target)
    # Without a salvaged high-water mark, continue from a clock-derived floor (ms since epoch): far above
    # any seq a station can have used, so a seq is never reused.
    floor = salvaged if salvaged is not None else int(time.time() * 1000)
    floor_file = path.with_name(path.name + SEQ_FLOOR_SUFFIX)
    with contextlib.suppress(OSError):
        floor_file.write_text(f"{floor}\n")
    how = "salvaged from it" if salvaged is not None else "could not be salvaged; using a clock floor"
    return OutboxCorrupt(
        f"outbox {path} is corrupt ({detail}); it was moved to {target} and kept. On the next start a "
        f"new outbox is created (seq numbering continues above {floor}, {how}) and everything still "
        f"readable in the old one — un-sent results with valid signatures, instrument cursors — is "
        f"salvaged into it automatically.",
        moved_to=target,
    )
