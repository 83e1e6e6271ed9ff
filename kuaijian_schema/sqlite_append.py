"""Appending many rows to an SQLite table in a few statements — the one way the gateway's outbox and the
cloud's SQLite storage write a batch.

Does: `append_rows(conn, table, columns, rows)` — multi-row ``INSERT … VALUES (…), (…), …`` statements whose
sizes are powers of two, largest first, up to the bound-parameter limit (`sqlite_chunks`), so a table's
appends use at most a dozen statement texts and the connection's statement cache keeps them prepared (an
uncached 500-row statement cost ~6 µs a row to prepare).

Why not one ``executemany`` (one statement step per row), measured: in the cloud, a table with a trigger
(``results``: cloud.rollup) makes SQLite open a statement journal for every statement and copy into it every
page the statement writes — the same B-tree pages once per row (benchmarks/cloud.py --per-message: about 40
→ 25 µs a row); in the gateway, the sqlite3 module lets go of the GIL around every step, and with the
gateway's other threads waiting for it each hand-over costs more than the row (128-row batches beside a
busy Python thread: 5.8–15.4 µs a row by executemany, 3.5–6.4 by multi-row INSERTs).

Does not: open, commit or roll back (the caller's transaction), handle conflicts (a row whose key exists
raises `sqlite3.IntegrityError`), or check `table`/`columns` — trusted identifiers, never input.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any


def sqlite_chunks(rows: int, limit: int) -> Iterator[tuple[int, int]]:
    """(start, size) of the multi-row INSERTs that append `rows` rows, each of at most `limit` rows (the
    bound-parameter limit over the row's columns): sizes are powers of two, largest first."""
    size = 1 << max(limit, 1).bit_length() - 1
    start = 0
    while start < rows:
        while size > rows - start:
            size //= 2
        yield start, size
        start += size


def append_rows(
    conn: sqlite3.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Append `rows` (each a value per column of `columns`) to `table`, in their order, inside the caller's
    transaction."""
    if not rows:
        return
    names = ", ".join(columns)
    row_marks = "(" + ", ".join("?" * len(columns)) + ")"
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns)
    for start, size in sqlite_chunks(len(rows), limit):
        values = ", ".join([row_marks] * size)
        params = [v for row in rows[start : start + size] for v in row]
        conn.execute(f"INSERT INTO {table} ({names}) VALUES {values}", params)  # noqa: S608 - see Does not
