"""Outbox history tables stay bounded: `configs` (the one in force + `KEEP_CONFIGS`), `memory_resets`
(`KEEP_MEMORY_RESETS`) and `skipped` (`KEEP_SKIPPED`) keep their newest rows — newest by the order they were
added, whatever their times — while `skipped_total` stays the total ever skipped; `rejected` is not bounded
and its count is reported."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway import outbox as outbox_module
from gateway.outbox import (
    KEEP_CONFIGS,
    KEEP_MEMORY_RESETS,
    KEEP_SKIPPED,
    MIGRATIONS,
    Cursor,
    Draft,
    Outbox,
    RecordDrafts,
)
from kuaijian_schema.wire import hmac_signer
from tests.gateway.conftest import rejection, result_body

_sign = hmac_signer(b"0123456789abcdef-station-key")
FUTURE = 4_000_000_000.0  # 2096: times written by a clock that was later set back


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _clock_going_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """`time.time()` in the outbox gives an earlier time at every call (a station clock being set back)."""
    ticks: Iterator[float] = iter(range(2_000_000_000, 0, -1000))
    monkeypatch.setattr(outbox_module, "time", SimpleNamespace(time=lambda: float(next(ticks))))


def test_configs_keep_the_one_in_force_and_the_newest_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each config stored is written at an earlier time than the one before: the newest by time are the
    oldest stored, yet the ones kept are the one in force and the `KEEP_CONFIGS` stored just before it."""
    _clock_going_back(monkeypatch)
    path = tmp_path / "o.db"
    stored = [f"v{n}" for n in range(KEEP_CONFIGS + 7)]
    with Outbox.open(path) as box:
        for v in stored:
            assert box.store_config(v, {"version": v})
            kept = [r[0] for r in _rows(path, "SELECT version FROM configs ORDER BY rowid")]
            assert kept == stored[: stored.index(v) + 1][-(KEEP_CONFIGS + 1) :]
        assert box.current_config() == (stored[-1], {"version": stored[-1]})
    with Outbox.open(path) as box:
        assert box.current_config() == (stored[-1], {"version": stored[-1]})
        assert box.stats().config_version == stored[-1]


def test_a_config_stored_again_is_in_force_and_kept_however_old(tmp_path: Path) -> None:
    """The first config pushed again after `KEEP_CONFIGS` + 5 others (its row pruned long ago, or not) is in
    force and kept; the others kept are the newest before it."""
    path = tmp_path / "o.db"
    others = [f"v{n}" for n in range(1, KEEP_CONFIGS + 6)]
    with Outbox.open(path) as box:
        box.store_config("v0", {"version": "v0", "kits": []})
        for v in others:
            box.store_config(v, {"version": v})
        assert ("v0",) not in _rows(path, "SELECT version FROM configs")
        assert box.store_config("v0", {"version": "v0", "kits": ["again"]})
        assert box.current_config() == ("v0", {"version": "v0", "kits": ["again"]})
        assert box.store_config(others[-1], {"version": others[-1]})  # v0 no longer in force: an old one
        kept = [r[0] for r in _rows(path, "SELECT version FROM configs ORDER BY rowid")]
        assert kept == [*others[-KEEP_CONFIGS:-1], "v0", others[-1]]
        assert box.current_config() == (others[-1], {"version": others[-1]})


def _fill(path: Path, table: str, n: int) -> None:
    """`n` rows in `table` as an instrument "old" left them, in one transaction, all with future times."""
    conn = sqlite3.connect(path)
    with conn:
        if table == "skipped":
            conn.executemany(
                "INSERT INTO skipped (instrument, epoch, record_no, reason, skipped_at) VALUES ('old', 0, ?, 'x', ?)",
                [(k, FUTURE + k) for k in range(1, n + 1)],
            )
        else:
            conn.executemany(
                "INSERT INTO memory_resets (instrument, old_epoch, new_epoch, old_last_record, latest, reason,"
                " at) VALUES ('old', ?, ?, 7, 3, 'x', ?)",
                [(k - 1, k, FUTURE + k) for k in range(1, n + 1)],
            )
    conn.close()


