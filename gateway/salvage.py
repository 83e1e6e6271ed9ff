"""A corrupt outbox: moved aside (never replaced or deleted), its seq high-water mark kept, and whatever can
still be read from it salvaged into the new outbox.

Does: `move_aside` renames a corrupt database (with its -wal/-shm) to `<db>.corrupt-<UTC time>` and writes
`<db>.seq-floor` — the highest seq it can still read, or a clock-derived floor — so a new outbox never reuses a
seq (`read_seq_floor`); `read` pages through its tables in key order (skipping past or reading backwards to a
damaged page) and keeps each un-sent result only when its JSON names the row's id and seq and its signature
verifies; `restore` puts those results, the de-duplication keys, the pruning horizons and the instrument
cursors into the new outbox (inside the caller's transaction, idempotently) — an instrument whose cursor is
unreadable gets one after the last record known to be taken, so pruned records are not read again; `write_marker` records the report in
`<corrupt>.salvaged`, which `unsalvaged` uses to skip the file next time.

Does not: open the live outbox, decide when to salvage (`gateway.service` does it before any worker runs), or
repair the corrupt file (it is only ever read, read-only).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import OutboxCorrupt

SEQ_FLOOR_SUFFIX = ".seq-floor"
Row = tuple[Any, ...]


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
class Salvaged:
    """The readable rows of a corrupt outbox (`read`), before `restore`."""

    source: Path
    found: int  # outbox rows read
    valid: tuple[Row, ...]  # (seq, id, instrument, priority, enqueued_at, payload) that verified
    records: tuple[Row, ...]  # (instrument, epoch, record_no, line, seq, id)
    cursors: tuple[Row, ...]  # (instrument, epoch, last_record, updated_at)
    horizons: tuple[Row, ...]  # (instrument, epoch, record_no): records taken whose keys were pruned
    errors: tuple[str, ...]


# ---------------------------------------------------------------------------------------------- moving aside
def move_aside(path: Path, detail: str) -> OutboxCorrupt:
    """Rename the corrupt database at `path` (and its -wal/-shm) aside and write the seq floor; returns the
    `OutboxCorrupt` to raise, whose message says where the file went and what happens next."""
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


def read_seq_floor(path: Path) -> int | None:
    """The seq floor `move_aside` left for a new outbox at `path` (None when there is none)."""
    floor_file = path.with_name(path.name + SEQ_FLOOR_SUFFIX)
    try:
        return int(floor_file.read_text().strip())
    except (OSError, ValueError):
        return None


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


# ---------------------------------------------------------------------------------------------- salvaging
def unsalvaged(path: Path) -> list[Path]:
    """Corrupt outboxes moved aside next to the outbox at `path` that have no `.salvaged` marker yet."""
    found = sorted(path.parent.glob(f"{path.name}.corrupt-*"))
    return [
        p
        for p in found
        if not p.name.endswith(("-wal", "-shm", ".salvaged"))
        and not p.with_name(p.name + ".salvaged").exists()
    ]


def read(corrupt: Path, verify: Callable[[dict[str, Any]], bool]) -> Salvaged:
    """Everything still readable in `corrupt` (opened read-only): un-sent results that verify, the
    de-duplication keys and the cursors. Unreadable tables or ranges are listed in `errors`."""
    errors: list[str] = []
    try:
        src = sqlite3.connect(f"file:{corrupt}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error as exc:
        return Salvaged(corrupt, 0, (), (), (), (), (f"cannot open: {exc}",))
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
        horizons: list[Row] = []
        with contextlib.suppress(sqlite3.Error):  # an outbox from before migration 0005 has none
            if src.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_horizon'").fetchone():
                horizons = _read_table(
                    src, "record_horizon", "instrument, epoch, record_no", ("instrument",), errors
                )
    finally:
        src.close()
    valid: list[Row] = []
    for seq, rid, instrument, priority, enqueued_at, payload in outbox_rows:
        try:
            doc = json.loads(payload)
            ok = isinstance(doc, dict) and doc.get("id") == rid and doc.get("seq") == seq and verify(doc)
        except (TypeError, ValueError):
            ok = False
        if ok:
            valid.append((seq, rid, instrument, priority, enqueued_at, payload))
    return Salvaged(
        corrupt,
        len(outbox_rows),
        tuple(valid),
        tuple(records),
        tuple(cursors),
        tuple(horizons),
        tuple(errors),
    )


def restore(conn: sqlite3.Connection, found: Salvaged) -> SalvageReport:
    """Put `found` into the outbox open on `conn`, inside the caller's transaction. Rows already here are
    kept (idempotent); a seq held by another result here is never overwritten but reported."""
    errors = list(found.errors)
    restored = 0
    for row in found.valid:
        seq, rid = row[0], row[1]
        holder = conn.execute("SELECT id FROM outbox WHERE seq = ?", (seq,)).fetchone()
        if holder is not None:
            if holder[0] != rid:  # cannot happen with the seq floor; never overwrite, say so
                errors.append(f"seq {seq} is taken by another result here; {rid} left in {found.source}")
            continue
        if conn.execute("SELECT 1 FROM outbox WHERE id = ?", (rid,)).fetchone():
            continue
        conn.execute(
            "INSERT INTO outbox (seq, id, instrument, priority, enqueued_at, payload) VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
        restored += 1
    before = conn.total_changes
    for row in found.records:
        conn.execute(
            "INSERT OR IGNORE INTO records (instrument, epoch, record_no, line, seq, id) VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
    records_restored = conn.total_changes - before
    for row in found.horizons:
        conn.execute(
            "INSERT INTO record_horizon (instrument, epoch, record_no, pruned) VALUES (?, ?, ?, 0)"
            " ON CONFLICT (instrument) DO UPDATE SET epoch = excluded.epoch, record_no = excluded.record_no"
            " WHERE (excluded.epoch, excluded.record_no) > (epoch, record_no)",
            row,
        )
    before = conn.total_changes
    for row in found.cursors:
        conn.execute(
            "INSERT INTO cursors (instrument, epoch, last_record, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (instrument) DO UPDATE SET last_record = MAX(last_record, excluded.last_record)"
            " WHERE epoch = excluded.epoch",
            row,
        )
    # An instrument whose cursor could not be read: continue after the last record known to be taken
    # (its newest key, or its horizon) rather than from the start, which would re-read what was pruned.
    taken: dict[str, tuple[int, int]] = {}
    for inst, epoch, record_no, *_ in (*found.records, *found.horizons):
        taken[inst] = max(taken.get(inst, (epoch, record_no)), (epoch, record_no))
    for inst, (epoch, record_no) in sorted(taken.items()):
        conn.execute(
            "INSERT INTO cursors (instrument, epoch, last_record, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (instrument) DO NOTHING",
            (inst, epoch, record_no, time.time()),
        )
    cursors_restored = conn.total_changes - before
    conn.execute("UPDATE counters SET value = value + ? WHERE name = 'enqueued'", (restored,))
    # never hand out a seq the old outbox used (the floor file normally guarantees it already)
    top = max([r[0] for r in found.valid] + [r[4] for r in found.records], default=0)
    conn.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'seq'", (top,))
    return SalvageReport(
        found.source,
        found.found,
        restored,
        found.found - len(found.valid),
        records_restored,
        cursors_restored,
        tuple(errors),
    )


def write_marker(report: SalvageReport) -> None:
    """Record `report` next to its corrupt file (`<corrupt>.salvaged`), marking the file as done."""
    with contextlib.suppress(OSError):
        report.source.with_name(report.source.name + ".salvaged").write_text(
            json.dumps(report.as_dict(), indent=2) + "\n"
        )


def _read_table(
    conn: sqlite3.Connection,
    table: str,
    columns: str,
    key: tuple[str, ...],
    errors: list[str],
    chunk: int = 500,
) -> list[Row]:
    """Rows of `table` in primary-key order, paging by key so a damaged page costs only its own rows where
    possible: for an integer key the scan skips ahead past an unreadable stretch (doubling the jump);
    otherwise, or when that fails too, it reads backwards from the end to the damage."""
    names = [c.strip() for c in columns.split(",")]
    idx = [names.index(k) for k in key]
    order_by = ", ".join(key)
    tup = f"({', '.join(key)})" if len(key) > 1 else key[0]
    marks = f"({', '.join('?' for _ in key)})" if len(key) > 1 else "?"
    rows: dict[Row, Row] = {}

    def page(cmp: str, direction: str, after: Row | None) -> list[Row]:
        where = "" if after is None else f"WHERE {tup} {cmp} {marks}"
        sql = (
            f"SELECT {columns} FROM {table} {where} "  # noqa: S608 - identifiers are ours, values bound
            f"ORDER BY {', '.join(f'{k} {direction}' for k in key)} LIMIT {chunk}"
        )
        return [tuple(r) for r in conn.execute(sql, () if after is None else after).fetchall()]

    for cmp, direction in ((">", "ASC"), ("<", "DESC")):
        after: Row | None = None
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
