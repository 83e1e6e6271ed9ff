"""Durable store-and-forward outbox of the station gateway: the store API (what the rows mean).

Does: in ONE transaction per batch of instrument records, allocate the persistent per-station `seq`,
give each result its UUIDv7 id, sign it, store it, remember its unique key (instrument, epoch,
record no, line) and advance the instrument's cursor — so a crash anywhere re-reads at most the records
after the cursor, and a re-read is a no-op (keys more than `keep_record_keys` records behind the cursor are
pruned in the same transaction; those records stay known through the instrument's `record_horizon`). Rows
are keyed by seq / result id (never by time) and leave the outbox ONLY on the cloud's application ack
(station-originated sample registrations take the same path,
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

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway import salvage
from gateway.errors import DuplicateCode, OutboxCorrupt
from gateway.outbox_db import MIGRATIONS, Migration, OutboxDb
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
)
from gateway.salvage import SalvageReport
from kuaijian_schema.sqlite_append import append_rows
from kuaijian_schema.wire import Rejection, Signer, new_result_ids, payload_sha256, seal, seal_parts

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


# The seq counter set to the last seq given out, the enqueued total raised by the rows added (one statement).
_COUNT_ENQUEUED = "UPDATE counters SET value = CASE name WHEN 'seq' THEN ? ELSE value + ? END WHERE name IN ('seq', 'enqueued')"
_OUTBOX_COLUMNS = ("seq", "id", "instrument", "priority", "enqueued_at", "payload")
_RECORD_COLUMNS = ("instrument", "epoch", "record_no", "line", "seq", "id")


class Outbox:
    """The outbox database. Create with `Outbox.open(path)`; close with `close()`."""

    def __init__(self, db: OutboxDb, keep_record_keys: int = KEEP_RECORD_KEYS) -> None:
        if keep_record_keys < 0:
            raise ValueError("keep_record_keys must be >= 0")
        self._db = db
        self._keep = keep_record_keys
        self.path = db.path
        self.space = db.space

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
            _keep_newest(conn, "memory_resets", KEEP_MEMORY_RESETS)
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
        after a crash). Each result is serialised once (`kuaijian_schema.wire.seal`, finite values vouched
        for by `Draft`; a draft the interpretation process encoded already is sealed from its parts,
        `seal_parts`): the bytes `sign` signs are the stored (and later sent) payload but for its "sig".
        `identity` is that of the last of `records` (stored with the cursor when it moves there). Returns
        the newly enqueued rows. A negative priority is refused (ValueError): send order keeps an index of
        the rows above 0 only (`due_order`).

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
        ids = new_result_ids(len(docs))
        rows: list[tuple[int, str, str, int, float, bytes]] = []
        keys: list[tuple[str, int, int, str, int, str]] = []
        out: list[Enqueued] = []
        with self._db.tx("enqueueing results", grows=True) as conn:
            seq = int(conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0])
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
            for (record_no, line, priority, draft), rid in zip(docs, ids, strict=True):
                if (record_no, line) in known or (horizon is not None and (epoch, record_no) <= horizon):
                    continue  # a re-read: its key is here, or it was taken long ago and its key pruned
                if priority < 0:
                    raise ValueError(f"priority {priority} of {instrument} record {record_no} is below 0")
                known.add((record_no, line))
                seq += 1
                if draft.parts is not None:  # encoded already (the interpretation process)
                    payload, _sig = seal_parts(draft.parts, rid, seq, sign)
                else:
                    doc = dict(draft.wire)
                    doc["id"] = rid
                    doc["seq"] = seq
                    payload, _sig = seal(doc, sign, finite=True)
                rows.append((seq, rid, instrument, priority, now, payload))
                keys.append((instrument, epoch, record_no, line, seq, rid))
                out.append(Enqueued(seq, rid, priority))
            append_rows(conn, "outbox", _OUTBOX_COLUMNS, rows)
            conn.execute(_COUNT_ENQUEUED, (seq, len(out)))
            conn.execute(_ADVANCE_CURSOR, (instrument, epoch, hi, now, identity))
            self._store_keys(conn, instrument, horizon, keys)
        return out

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
            _keep_newest(conn, "skipped", KEEP_SKIPPED)

    def skipped_records(self) -> list[tuple[str, int, int, str]]:
        """(instrument, epoch, record_no, reason) of the skipped records kept (the newest `KEEP_SKIPPED`)."""
        rows = self._db.read("SELECT instrument, epoch, record_no, reason FROM skipped ORDER BY skipped_at")
        return [(str(a), int(b), int(c), str(d)) for a, b, c, d in rows]

    # ------------------------------------------------------------------ delivery side
    def due_order(self, limit: int, after: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """(seq, priority) of up to `limit` outbox rows in send order: priority first, then seq; with `after`
        = (priority, seq), only the rows that come after that one (whatever comes before it is not read).

        The rows above priority 0 come from their own index (`outbox_urgent`), those at 0 (most results)
        from the primary key in seq order, skipping any urgent row among them — no more than are still
        queued behind `after` (the link's rows in flight) or, from the top, fewer than `limit`. Each read
        returns its rows as JSON arrays in one row (`payloads` says why)."""
        rows: list[tuple[int, int]] = []
        start = 0  # the priority-0 rows are read after this seq
        if after is None:
            rows = self._urgent("", (), limit)
        elif after[0] > 0:
            prio, seq = after
            rows = self._urgent("AND priority = ? AND seq > ?", (prio, seq), limit)
            if len(rows) < limit:
                rows += self._urgent("AND priority < ?", (prio,), limit - len(rows))
        else:
            start = after[1]
        if len(rows) < limit:
            found = self._db.read(
                "SELECT json_group_array(seq) FROM"
                " (SELECT seq FROM outbox WHERE seq > ? AND priority = 0 ORDER BY seq LIMIT ?)",
                (start, limit - len(rows)),
            )[0][0]
            seqs: list[int] = orjson.loads(found)
            seqs.sort()  # (the order an aggregate takes its rows in is not promised: the set is)
            rows += [(s, 0) for s in seqs]
        return rows

    def _urgent(self, where: str, params: tuple[int, ...], limit: int) -> list[tuple[int, int]]:
        """(seq, priority) of the first `limit` rows above priority 0 (and `where`) in send order."""
        seqs, prios = self._db.read(
            "SELECT json_group_array(seq), json_group_array(priority) FROM (SELECT seq, priority FROM outbox"  # noqa: S608
            f" WHERE priority > 0 {where} ORDER BY priority DESC, seq LIMIT ?)",  # (`where` is ours)
            (*params, limit),
        )[0]
        rows = list(zip(orjson.loads(seqs), orjson.loads(prios), strict=True))
        rows.sort(key=_send_key)
        return rows

    def payloads(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """Stored signed JSON (UTF-8) of the given seqs (missing ones were acked meanwhile).

        Read as one row per 500 seqs — their seqs and lengths as JSON arrays and the payloads end to end —
        not a row per payload (each statement step lets go of the GIL, `kuaijian_schema.sqlite_append`)."""
        out: dict[int, bytes] = {}
        for i in range(0, len(seqs), 500):
            chunk = list(seqs[i : i + 500])
            # stored as a blob since 0006 (no decoding on the way in or out), as text before
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT json_group_array(seq), json_group_array(length(CAST(payload AS BLOB))),"  # noqa: S608
                f" CAST(group_concat(payload, '') AS BLOB) FROM outbox WHERE seq IN ({marks})"  # (only ? marks)
            )
            found, lengths, joined = self._db.read(sql, chunk)[0]
            at = 0
            for seq, n in zip(orjson.loads(found), orjson.loads(lengths), strict=True):
                out[seq] = joined[at : at + n]
                at += n
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
        # Not durable (no fsync of its own): an ack undone by a power cut only sends its results again, and
        # the cloud stores by id (a redelivery is a no-op). Results are only ever added durably.
        with self._db.tx("applying an ack", essential=True, durable=False) as conn:
            # By seq first (the primary key: the cloud names each result by both), then the ids not named
            # by a row deleted here (an ack with ids alone, from an older cloud: the id index).
            by_seq: set[str] = set()
            seq_keys = [int(s) for s in seqs]
            for i in range(0, len(seq_keys), 500):
                chunk = seq_keys[i : i + 500]
                gone, gone_ids = self._delete(conn, "seq", chunk)
                acked += gone
                by_seq.update(gone_ids)
                unknown += len(chunk) - len(gone)
            rest = [i for i in map(str, ids) if i not in by_seq]
            for i in range(0, len(rest), 500):
                id_chunk = rest[i : i + 500]
                gone, _ = self._delete(conn, "id", id_chunk)
                acked += gone
                unknown += len(id_chunk) - len(gone)
            for rej in rejected:
                if rej.seq is None or rej.sha256 is None:
                    ignored += 1
                    continue
                row = conn.execute(
                    "SELECT seq, id, payload FROM outbox WHERE id = ? AND seq = ?", (rej.id, int(rej.seq))
                ).fetchone()
                if row is None or stored_sha256(row[2]) != rej.sha256:
                    ignored += 1
                    continue
                conn.execute("DELETE FROM outbox WHERE seq = ?", (int(row[0]),))
                conn.execute(
                    "INSERT OR REPLACE INTO rejected (seq, id, reason, rejected_at, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (int(row[0]), str(row[1]), rej.reason, now, row[2]),
                )
                moved.append(int(row[0]))
            if acked or moved:
                conn.execute(
                    "UPDATE counters SET value = value + CASE name WHEN 'acked' THEN ? ELSE ? END"
                    " WHERE name IN ('acked', 'rejected')",
                    (len(acked), len(moved)),
                )
        return AckOutcome(tuple(acked), tuple(moved), unknown, ignored)

    @staticmethod
    def _delete(conn: sqlite3.Connection, column: str, keys: Sequence[object]) -> tuple[list[int], list[str]]:
        """Delete the outbox rows whose `column` ("seq" or "id") is one of `keys`; (their seqs, their ids).
        Two statement steps, whatever the number of rows: their seqs and ids are read as JSON arrays in
        one row (a `DELETE … RETURNING` steps once per row: see `payloads`)."""
        where = f"WHERE {column} IN ({','.join('?' * len(keys))})"
        found = conn.execute(
            f"SELECT json_group_array(seq), json_group_array(id) FROM outbox {where}",  # noqa: S608 - ours
            keys,
        ).fetchone()
        seqs: list[int] = orjson.loads(found[0])
        if seqs:
            conn.execute(f"DELETE FROM outbox {where}", keys)  # noqa: S608 - column ours, values bound
        return seqs, orjson.loads(found[1])

    def requeue_rejected(self, seqs: Sequence[int] | None = None) -> list[int]:
        """Move rejected results (all, or those with `seqs`) back into the outbox, unchanged (same id, seq and
        signature), for delivery once the cause is fixed — e.g. the station enrolled, or its key updated.
        Returns the seqs requeued."""
        now = time.time()
        with self._db.tx("requeueing rejected results") as conn:
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
        rows = self._db.read(
            "SELECT seq, id, reason, rejected_at FROM rejected ORDER BY seq DESC LIMIT ?", (limit,)
        )
        return [RejectedRow(int(a), str(b), str(c), float(d)) for a, b, c, d in rows]

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

    # ------------------------------------------------------------------ station-originated messages
    def enqueue_registration(
        self, code: str, body: dict[str, Any], priority: int, sign: Signer
    ) -> tuple[Enqueued, dict[str, Any]]:
        """Store a registration under its unique `code` and queue it for delivery, in ONE transaction with
        the seq counter (same id/seq/sig/ack rules as a result). Raises DuplicateCode if `code` is taken."""
        now = time.time()
        with self._db.tx("enqueueing a registration", grows=True) as conn:
            if priority < 0:
                raise ValueError(f"priority {priority} is below 0")
            if conn.execute("SELECT 1 FROM registrations WHERE code = ?", (code,)).fetchone():
                raise DuplicateCode(f"样品编号 {code} 已被登记 (sample code {code} is already registered)")
            seq = int(conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0]) + 1
            doc = dict(body)
            doc["id"] = new_result_ids(1)[0]
            doc["seq"] = seq
            sealed, doc["sig"] = seal(doc, sign)
            conn.execute(
                "INSERT INTO outbox (seq, id, instrument, priority, enqueued_at, payload) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, doc["id"], "@registrations", priority, now, sealed),
            )
            conn.execute(
                "INSERT INTO registrations (code, seq, id, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                (code, seq, doc["id"], now, sealed.decode()),
            )
            conn.execute(_COUNT_ENQUEUED, (seq, 1))
        return Enqueued(seq, doc["id"], priority), doc

    def registrations(self, limit: int = 100, prefix: str = "") -> list[dict[str, Any]]:
        """Stored registrations (newest first), optionally those whose code starts with `prefix`; each with
        `delivered` (False while still in the outbox)."""
        rows = self._db.read(
            "SELECT r.doc, o.seq IS NULL FROM registrations r LEFT JOIN outbox o ON o.seq = r.seq"
            " WHERE substr(r.code, 1, ?) = ? ORDER BY r.seq DESC LIMIT ?",
            (len(prefix), prefix, limit),
        )
        return [{**json.loads(doc), "delivered": bool(done)} for doc, done in rows]

    # ------------------------------------------------------------------ pushed config
    def store_config(self, version: str, doc: dict[str, Any]) -> bool:
        """Record `doc` as the current config `version` atomically; False when already current. In the same
        transaction, the stored configs other than the one in force and the `KEEP_CONFIGS` stored last before
        it are deleted."""
        with self._db.tx("storing the station config") as conn:
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
            # The one in force is never deleted, wherever it stands (it is the newest while `store_config`
            # is the only writer of both tables).
            conn.execute(
                "DELETE FROM configs WHERE version IS NOT (SELECT value FROM settings WHERE name = 'config_version')"
                " AND rowid <= (SELECT rowid FROM configs WHERE version IS NOT"
                " (SELECT value FROM settings WHERE name = 'config_version') ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (KEEP_CONFIGS,),
            )
        return True

    def current_config(self) -> tuple[str, dict[str, Any]] | None:
        rows = self._db.read(
            "SELECT c.version, c.doc FROM settings s JOIN configs c ON c.version = s.value "
            "WHERE s.name = 'config_version'"
        )
        if not rows:
            return None
        doc = json.loads(rows[0][1])
        if not isinstance(doc, dict):
            raise OutboxCorrupt(f"stored config {rows[0][0]} is not an object")
        return str(rows[0][0]), doc


def _keep_newest(conn: sqlite3.Connection, table: str, keep: int) -> None:
    """Delete all but the `keep` rows of `table` added last (highest rowid: a new row, or one replaced, gets
    one above every row there; time is not used, a station clock may be set back). Inside the caller's
    transaction; one statement, finding the cut by stepping over the `keep` + 1 highest rowids."""
    conn.execute(
        f"DELETE FROM {table} WHERE rowid <="  # noqa: S608 - the table is ours, the value bound
        f" (SELECT rowid FROM {table} ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
        (keep,),
    )


def _send_key(row: tuple[int, int]) -> tuple[int, int]:
    """Sort key of a (seq, priority) row in send order."""
    return -row[1], row[0]


def stored_sha256(payload: str | bytes) -> str:
    """`payload_sha256` of a stored payload (its canonical JSON; the raw text if it does not parse)."""
    try:
        return payload_sha256(json.loads(payload))
    except (ValueError, TypeError, RecursionError):
        return hashlib.sha256(payload.encode() if isinstance(payload, str) else payload).hexdigest()
