"""Results partitioned by month on PostgreSQL (cloud.partitions): the partitions ahead exist, a result whose
month has no partition is parked in the DEFAULT partition and moved out when the partition is made, ingest
stays idempotent by id across partitions, and revision 0009 carries existing rows over."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from cloud import partitions
from cloud.db import Database, migrate, open_db
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.engines import Databases
from tests.cloud.factories import T0, Grid, build_grid


@pytest.fixture(scope="module")
def db_engine() -> str:
    """Partitions exist on PostgreSQL only: this module runs there."""
    return "postgresql"


def uuid7_at(when: datetime) -> str:
    """A UUIDv7 whose time is `when` (what a gateway makes at that instant)."""
    ms = int(when.timestamp() * 1000)
    rand = secrets.token_hex(10)
    h = f"{ms:012x}7{rand[:3]}{'89ab'[int(rand[3], 16) % 4]}{rand[4:7]}{rand[7:19]}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _where(db: Database, rid: str) -> str:
    return str(db.scalar("SELECT tableoid::regclass::text FROM results WHERE id = ?", [rid]))


def _send(db: Database, settings: Settings, station: str, doc: dict[str, Any]) -> Any:
    payload = json.dumps({"results": [doc]}).encode()
    return process_batch(db, [Inbound(f"kj/v1/{station}/result", payload, T0, mid=1, qos=1)], settings)


def test_fresh_database_has_this_month_and_three_ahead_and_a_default(db: Database) -> None:
    assert db.scalar("SELECT relkind FROM pg_class WHERE relname = 'results'") == "p"
    have = partitions.existing(partitions.db_runner(db))
    today = datetime.now(UTC).date()
    month = date(today.year, today.month, 1)
    for _ in range(partitions.AHEAD_MONTHS + 1):
        assert month in have, f"no partition for {month}"
        month = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    assert db.scalar("SELECT COUNT(*) FROM pg_class WHERE relname = 'results_default'") == 1


def test_result_of_a_month_without_partition_is_parked_then_moved(
    db: Database, grid: Grid, settings: Settings
) -> None:
    station = "370214101203-01"
    old = datetime(2024, 5, 17, 3, 0, tzinfo=UTC)  # a gateway's backlog from long ago: no partition made
    doc = grid.result(station, id=uuid7_at(old), measured_at=old.isoformat())
    assert _send(db, settings, station, doc).stored == 1
    assert _where(db, doc["id"]) == "results_default"
    rowid = db.scalar("SELECT rowid FROM results WHERE id = ?", [doc["id"]])

    created = partitions.maintain_db(db, datetime.now(UTC))
    assert "results_p202405" in created
    assert _where(db, doc["id"]) == "results_p202405"
    assert db.scalar("SELECT COUNT(*) FROM results WHERE id = ?", [doc["id"]]) == 1
    assert db.scalar("SELECT rowid FROM results WHERE id = ?", [doc["id"]]) == rowid
    assert db.scalar("SELECT COUNT(*) FROM results_default") == 0
    assert partitions.maintain_db(db, datetime.now(UTC)) == []  # nothing left to do

    # idempotent by id in its partition: a redelivery is a duplicate, the same id with other content is not
    again = _send(db, settings, station, doc)
    assert (again.stored, again.duplicates) == (0, 1)
    forged = grid.result(station, id=doc["id"], seq=doc["seq"], verdict="positive")
    out = _send(db, settings, station, forged)
    assert out.stored == 0
    assert out.dead_letters == 1
    assert db.scalar("SELECT verdict FROM results WHERE id = ?", [doc["id"]]) == "negative"


def test_ids_that_are_not_time_ordered_stay_in_the_default_partition(
    db: Database, grid: Grid, settings: Settings
) -> None:
    station = "370214101204-01"
    far = "ffffffff-ffff-4fff-bfff-ffffffffffff"  # a UUIDv4-style id: its "time" is in the year 10889
    doc = grid.result(station, id=far)
    assert _send(db, settings, station, doc).stored == 1
    partitions.maintain_db(db, datetime.now(UTC))
    assert _where(db, far) == "results_default"
    assert (_send(db, settings, station, doc).stored, db.scalar("SELECT COUNT(*) FROM results")) == (0, 1)


def test_revision_0009_keeps_existing_rows_and_their_order(new_db: Databases) -> None:
    url = new_db.empty()
    from cloud.db import connect

    db = connect(url)
    try:
        migrate(db, "0008")
        grid = build_grid(db, users=False)
        station = "370214102001-01"
        when = [T0 - timedelta(days=70), T0 - timedelta(days=35), T0]
        ids = [uuid7_at(t) for t in when]
        for n, (rid, t) in enumerate(zip(ids, when, strict=True), start=1):
            doc = grid.result(station, id=rid, seq=n, measured_at=t.isoformat())
            db.execute(
                "INSERT INTO results (id, seq, station, node_id, instrument_serial, instrument_model,"
                " instrument_driver, sample_id, product, method, analyte, channel, measured_at, verdict,"
                " values_json, qc_json, algorithm, config_version, sig, received_at)"
                " VALUES (?, ?, ?, (SELECT node_id FROM stations WHERE id = ?), 'GR', 'M', 'd', ?, ?, 'gold',"
                " 'imidacloprid', 1, ?, 'negative', '{}', '[]', 'a', '1', 's', ?)",
                [rid, n, station, station, doc["sample"]["id"], "菠菜", t.isoformat(), t.isoformat()],
            )
        before = db.dicts("SELECT id, rowid FROM results ORDER BY rowid")
        migrate(db)
        assert db.dicts("SELECT id, rowid FROM results ORDER BY rowid") == before
        assert [_where(db, rid) for rid in ids] == [
            partitions.partition_name(date(t.year, t.month, 1)) for t in when
        ]
        assert db.scalar("SELECT relkind FROM pg_class WHERE relname = 'results'") == "p"
    finally:
        db.close()


def test_cloud_tick_creates_the_partitions_ahead(new_db: Databases) -> None:
    import subprocess
    import sys

    url = new_db.new()
    db = open_db(url)
    try:
        db.execute(f"DROP TABLE {partitions.partition_name(_months_ahead(2))}")
    finally:
        db.close()
    done = subprocess.run(
        [sys.executable, "-m", "kuaijian.cli", "cloud", "tick", "--db", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"results partitions created: {partitions.partition_name(_months_ahead(2))}" in done.stdout
    db = open_db(url)
    try:
        assert _months_ahead(2) in partitions.existing(partitions.db_runner(db))
    finally:
        db.close()


def _months_ahead(n: int) -> date:
    today = datetime.now(UTC).date()
    month = date(today.year, today.month, 1)
    for _ in range(n):
        month = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    return month
