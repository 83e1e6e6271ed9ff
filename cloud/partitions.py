"""Monthly partitions of ``results`` on PostgreSQL, keyed by the time inside each result's UUIDv7 id.

Why the id: a UUIDv7 starts with the milliseconds at which the gateway made the result, so ranges of id text
are ranges of time, and the partition key *is* the primary key. ``PRIMARY KEY (id)`` stays a real
constraint across all partitions and ingest keeps ``INSERT … ON CONFLICT (id) DO NOTHING`` exactly as it is —
no second table of ids, no extra write per result. (Partitioning on ``measured_at`` would need the key in
every unique constraint, so the uniqueness of ``id`` would have to be enforced by a separate table written
on every insert.) The queries filter on ``measured_at``; they scan each partition's own indexes and read the
aggregates from the rollup (cloud.rollup), so they do not rely on partition pruning.

Does: name and bound a month's partition (`bounds`: ``results_p202611`` holds ids from the first
millisecond of November 2026 UTC up to December's), list the partitions that exist, and `maintain`: create
the partitions of the months ahead (``cloud tick`` and the scheduler call it) and of every month that has
rows in ``results_default`` — those rows are moved into the new partition in the same transaction, so a
result whose month had no partition is never lost, only parked in the DEFAULT partition until then. Ids that
are not UUIDv7 or carry an implausible time (before 2000, or beyond the months created ahead) stay in the
DEFAULT partition for good; they are stored and found like any other.

Does not: create the partitioned table (revision 0009), or anything on SQLite (one file, no partitions:
every function here is a no-op there), or drop old partitions (retention is a decision for the county).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from cloud.db import Database, transaction

PARENT = "results"
DEFAULT = "results_default"
AHEAD_MONTHS = 3
"""`maintain` keeps this many months after the current one created ahead."""
EARLIEST = date(2000, 1, 1)

_NAME = re.compile(r"^results_p(\d{4})(\d{2})$")

Run = Callable[[str], Sequence[Sequence[Any]]]
"""Runs one SQL statement and returns its rows (empty for a command): a `Database` or an Alembic
connection, adapted by the caller (`db_runner`)."""


def is_partition(name: str) -> bool:
    """True for the table names this module makes (they are not in cloud.schema's metadata)."""
    return name == DEFAULT or _NAME.match(name) is not None


def partition_name(month: date) -> str:
    return f"results_p{month.year:04d}{month.month:02d}"


def _next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def id_floor(month: date) -> str:
    """The smallest UUID text whose embedded time is in `month` (UTC): its 48-bit millisecond prefix, the
    rest zeros. Canonical UUID text is lowercase hex with hyphens in fixed places, so it sorts as the
    time does."""
    ms = int(datetime(month.year, month.month, 1, tzinfo=UTC).timestamp() * 1000)
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:12]}-0000-0000-000000000000"


def bounds(month: date) -> tuple[str, str]:
    """[lo, hi) of the ids in `month`'s partition."""
    return id_floor(month), id_floor(_next_month(month))


def month_of_id(rid: str) -> date | None:
    """The UTC month of the time in a UUID's first 48 bits (None when `rid` is no hex UUID text)."""
    try:
        ms = int(rid[:8] + rid[9:13], 16)
        when = datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return date(when.year, when.month, 1)


def existing(run: Run) -> set[date]:
    """The months that have a partition."""
    sql = (
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'results'"  # PARENT
    )
    rows = run(sql)
    found: set[date] = set()
    for (name,) in rows:
        m = _NAME.match(str(name))
        if m:
            found.add(date(int(m.group(1)), int(m.group(2)), 1))
    return found


def create(run: Run, month: date) -> str:
    """Create `month`'s partition, moving its rows out of the DEFAULT partition first (attaching a range
    that the DEFAULT partition still holds rows of would fail). Run it inside one transaction."""
    name = partition_name(month)
    lo, hi = bounds(month)
    where = f"id >= '{lo}' AND id < '{hi}'"
    run(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    run(f"INSERT INTO {name} SELECT * FROM {DEFAULT} WHERE {where}")  # noqa: S608 - bounds are ours
    run(f"DELETE FROM {DEFAULT} WHERE {where}")  # noqa: S608
    run(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')")
    return name


def months_with_rows(run: Run, table: str, last: date) -> list[date]:
    """The months from 2000 to `last` that have rows in `table` (ids in their range): one indexed MIN(id)
    per month found, a skip scan over the primary key, never a pass over the rows."""
    found: list[date] = []
    lo, stop = id_floor(EARLIEST), id_floor(_next_month(last))
    while True:
        rows = run(f"SELECT MIN(id) FROM {table} WHERE id >= '{lo}' AND id < '{stop}'")  # noqa: S608
        first = rows[0][0] if rows else None
        month = None if first is None else month_of_id(str(first))
        if month is None:
            return found
        found.append(month)
        lo = id_floor(_next_month(month))


def wanted(run: Run, today: date, ahead: int = AHEAD_MONTHS, also: str = DEFAULT) -> list[date]:
    """Months that should have a partition and do not: this month and `ahead` more, and every plausible
    month (2000 … the last month ahead) that has rows in table `also` (the DEFAULT partition: rows parked
    there are moved out by `create`)."""
    months = [date(today.year, today.month, 1)]
    for _ in range(ahead):
        months.append(_next_month(months[-1]))
    months += months_with_rows(run, also, months[-1])
    have = existing(run)
    return sorted({m for m in months if m not in have})


def maintain(run: Run, today: date, ahead: int = AHEAD_MONTHS) -> list[str]:
    """Create the missing partitions (see `wanted`); returns their names. The caller holds a transaction."""
    return [create(run, month) for month in wanted(run, today, ahead)]


def create_default(run: Run) -> None:
    """The DEFAULT partition: where a result whose month has no partition (yet) goes."""
    run(f"CREATE TABLE {DEFAULT} PARTITION OF {PARENT} DEFAULT")


def db_runner(db: Database) -> Run:
    """A `Run` over a cloud.db.Database."""

    def run(sql: str) -> Sequence[Sequence[Any]]:
        cur = db.execute(sql)
        return cur.fetchall() if cur.description else []

    return run


def maintain_db(db: Database, now: datetime, ahead: int = AHEAD_MONTHS) -> list[str]:
    """`maintain` on a cloud.db.Database in its own write transaction; nothing to do on SQLite."""
    if not db.is_postgres:
        return []
    run = db_runner(db)
    today = now.astimezone(UTC).date()
    if not wanted(run, today, ahead):  # the common case: a few catalog reads, no lock
        return []
    with transaction(db):  # the global write lock: two schedulers never attach the same month
        return maintain(run, today, ahead)
