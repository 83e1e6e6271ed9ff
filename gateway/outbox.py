"""Durable store-and-forward outbox of the station gateway: the store API (what the rows mean).

One class, `Outbox`, in three modules along its sides: the acquisition side here (results in, cursors,
memory resets, skipped records, stats, salvage), the delivery side (`gateway.outbox_delivery`: send order,
payloads, acks, rejected rows) and the station's own rows (`gateway.outbox_station`: sample registrations,
the pushed config).

Does: in ONE transaction per batch of instrument records, allocate the persistent per-station `seq`,
give each result its UUIDv7 id, sign it, store it, remember its unique key (instrument, epoch,
record no, line) and advance the instrument's cursor — so a crash anywhere re-reads at most the records
after the cursor, and a re-read is a no-op (keys more than `keep_record_keys` records behind the cursor are
pruned in the same transaction; those records stay known through the instrument's `record_horizon`). That
commit does not wait for the disk while it holds the write lock: the WAL is flushed right after it, outside
the lock (`sync`: the acks and the other writers go on meanwhile), before `enqueue` returns, and no row is
sent before it is on the disk (`unsynced_from`) — a power cut can undo only rows never sent, whose records
are then read again. Rows are keyed by seq / result id (never by time) and leave the outbox ONLY on the
cloud's application ack (station-originated sample registrations take the same path,
`enqueue_registration`, and are also kept by code in `registrations`); rejected rows move to the `rejected`
table with the reason. Also stores the cloud-pushed station config with its version, the instrument cursors
and memory resets, and skipped records. `salvage_from` restores what `gateway.salvage` reads from a corrupt
outbox moved aside.

Bounded history (a station runs for years on a small SD card): storing a config keeps the one in force and the
`KEEP_CONFIGS` stored before it, recording a memory reset keeps the newest `KEEP_MEMORY_RESETS` and skipping a
record the newest `KEEP_SKIPPED` rows of their tables — older rows are deleted in the same transaction
("newest" = added last, by rowid, not by their time: a station clock may be set back). The total of skipped
records stays exact (`skipped_total` is the `skipped` counter, not a count of the rows kept).

Failure handling: every write is one transaction (`gateway.outbox_db.OutboxDb.tx`): SQLITE_FULL (disk full
or `max_db_bytes` reached) → `OutboxFull` after a rollback, nothing half-written, the caller retries later;
new results are refused *before* the disk or the cap is reached, and an ack always applies on a full disk
(`gateway.diskspace`). A corrupt file found at open is moved aside and `OutboxCorrupt` raised.

Does not: bound `rejected` — rejected results wait there until the technician requeues them
(`requeue_rejected`) after fixing the cause, so none is deleted; how many wait is reported instead
(`rejected_total`, the `rejected` counter: `kuaijian gateway status` and the `kj_gateway_results_rejected_total`
metric). Does not open, migrate or lock the SQLite file itself (`gateway.outbox_db`: schema `MIGRATIONS`, file
mode 0600, WAL, synchronous=FULL), read a corrupt file (`gateway.salvage`), talk MQTT, read instruments or
interpret signals. Thread-safe (one connection, one lock).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from gateway import salvage
from gateway.errors import OutboxError
from gateway.outbox_db import COUNT_ENQUEUED, LAST_SEQ, MIGRATIONS, Migration, OutboxDb, keep_newest
from gateway.outbox_delivery import DeliverySide, FreshPayloads, stored_sha256
from gateway.outbox_station import StationSide
from gateway.outbox_types import (
    KEEP_CONFIGS,
    KEEP_MEMORY_RESETS,
    KEEP_RECORD_KEYS,
    KEEP_SKIPPED,
    PRIORITY,
    AckOutcome,
    Cursor,
    Draft,
    Enqueued,
    MemoryReset,
    OutboxStats,
    RecordDrafts,
    RejectedRow,
    Sealed,
)
from gateway.salvage import SalvageReport
from kuaijian_schema.sqlite_append import append_rows
from kuaijian_schema.wire import BodyParts, Signer, new_result_ids, seal, seal_parts

__all__ = [
    "KEEP_CONFIGS",
    "KEEP_MEMORY_RESETS",
    "KEEP_RECORD_KEYS",
    "KEEP_SKIPPED",
    "MIGRATIONS",
    "PRIORITY",
    "AckOutcome",
    "Cursor",
    "Draft",
    "Enqueued",
    "MemoryReset",
    "Migration",
    "Outbox",
    "OutboxStats",
    "RecordDrafts",
    "RejectedRow",
    "SalvageReport",
    "stored_sha256",
]
# Move an instrument's cursor forward (never back) within its epoch; the identity follows the record the
# cursor ends on (right-hand sides see the row as it was before the update).
_ADVANCE_CURSOR = (
    "INSERT INTO cursors (instrument, epoch, last_record, updated_at, identity) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (instrument) DO UPDATE SET last_record = MAX(last_record, excluded.last_record),"
    " identity = CASE WHEN excluded.last_record >= last_record THEN excluded.identity ELSE identity END,"
    " updated_at = excluded.updated_at WHERE epoch = excluded.epoch"
)


_OUTBOX_COLUMNS = ("seq", "id", "instrument", "priority", "enqueued_at", "payload")
_RECORD_COLUMNS = ("instrument", "epoch", "record_no", "line", "seq", "id")


_Rows = list[tuple[int, str, str, int, float, bytes]]  # outbox rows, `_OUTBOX_COLUMNS`
_Keys = list[tuple[str, int, int, str, int, str]]  # record keys, `_RECORD_COLUMNS`


def _all_encoded(parts: list[BodyParts | None]) -> TypeGuard[list[BodyParts]]:
    """Whether every draft came encoded (`Draft.parts`)."""
    return all(p is not None for p in parts)


def _result_ids(seals: list[Sealed | None]) -> list[str]:
    """An id for each draft of an enqueue (`seals`: their `Draft.sealed`): a sealed draft's own (sealed again
    under it when its guessed seq was not the one it gets), new ones for the others."""
    missing = sum(s is None for s in seals)
    if not missing:
        return [s.id for s in seals if s is not None]
    fresh = iter(new_result_ids(missing))
    return [next(fresh) if s is None else s.id for s in seals]


def _enqueue_rows(
    instrument: str,
    epoch: int,
    docs: list[tuple[int, str, int, Draft]],
    ids: list[str],
    known: set[tuple[int, str]],
    horizon: tuple[int, int] | None,
    seq: int,
    now: float,
    sign: Signer,
) -> tuple[_Rows, _Keys, list[Enqueued]]:
    """An enqueue's rows, keys and results one by one, sealed in its transaction: the drafts whose key is not
    `known` and not at or below the `horizon` — a re-read: its key is here, or it was taken long ago and its
    key pruned — numbered from `seq` + 1 on (the same key twice in one call: the first one counts)."""
    rows: _Rows = []
    keys: _Keys = []
    out: list[Enqueued] = []
    for (record_no, line, priority, draft), rid in zip(docs, ids, strict=True):
        key = (record_no, line)
        if key in known or (horizon is not None and (epoch, record_no) <= horizon):
            continue
        known.add(key)
        seq += 1
        if draft.parts is not None:  # encoded already (the interpretation process)
            payload, _sig = seal_parts(draft.parts, rid, seq, sign)
        else:
            wire = dict(draft.wire)
            wire["id"] = rid
            wire["seq"] = seq
            payload, _sig = seal(wire, sign, finite=True)
        rows.append((seq, rid, instrument, priority, now, payload))
        keys.append((instrument, epoch, record_no, line, seq, rid))
        out.append(Enqueued(seq, rid, priority))
    return rows, keys, out


class Outbox(DeliverySide, StationSide):
    """The outbox database. Create with `Outbox.open(path)`; close with `close()`."""

    def __init__(self, db: OutboxDb, keep_record_keys: int = KEEP_RECORD_KEYS) -> None:
        if keep_record_keys < 0:
            raise ValueError("keep_record_keys must be >= 0")
        self._db = db
        self._keep = keep_record_keys
        self.path = db.path
        self.space = db.space
        self._seq_lock = threading.Lock()
        self._next_seq: int | None = None  # the seq the next enqueue is expected to start at (None: unknown)
        # Enqueues whose commit did not wait for the disk and that no `sync` has covered since: a number
        # each (given in order, under the write lock) → the first seq it wrote. Rows from there on are not
        # sent (`unsynced_from`) until a sync covers them.
        self._unsynced: dict[int, int] = {}
        self._unsynced_numbers = 0
        self._sync_failed = False  # a sync raised: the next `unsynced_from` tries again
        self._sync_lock = threading.Lock()
        self._fresh = FreshPayloads()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        max_db_bytes: int | None = None,
        check: bool = True,
        reserve_bytes: int = 0,
        keep_record_keys: int = KEEP_RECORD_KEYS,
    ) -> Outbox:
        """Open (creating if needed) and migrate the outbox at `path`; keep `reserve_bytes` of disk in a
        reserve file for acks and the database + WAL under `max_db_bytes` (`gateway.diskspace`).

        Raises `OutboxCorrupt` (after renaming the file aside, `gateway.salvage`) when the integrity check
        fails; see `OutboxDb.open`. `keep_record_keys`: see `enqueue`.
        """
        db = OutboxDb.open(path, max_db_bytes=max_db_bytes, check=check, reserve_bytes=reserve_bytes)
        return cls(db, keep_record_keys)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self._db.read("SELECT name FROM schema_migrations ORDER BY name")]

    # ------------------------------------------------------------------ acquisition side
    def cursor(self, instrument: str) -> Cursor | None:
        rows = self._db.read(
            "SELECT epoch, last_record, identity FROM cursors WHERE instrument = ?", (instrument,)
        )
        return Cursor(int(rows[0][0]), int(rows[0][1]), rows[0][2]) if rows else None

    def set_cursor(self, instrument: str, cursor: Cursor) -> None:
        """Set an instrument's cursor (first sight with start_from=latest, or its identity learnt)."""
        with self._db.tx("setting a cursor") as conn:
            conn.execute(
                "INSERT INTO cursors (instrument, epoch, last_record, updated_at, identity) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (instrument) DO UPDATE SET epoch = excluded.epoch, "
                "last_record = excluded.last_record, updated_at = excluded.updated_at, identity = excluded.identity",
                (instrument, cursor.epoch, cursor.last_record, time.time(), cursor.identity),
            )

    def new_epoch(self, instrument: str, old: Cursor, latest: int, reason: str) -> Cursor:
        """The instrument's memory was cleared or replaced: record the event and start epoch + 1 at record 0,
        in one transaction (its records are then read again from the first, under new keys). Only the newest
        `KEEP_MEMORY_RESETS` events are kept (older ones are deleted in the same transaction)."""
        new = Cursor(old.epoch + 1, 0)
        now = time.time()
        with self._db.tx("starting a new cursor epoch") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO memory_resets (instrument, old_epoch, new_epoch, old_last_record, latest,"
                " reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (instrument, old.epoch, new.epoch, old.last_record, latest, reason, now),
            )
            keep_newest(conn, "memory_resets", KEEP_MEMORY_RESETS)
            conn.execute(
                "UPDATE cursors SET epoch = ?, last_record = 0, identity = NULL, updated_at = ? WHERE instrument = ?",
                (new.epoch, now, instrument),
            )
        return new

    def memory_resets(self) -> list[MemoryReset]:
        rows = self._db.read(
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
        sign: Signer,
        identity: str | None = None,
    ) -> list[Enqueued]:
        """Persist every result of `records` and advance the cursor, all in one transaction.

        Results whose key (instrument, epoch, record_no, line) is already known are skipped (a re-read
        after a crash). The commit does not wait for the disk; the WAL is flushed after it, outside the
        write lock (`sync`), and the rows are not sent until then (`unsynced_from`); `OutboxError` when the
        flush fails (the rows stay stored and held). Their payloads are kept in memory for their first send
        (`FreshPayloads`). Each result is serialised once (`kuaijian_schema.wire.seal`, finite values
        vouched for by `Draft`; a draft the interpretation process encoded already is sealed from its parts,
        `seal_parts`): the bytes `sign` signs are the stored (and later sent) payload but for its "sig".
        Encoded drafts are sealed before the write lock is taken, with the seqs they get when no other
        enqueue commits first and none is a re-read (`_seal_ahead`: the usual case — the transaction checks
        both and seals them again in it otherwise), so other writers (the acks) wait less for the lock.
        Drafts the interpretation process sealed already (`Draft.sealed`) with the seqs they get and this
        enqueue's `sign` are stored as they are, with no work here; any other is sealed again under its id.
        After the commit the batch of the last draft, if sealed, is told which seq comes next
        (`SealedBatch.settled`: its sealer corrects its guesses). `identity` is that of the last of
        `records` (stored with the cursor when it moves there). Returns
        the newly enqueued rows. A negative priority is refused (ValueError) before anything is written: send
        order keeps an index of the rows above 0 only (`due_order`). So is a transaction the disk has no room
        for (`OutboxFull`: `SpaceGuard.room` before it starts, `SpaceGuard.fits` once its payloads are known).

        The keys do not pile up: in the same transaction, the keys of every record more than
        `keep_record_keys` records behind the instrument's cursor (and of its earlier epochs) are deleted and
        the instrument's horizon (`record_horizon`) moved up to them. A record at or below the horizon counts
        as known, exactly as if its keys were still there — the cursor has passed it, so the worker never
        reads it again, and a caller that did would get no duplicate.
        """
        if not records:
            return []
        now = time.time()
        lo = min(r.record_no for r in records)
        hi = max(r.record_no for r in records)
        docs = [(rec.record_no, draft.line, draft.priority, draft) for rec in records for draft in rec.drafts]
        for record_no, _line, priority, _draft in docs:
            if priority < 0:
                raise ValueError(f"priority {priority} of {instrument} record {record_no} is below 0")
        seals = [draft.sealed for *_key, draft in docs]
        ids = _result_ids(seals)
        unsynced: int | None = None  # this enqueue's number (`_hold_unsynced`)
        try:
            sealed = self._seal_ahead(docs, ids, seals, sign)
            with self._db.tx("enqueueing results", grows=True, durable=False) as conn:
                seq = int(conn.execute(LAST_SEQ).fetchone()[0])
                row = conn.execute(
                    "SELECT epoch, record_no FROM record_horizon WHERE instrument = ?", (instrument,)
                ).fetchone()
                horizon = (int(row[0]), int(row[1])) if row else None
                known = {
                    (int(n), str(line))
                    for n, line in conn.execute(
                        "SELECT record_no, line FROM records WHERE instrument = ? AND epoch = ?"
                        " AND record_no BETWEEN ? AND ?",
                        (instrument, epoch, lo, hi),
                    )
                }
                if (
                    sealed is not None
                    and sealed[0] == seq + 1  # no other enqueue came first
                    and not known  # no re-read …
                    and (horizon is None or (epoch, lo) > horizon)
                    and len({(doc[0], doc[1]) for doc in docs}) == len(docs)  # … and no key twice
                ):
                    # the usual case: every result new and sealed already — made in one pass each
                    seqs = range(seq + 1, seq + 1 + len(docs))
                    rows = [
                        (n, rid, instrument, doc[2], now, payload)
                        for n, rid, doc, payload in zip(seqs, ids, docs, sealed[1], strict=True)
                    ]
                    keys = [
                        (instrument, epoch, doc[0], doc[1], n, rid)
                        for n, rid, doc in zip(seqs, ids, docs, strict=True)
                    ]
                    out = [Enqueued(n, rid, doc[2]) for n, rid, doc in zip(seqs, ids, docs, strict=True)]
                else:  # sealed again here: another enqueue came first, or a re-read
                    rows, keys, out = _enqueue_rows(
                        instrument, epoch, docs, ids, known, horizon, seq, now, sign
                    )
                seq += len(rows)
                self._db.space.fits(len(rows), sum(len(r[5]) for r in rows))
                if rows:
                    unsynced = self._hold_unsynced(rows[0][0])  # before the commit makes the rows visible
                append_rows(conn, "outbox", _OUTBOX_COLUMNS, rows)
                conn.execute(COUNT_ENQUEUED, (seq, len(out)))
                conn.execute(_ADVANCE_CURSOR, (instrument, epoch, hi, now, identity))
                self._store_keys(conn, instrument, horizon, keys)
                with self._seq_lock:
                    self._next_seq = seq + 1
        except BaseException:
            with self._seq_lock:
                self._next_seq = None  # not known: the next enqueue reads it in its transaction
            if unsynced is not None:
                with contextlib.suppress(OutboxError):
                    self.sync()  # (rolled back, or committed: either way not left held)
            raise
        if unsynced is not None:
            # kept for their first send while they are still held: no send, and so no ack, comes before
            self._fresh.keep((row[0], row[5]) for row in rows)
            self.sync(through=unsynced)
        last = seals[-1]
        if last is not None and last.batch.sign is sign:
            last.batch.settled(last.seq + 1, seq + 1)  # the sealer's next guesses start from the truth
        return out

    # ------------------------------------------------------------------ durability of the enqueued rows
    def _hold_unsynced(self, first_seq: int) -> int:
        """Inside an enqueue's transaction, before its commit: rows from `first_seq` on are not sent until
        a `sync` begun after this commit covers them. Returns the enqueue's number (given in commit order:
        under the write lock)."""
        with self._sync_lock:
            self._unsynced_numbers += 1
            self._unsynced[self._unsynced_numbers] = first_seq
            return self._unsynced_numbers

    def sync(self, through: int | None = None) -> None:
        """Make every enqueue committed so far durable (`OutboxDb.sync`: the WAL flushed outside the write
        lock, so the acks and the other writers go on meanwhile) and let its rows be sent. An enqueue calls
        it after its commit, before it returns, with its own number (`through`: every enqueue numbered up
        to it has committed or rolled back — they were numbered and ended under the write lock, one after
        the other — so the call need not wait for that lock, which an ack's transaction may hold);
        `OutboxError` when the disk refuses (the rows stay held and the next call — `unsynced_from` makes
        one — tries again)."""
        if through is not None:
            covered = through
        else:
            with self._db.lock:  # every enqueue numbered before this point has committed or rolled back
                with self._sync_lock:
                    covered = self._unsynced_numbers
        try:
            self._db.sync()
        except OutboxError:
            with self._sync_lock:
                self._sync_failed = True
            raise
        with self._sync_lock:
            for number in [n for n in self._unsynced if n <= covered]:
                del self._unsynced[number]
            if not self._unsynced:
                self._sync_failed = False

    def unsynced_from(self) -> int | None:
        """The lowest seq not yet known to be on the disk (None: every row is): rows from it on must not
        be sent — were one sent and then undone by a power cut, its seq would be given to another result.
        Tries the sync again when the last one failed (`OutboxError` when it fails again)."""
        with self._sync_lock:
            failed = self._sync_failed
        if failed:
            self.sync()
        with self._sync_lock:
            return min(self._unsynced.values(), default=None)

    def next_seq(self) -> int:
        """The seq the next enqueue's first result is expected to get (after the enqueues this outbox has
        begun; read from the file when none has run since it was opened, and kept as `_seal_ahead`'s guess):
        where drafts are sealed before they come here (`gateway.offload`), the guess they start from. Every
        enqueue checks the seqs."""
        with self._seq_lock:
            if self._next_seq is not None:
                return self._next_seq
        stored = int(self._db.read(LAST_SEQ)[0][0]) + 1
        with self._seq_lock:
            if self._next_seq is None:  # (an enqueue that ended meanwhile knows better)
                self._next_seq = stored  # the first enqueue's `_seal_ahead` starts from it too
            return self._next_seq

    def _seal_ahead(
        self,
        docs: list[tuple[int, str, int, Draft]],
        ids: list[str],
        seals: list[Sealed | None],
        sign: Signer,
    ) -> tuple[int, list[bytes]] | None:
        """(first seq, payloads): the encoded drafts of an enqueue sealed before it takes the write lock,
        with the seqs they get when no other enqueue commits first and none is a re-read — the usual case;
        the transaction checks both and seals them again otherwise. None when the next seq is not known yet
        (the first enqueue since opening, or after one failed) or a draft is not encoded."""
        parts = [draft.parts for *_key, draft in docs]
        if not _all_encoded(parts):
            return None
        with self._seq_lock:
            first = self._next_seq
            if first is None:
                return None
            self._next_seq = first + len(docs)
        if all(s is not None and s.seq == first + i and s.batch.sign is sign for i, s in enumerate(seals)):
            return first, [s.payload for s in seals if s is not None]  # sealed where made, as guessed
        return first, [
            seal_parts(p, rid, first + i, sign)[0] for i, (p, rid) in enumerate(zip(parts, ids, strict=True))
        ]

    def _store_keys(
        self,
        conn: sqlite3.Connection,
        instrument: str,
        horizon: tuple[int, int] | None,
        keys: list[tuple[str, int, int, str, int, str]],
    ) -> None:
        """Store the `keys` of the results just enqueued, delete the keys more than `keep_record_keys`
        records behind the cursor (and of earlier epochs) and raise the horizon to them; inside the caller's
        transaction. A key this would delete at once is not written at all (and counted as pruned all the
        same): most of a batch longer than `keep_record_keys` records. The horizon never passes the cursor
        and never moves down."""
        row = conn.execute(
            "SELECT epoch, last_record FROM cursors WHERE instrument = ?", (instrument,)
        ).fetchone()
        new = None if row is None else (int(row[0]), int(row[1]) - self._keep)
        if new is None or (horizon is not None and new <= horizon):
            append_rows(conn, "records", _RECORD_COLUMNS, keys)
            return
        kept = [k for k in keys if (k[1], k[2]) > new]  # (epoch, record_no) past the new horizon
        append_rows(conn, "records", _RECORD_COLUMNS, kept)
        pruned = len(keys) - len(kept)
        pruned += conn.execute(
            "DELETE FROM records WHERE instrument = ? AND epoch < ?", (instrument, new[0])
        ).rowcount
        pruned += conn.execute(
            "DELETE FROM records WHERE instrument = ? AND epoch = ? AND record_no <= ?", (instrument, *new)
        ).rowcount
        conn.execute(
            "INSERT INTO record_horizon (instrument, epoch, record_no, pruned) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (instrument) DO UPDATE SET epoch = excluded.epoch, record_no = excluded.record_no,"
            " pruned = pruned + excluded.pruned",
            (instrument, *new, pruned),
        )

    def skip_record(self, instrument: str, epoch: int, record_no: int, reason: str) -> None:
        """Record that `record_no` could not be read and move the cursor past it (one transaction). The
        `skipped` counter counts it (once, however often the same record is skipped while its row is kept);
        only the newest `KEEP_SKIPPED` rows are kept (older ones are deleted in the same transaction)."""
        now = time.time()
        with self._db.tx("skipping a record") as conn:
            conn.execute(
                "UPDATE counters SET value = value + 1 WHERE name = 'skipped' AND NOT EXISTS"
                " (SELECT 1 FROM skipped WHERE instrument = ? AND epoch = ? AND record_no = ?)",
                (instrument, epoch, record_no),
            )
            conn.execute(
                "INSERT OR REPLACE INTO skipped (instrument, epoch, record_no, reason, skipped_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (instrument, epoch, record_no, reason, now),
            )
            conn.execute(_ADVANCE_CURSOR, (instrument, epoch, record_no, now, None))
            keep_newest(conn, "skipped", KEEP_SKIPPED)

    def skipped_records(self) -> list[tuple[str, int, int, str]]:
        """(instrument, epoch, record_no, reason) of the skipped records kept (the newest `KEEP_SKIPPED`)."""
        rows = self._db.read("SELECT instrument, epoch, record_no, reason FROM skipped ORDER BY skipped_at")
        return [(str(a), int(b), int(c), str(d)) for a, b, c, d in rows]

    def stats(self) -> OutboxStats:
        with self._db.snapshot():
            counters = dict(self._db.read("SELECT name, value FROM counters"))
            depth, oldest = self._db.read("SELECT COUNT(*), MIN(enqueued_at) FROM outbox")[0]
            version = self._db.read("SELECT value FROM settings WHERE name = 'config_version'")
            keys = self._db.read("SELECT COUNT(*) FROM records")[0][0]
            pruned = self._db.read("SELECT COALESCE(SUM(pruned), 0) FROM record_horizon")[0][0]
        return OutboxStats(
            depth=int(depth),
            oldest_enqueued_at=None if oldest is None else float(oldest),
            last_seq=int(counters["seq"]),
            enqueued_total=int(counters["enqueued"]),
            acked_total=int(counters["acked"]),
            rejected_total=int(counters["rejected"]),
            skipped_total=int(counters["skipped"]),
            config_version=str(version[0][0]) if version else None,
            record_keys=int(keys),
            record_keys_pruned=int(pruned),
        )

    def cursors(self) -> dict[str, Cursor]:
        rows = self._db.read(
            "SELECT instrument, epoch, last_record, identity FROM cursors ORDER BY instrument"
        )
        return {str(i): Cursor(int(e), int(n), ident) for i, e, n, ident in rows}

    # ------------------------------------------------------------------ recovery
    def salvage_from(self, corrupt: Path, verify: Callable[[dict[str, Any]], bool]) -> SalvageReport:
        """Recover what can still be read from a corrupt outbox moved aside by `open`: un-sent results
        (each kept only if its JSON names the row's id and seq and `verify` accepts its signature), the
        de-duplication keys and the instrument cursors — so nothing un-sent is lost and the instruments are
        not read again from the start (which would queue duplicates under new ids). See `gateway.salvage`.

        Idempotent: rows already here are kept. Writes `<corrupt>.salvaged` with the report, which
        `unsalvaged()` uses to skip the file next time.
        """
        found = salvage.read(corrupt, verify)
        with self._db.tx("restoring salvaged rows") as conn:
            report = salvage.restore(conn, found)
        salvage.write_marker(report)
        return report

    def unsalvaged(self) -> list[Path]:
        """Corrupt outboxes moved aside next to this one that `salvage_from` has not processed yet."""
        return salvage.unsalvaged(self.path)