def _add(box: Outbox, table: str, k: int) -> None:
    """One row added to `table` by the outbox, for instrument "new", keyed by `k`."""
    if table == "skipped":
        box.skip_record("new", 0, k, "unreadable")
    else:
        box.new_epoch("new", Cursor(k - 1, 5), 2, "memory cleared")


@pytest.mark.parametrize(
    ("table", "bound"), [("skipped", KEEP_SKIPPED), ("memory_resets", KEEP_MEMORY_RESETS)]
)
def test_history_tables_keep_their_newest_rows_at_their_bound(tmp_path: Path, table: str, bound: int) -> None:
    """A table already at its bound (rows written when the clock was years ahead) gets 3 rows more: the 3
    added first go, the 3 new ones stay, the table stays at its bound."""
    path = tmp_path / "o.db"
    Outbox.open(path).close()
    _fill(path, table, bound)
    key = "record_no" if table == "skipped" else "new_epoch"
    with Outbox.open(path) as box:
        for k in (1, 2, 3):
            _add(box, table, k)
            assert _rows(path, f"SELECT COUNT(*) FROM {table}") == [(bound,)]  # noqa: S608 - ours
    rows = _rows(path, f"SELECT instrument, {key} FROM {table} ORDER BY rowid")  # noqa: S608 - ours
    assert rows[:2] == [("old", 4), ("old", 5)]
    assert rows[-3:] == [("new", 1), ("new", 2), ("new", 3)]


def test_skipped_total_counts_every_skip_while_the_table_keeps_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "KEEP_SKIPPED", 3)
    path = tmp_path / "o.db"
    with Outbox.open(path) as box:
        for n in range(1, 11):
            box.skip_record("i", 0, n, f"unreadable {n}")
            assert box.stats().skipped_total == n
        assert [r[2] for r in box.skipped_records()] == [8, 9, 10]
        box.skip_record("i", 0, 10, "unreadable again")  # the same record, its row still kept: not twice
        assert box.stats().skipped_total == 10
        assert box.cursor("i") == Cursor(0, 10)
    with Outbox.open(path) as box:
        assert box.stats().skipped_total == 10
        assert len(box.skipped_records()) == 3


def test_an_outbox_from_before_0007_counts_the_records_it_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.db"
    monkeypatch.setattr("gateway.outbox_db.MIGRATIONS", MIGRATIONS[:6])
    with Outbox.open(path) as box:
        for n in range(1, 6):
            box.skip_record("i", 0, n, "unreadable")
    assert ("skipped",) not in _rows(path, "SELECT name FROM counters")
    monkeypatch.undo()
    with Outbox.open(path) as box:
        assert box.applied_migrations()[-1] == "0007_skipped_counter"
        assert box.stats().skipped_total == 5
        box.skip_record("i", 0, 6, "unreadable")
        assert box.stats().skipped_total == 6


def test_rejected_results_are_kept_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rejected results are never pruned (the technician requeues them); `rejected_total` is how many wait."""
    monkeypatch.setattr(outbox_module, "KEEP_SKIPPED", 1)
    monkeypatch.setattr(outbox_module, "KEEP_CONFIGS", 0)
    with Outbox.open(tmp_path / "o.db") as box:
        out = box.enqueue(
            "i", 0, [RecordDrafts(n, (Draft.of("ch0/0", 0, result_body(n)),)) for n in range(1, 6)], _sign
        )
        box.ack(rejected=[rejection(box, e.id, e.seq, "unknown station") for e in out])
        for n in range(6, 9):
            box.skip_record("i", 0, n, "unreadable")
            box.store_config(f"v{n}", {"version": f"v{n}"})
        assert box.stats().rejected_total == len(box.rejected_rows()) == 5
        assert box.requeue_rejected([out[0].seq]) == [out[0].seq]
        assert box.stats().rejected_total == len(box.rejected_rows()) == 4
