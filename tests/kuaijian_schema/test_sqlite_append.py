"""`append_rows`: a batch appended in order, by a few multi-row statements of power-of-two sizes."""

from __future__ import annotations

import sqlite3

import pytest

from kuaijian_schema.sqlite_append import append_rows, sqlite_chunks


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 127, 128, 129, 300, 1000])
def test_rows_are_appended_in_order_by_few_statements(n: int) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB)")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 3 * 100)  # at most 100 rows a statement
    rows = [(i, f"r{i}", bytes([i % 256])) for i in range(n)]
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    append_rows(conn, "t", ("a", "b", "c"), rows)
    conn.set_trace_callback(None)
    assert conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows
    sizes = [size for _start, size in sqlite_chunks(n, 100)]
    assert sum(sizes) == n
    assert all(size & (size - 1) == 0 and size <= 64 for size in sizes), "powers of two within the limit"
    assert sizes == sorted(sizes, reverse=True)
    assert len(statements) == len(sizes) <= n // 64 + 6
