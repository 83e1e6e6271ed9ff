"""Several ingest workers on one database: results of ONE station arriving at two workers at the same moment
keep the station's seq tracking right (high-water mark, no invented gaps), on both engines. On PostgreSQL the
batch locks its stations' rows (SQLite serialises every writer on the file lock anyway)."""

from __future__ import annotations

import json
import threading
from typing import Any

from cloud.db import Database, connect
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
