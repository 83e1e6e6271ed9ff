"""Several ingest workers on one database: results of ONE station arriving at two workers at the same moment
keep the station's seq tracking right (high-water mark, no invented gaps), on both engines. On PostgreSQL the
batch locks its stations' rows (SQLite serialises every writer on the file lock anyway)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from cloud.db import Database, connect, transaction
from cloud.errors import CloudError
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid

A1 = "370214101203-01"
B1 = "370214102001-01"
ROUNDS = 12
PER_BATCH = 5


def _msg(station: str, doc: dict[str, Any]) -> Inbound:
    return Inbound(f"kj/v1/{station}/result", json.dumps(doc).encode(), T0)


def test_two_workers_same_station_keep_seq_tracking_right(
    db: Database, grid: Grid, settings: Settings
) -> None:
    # worker 0 gets the even rounds' seqs of A1, worker 1 the odd ones, both always hold some of B1 too:
    # every round both commit batches of the same stations at once.
    batches: list[list[list[Inbound]]] = [[], []]
    seq = {A1: 0, B1: 0}
    for _ in range(ROUNDS):
        for worker in (0, 1):
            batch = []
            for station in (A1, B1):
                for _ in range(PER_BATCH):
                    seq[station] += 1
                    batch.append(_msg(station, grid.result(station, seq=seq[station])))
            batches[worker].append(batch)
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        conn = connect(settings.database)
        try:
            for batch in batches[worker]:
                barrier.wait()
                process_batch(conn, batch, settings)
        except (CloudError, threading.BrokenBarrierError) as exc:  # reported below
            errors.append(exc)
            barrier.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker hung (lock never released?)"
    assert not errors, errors
    total = ROUNDS * 2 * PER_BATCH
    for station in (A1, B1):
        assert db.scalar("SELECT high_seq FROM stations WHERE id = ?", [station]) == total
        assert db.scalar("SELECT COUNT(*) FROM results WHERE station = ?", [station]) == total
        open_gaps = db.dicts(
            "SELECT first_seq, last_seq FROM seq_gaps WHERE station = ? AND closed_at IS NULL", [station]
        )
        assert open_gaps == [], f"{station}: gaps that do not exist: {open_gaps}"


def _lock_waiters(db: Database) -> int:
    return int(db.scalar("SELECT COUNT(*) FROM pg_locks WHERE NOT granted"))


def test_an_id_stored_meanwhile_by_another_worker_is_not_acked_as_stored(
    db: Database, grid: Grid, settings: Settings
) -> None:
    # worker A stores id X for station A1 and has not committed; worker B receives a result of ANOTHER station
    # (A2, validly signed by A2) under the same id X: B's station locks do not order it behind A, so B's insert
    # meets A's row only in the unique index. B must then see X stored with other content (a conflicting
    # duplicate, rejected) — not ack X as stored (ON CONFLICT DO NOTHING did: acked, never stored).
    a2 = "370214101203-02"
    mine = grid.result(A1)
    theirs = grid.result(a2, id=mine["id"])
    outcome: list[Any] = []
    conn_a, conn_b = connect(settings.database), connect(settings.database)
    try:
        with transaction(conn_a, stations=[A1]):
            stored = process_batch(conn_a, [_msg(A1, mine)], settings)  # joins A's open transaction
            assert stored.stored == 1
            worker_b = threading.Thread(
                target=lambda: outcome.append(process_batch(conn_b, [_msg(a2, theirs)], settings))
            )
            worker_b.start()
            if db.is_postgres:  # B's insert waits for A's transaction (SQLite: B waits for the file lock)
                deadline = time.monotonic() + 20
                while _lock_waiters(db) == 0 and worker_b.is_alive():
                    assert time.monotonic() < deadline, "worker B never reached A's row"
                    time.sleep(0.01)  # polling a condition, bounded
        worker_b.join(30)
        assert not worker_b.is_alive(), "worker B hung"
    finally:
        conn_a.close()
        conn_b.close()
    [out] = outcome
    assert out.stored == 0
    ack = out.acks[a2]
    assert ack.ids == []
    [rejection] = ack.rejected
    assert rejection.id == mine["id"]
    assert "conflicting duplicate" in rejection.reason
    assert db.dicts("SELECT id, station FROM results") == [{"id": mine["id"], "station": A1}]


def test_rows_become_visible_in_rowid_order(db: Database, grid: Grid, settings: Settings) -> None:
    # the live feed tails `rowid > cursor`. Worker A has stored a result (its rowid given) and not committed;
    # worker B stores a result of another station and commits first: B's higher rowid was visible before A's
    # lower one, and a feed that read in between moved its cursor past A's row for good
    mine, theirs = grid.result(A1), grid.result(B1)
    conn_a, conn_b = connect(settings.database), connect(settings.database)
    try:
        with transaction(conn_a, stations=[A1]):
            process_batch(conn_a, [_msg(A1, mine)], settings)  # joins A's open transaction
            worker_b = threading.Thread(target=process_batch, args=(conn_b, [_msg(B1, theirs)], settings))
            worker_b.start()
            if (
                db.is_postgres
            ):  # wait until B has committed or waits for A (SQLite: B waits for the file lock)
                deadline = time.monotonic() + 20
                while _lock_waiters(db) == 0 and worker_b.is_alive():
                    assert time.monotonic() < deadline, "worker B neither finished nor waited"
                    time.sleep(0.01)  # polling a condition, bounded
            cursor = db.scalar("SELECT COALESCE(MAX(rowid), 0) FROM results")  # the feed reads meanwhile
        worker_b.join(30)
        assert not worker_b.is_alive(), "worker B hung"
    finally:
        conn_a.close()
        conn_b.close()
    after = [r["id"] for r in db.dicts("SELECT id FROM results WHERE rowid > ? ORDER BY rowid", [cursor])]
    assert sorted(after) == sorted([mine["id"], theirs["id"]]), "the feed skipped a result"
