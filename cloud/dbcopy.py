"""Move a cloud database to another engine: `kuaijian cloud migrate-db --from sqlite:///… --to postgresql://…`.

Does: bring both databases to the newest schema revision (the source too: a database made by an older release
is upgraded first), refuse a target that already holds data, copy every table in foreign-key order inside ONE
target transaction (all or nothing; `Database.insert_rows`: COPY on PostgreSQL, multi-row INSERTs on SQLite;
on PostgreSQL the monthly results partitions of the source's months are made first, cloud.partitions; the
daily aggregates of cloud.rollup are not copied: the target's triggers rebuild them as the results arrive),
reset the target's id sequences, then verify that every table holds as many rows on both sides and that the
results' ids match (count, smallest, largest). `results` are copied in the source's insert order, so the
PostgreSQL ``rowid`` (what the live feed tails) keeps that order.

Does not: change the source's data, copy between two databases while ingest writes to the source (stop
`kuaijian cloud serve`/`ingest` first), or move the broker's files (`kuaijian cloud mosquitto-auth` rewrites
them from the database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloud import partitions
from cloud.db import Database, open_db, redacted, transaction
from cloud.errors import Conflict
from cloud.schema import DERIVED, TABLES, columns_for

CHUNK = 5000


@dataclass(frozen=True)
class TableCount:
    table: str
    source: int
    target: int

    @property
    def ok(self) -> bool:
        return self.source == self.target


@dataclass
class CopyReport:
    source: str
    target: str
    tables: list[TableCount] = field(default_factory=list)
    results_ids_match: bool = False

    @property
    def verified(self) -> bool:
        return self.results_ids_match and all(t.ok for t in self.tables)


def _count(db: Database, table: str) -> int:
    return int(db.scalar(f"SELECT COUNT(*) FROM {table}"))  # noqa: S608 - table names come from cloud.schema


def _order(table: Any, dialect: str) -> str:
    if table.name == "results":
        return "rowid"  # insert order on both engines
    return ", ".join(c.name for c in table.primary_key.columns)


def _rows(db: Database, table: Any, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    cur = db.execute(
        f"SELECT {', '.join(columns)} FROM {table.name} ORDER BY {_order(table, db.dialect)}"  # noqa: S608
    )
    while True:
        chunk = cur.fetchmany(CHUNK)
        if not chunk:
            return
        yield [tuple(r) for r in chunk]


def _reset_sequences(db: Database) -> None:
    """After explicit ids were copied, make PostgreSQL's serial sequences continue above them."""
    if not db.is_postgres:
        return
    for table in TABLES:
        pk = list(table.primary_key.columns)
        if len(pk) == 1 and pk[0].name == "id" and pk[0].type.python_type is int:
            db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), COALESCE(MAX(id), 1),"  # noqa: S608
                f" MAX(id) IS NOT NULL) FROM {table.name}"
            )


def _partitions_for(src: Database, dst: Database) -> None:
    """On a PostgreSQL target, the monthly results partitions of every month the source has results of,
    made before the copy (else those rows would be copied into the DEFAULT partition and moved again)."""
    if not dst.is_postgres:
        return
    run = partitions.db_runner(dst)
    have = partitions.existing(run)
    last = max(have, default=datetime.now(UTC).date())
    for month in partitions.months_with_rows(partitions.db_runner(src), "results", last):
        if month not in have:
            partitions.create(run, month)


def _id_summary(db: Database) -> tuple[Any, ...]:
    return tuple(db.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM results").fetchone())


def copy_database(source: str, target: str, progress: Callable[[str, int], None] | None = None) -> CopyReport:
    """Copy `source` into the empty `target` (both a path or URL) and verify; see the module docstring.
    Raises Conflict when the target already holds data, DatabaseError when either database fails."""
    src = open_db(source)
    try:
        dst = open_db(target)
        try:
            busy = [t.name for t in TABLES if _count(dst, t.name)]
            if busy:
                raise Conflict(
                    f"the target already holds data (tables {', '.join(busy)}): give an empty database"
                )
            report = CopyReport(source=redacted(source), target=redacted(target))
            with transaction(dst):
                _partitions_for(src, dst)
                for table in TABLES:
                    if table.info.get(DERIVED):
                        continue  # rebuilt by the target's triggers as the rows arrive
                    columns = [
                        c for c in columns_for(table, src.dialect) if c in columns_for(table, dst.dialect)
                    ]
                    copied = 0
                    for rows in _rows(src, table, columns):
                        dst.insert_rows(table.name, columns, rows)
                        copied += len(rows)
                        if progress is not None:
                            progress(table.name, copied)
                _reset_sequences(dst)
            report.tables = [TableCount(t.name, _count(src, t.name), _count(dst, t.name)) for t in TABLES]
            report.results_ids_match = _id_summary(src) == _id_summary(dst)
            return report
        finally:
            dst.close()
    finally:
        src.close()
