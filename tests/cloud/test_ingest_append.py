"""Ingest's append of a batch's new results (`Database.insert_rows` from `cloud.ingest.process_batch`), on both
engines: on SQLite in a few multi-row INSERTs instead of one statement per result (``results`` has a trigger,
so every statement pays a statement journal), the rows visible in the order of the batch, and the daily
aggregates the trigger keeps (cloud.rollup) exactly what the stored results and samples give — through
duplicates, rejections, samples registered before their results in the same batch and registered after
them in a later one."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from typing import Any

from cloud.db import Database
from cloud.ingest import _RESULT_COLUMNS, Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, batch_payload
from tests.cloud.test_rollup import expected_tables, stored_tables, stored_totals, totals_of
from tests.cloud.test_samples import _producers, _reg

A1 = "370214101203-01"
A2 = "370214101203-02"
B1 = "370214102001-01"
STATIONS = (A1, A2, B1)
CHUNK = 16
"""Rows per INSERT the test allows (SQLite's bound-parameter limit is set to this many rows' columns)."""
VERDICTS = ("negative", "negative", "positive", "suspect", "invalid")


def _msg(station: str, payload: bytes, minute: int) -> Inbound:
    return Inbound(f"kj/v1/{station}/result", payload, T0 + timedelta(minutes=minute), mid=1, qos=1)


def _result(grid: Grid, n: int, sample: str | None = None) -> dict[str, Any]:
    """The n-th result: over three stations, five verdicts, measured 37 minutes apart back from T0 (local days
    change every 39 results; uploads within the timely hour and after it), QC flags on every seventh."""
    station = STATIONS[n % 3]
    return grid.result(
        station,
        sample={"id": sample or f"S-{n}", "product": ("菠菜", "韭菜")[n % 2], "producer": "李家农场"},
        analyte=("imidacloprid", "chlorpyrifos")[n % 2],
        verdict=VERDICTS[n % 5],
        measured_at=(T0 - timedelta(minutes=37 * n)).isoformat(),
        qc=["low_control"] if n % 7 == 0 else [],
    )


def _inserts(traced: list[str]) -> set[str]:
    """The INSERTs into results SQLite ran, from what its trace callback saw: each statement with its values
    (Python traces the expanded text, also once more for every row its trigger fires on)."""
    return {s for s in traced if s.startswith("INSERT INTO results ")}


def test_a_batch_is_appended_in_few_statements_in_order_with_exact_aggregates(
    db: Database, grid: Grid, settings: Settings
) -> None:
    producer = next(iter(_producers(db).values()))
    statements: list[str] = []
    if not db.is_postgres:
        db.raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, CHUNK * len(_RESULT_COLUMNS))
        db.raw.set_trace_callback(statements.append)
    # batch 1: a registration, then one result per message — two of them of the registered sample, two of a
    # sample registered only in batch 2 — a message redelivered within the batch, a forged result, a
    # several-result message
    early = _reg(grid, A1, "EARLY1", producer)
    results = [_result(grid, n) for n in range(100)]
    results += [_result(grid, n, "EARLY1") for n in (102, 105)]  # A1's
    results += [_result(grid, n, "LATE01") for n in (100, 103)]  # A2's
    forged = _result(grid, 110)
    forged["verdict"] = "negative" if forged["verdict"] != "negative" else "positive"  # changed after signing
    several = [_result(grid, 113 + 3 * k) for k in range(5)]  # all of B1
    messages = [_msg(A1, json.dumps(early).encode(), 0)]
    messages += [_msg(r["station"], json.dumps(r).encode(), 1 + n % 120) for n, r in enumerate(results)]
    messages += [messages[5], _msg(forged["station"], json.dumps(forged).encode(), 3)]
    messages.append(_msg(B1, batch_payload(several), 4))
    out = process_batch(db, messages, settings)
    assert (out.stored, out.duplicates, out.rejected) == (1 + len(results) + len(several), 1, 1)
    new_ids = [r["id"] for r in results + several]
    if not db.is_postgres:
        inserts = _inserts(statements)
        # 109 rows in chunks of at most 16 whose sizes are powers of two: 6 × 16 + 8 + 4 + 1
        assert len(inserts) == 9, f"{len(inserts)} INSERTs for {len(new_ids)} new results"
    assert [r[0] for r in db.execute("SELECT id FROM results ORDER BY rowid").fetchall()] == new_ids

    # batch 2: LATE01 registered after its results were stored; a redelivery of a stored result; new results
    statements.clear()
    late = _reg(grid, A2, "LATE01", producer)
    more = [_result(grid, 200 + n) for n in range(40)]
    messages = [
        _msg(A2, json.dumps(late).encode(), 200),
        _msg(results[7]["station"], json.dumps(results[7]).encode(), 200),
    ]
    messages += [_msg(r["station"], json.dumps(r).encode(), 201) for r in more]
    out = process_batch(db, messages, settings)
    assert (out.stored, out.duplicates, out.rejected) == (1 + len(more), 1, 0)
    if not db.is_postgres:
        inserts = _inserts(statements)
        assert len(inserts) == 3, f"{len(inserts)} INSERTs for {len(more)} new results"  # 16 + 16 + 8

    assert db.scalar("SELECT COUNT(*) FROM samples") == 2
    expected_days, expected_items = expected_tables(db)
    assert sum(v[3] for v in expected_days.values()) == 4  # the results of EARLY1 and LATE01
    assert len({k[0] for k in expected_days}) >= 3  # several local days
    days, items = stored_tables(db)
    assert days == expected_days
    assert items == expected_items
    assert stored_totals(db) == totals_of(expected_items)
