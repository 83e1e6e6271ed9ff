"""`kuaijian cloud migrate-db`: a county's SQLite database moves to PostgreSQL with verified counts, and the
moved database answers every report and list exactly as the original did."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from cloud import partitions, periods, queries, reports
from cloud.auth import User
from cloud.db import open_db
from cloud.dbcopy import copy_database
from cloud.errors import Conflict
from cloud.grid import WHOLE_GRID, upsert_node
from kuaijian.cli import main
from tests.cloud.engines import Databases
from tests.cloud.test_reports import NOW, build_dataset
from tests.postgres import PostgresServer

ADMIN = User(id=0, name="admin", role="admin", node_id=None, node_code=None, node_path="/")


@pytest.fixture
def pg(postgres: PostgresServer, pg_template: str, tmp_path: Path) -> Databases:
    return Databases("postgresql", tmp_path, postgres, pg_template)


def test_sqlite_county_moves_to_postgres_with_the_same_answers(tmp_path: Path, pg: Databases) -> None:
    source = str(tmp_path / "county.db")
    build_dataset(source, seed=5, n_results=400)
    target = pg.new()
    seen: dict[str, int] = {}
    report = copy_database(source, target, progress=seen.__setitem__)
    try:
        assert report.verified
        by_table = {t.table: t for t in report.tables}
        src, dst = open_db(source), open_db(target)
        try:
            stored = int(src.scalar("SELECT COUNT(*) FROM results"))
            assert stored >= 400
            assert by_table["results"].source == by_table["results"].target == stored
            assert by_table["cases"].source > 0
            assert seen["results"] == stored
            assert dst.scalar("SELECT COUNT(*) FROM results") == stored
            have = partitions.existing(partitions.db_runner(dst))
            for rid, table in dst.execute("SELECT id, tableoid::regclass::text FROM results").fetchall():
                month = partitions.month_of_id(rid)  # the dataset's ids are UUIDv4: few carry a real month
                assert table == (partitions.partition_name(month) if month in have else "results_default")
            months = partitions.months_with_rows(partitions.db_runner(src), "results", max(have))
            assert months, "the dataset should hold a result id of a month from 2000 on"
            assert set(months) <= have  # made before the copy
            assert queries.list_results(src, ADMIN, limit=1000) == queries.list_results(
                dst, ADMIN, limit=1000
            )
            assert queries.list_cases(src, ADMIN, limit=1000) == queries.list_cases(dst, ADMIN, limit=1000)
            week = periods.week_period(periods.local_today(NOW) - timedelta(days=7))
            assert reports.weekly_report(src, WHOLE_GRID, week, NOW) == reports.weekly_report(
                dst, WHOLE_GRID, week, NOW
            )
            # the id sequences continue above the copied ids: new rows can be written
            node, created = upsert_node(dst, "county", "999999", "新区", None)
            assert created
            assert node.id > int(src.scalar("SELECT MAX(id) FROM grid_nodes"))
            # the live feed's order survives: PostgreSQL rowid follows SQLite's insert order
            order_src = [r[0] for r in src.execute("SELECT id FROM results ORDER BY rowid").fetchall()]
            order_dst = [r[0] for r in dst.execute("SELECT id FROM results ORDER BY rowid").fetchall()]
            assert order_src == order_dst
        finally:
            src.close()
            dst.close()
        with pytest.raises(Conflict, match="already holds data"):
            copy_database(source, target)
    finally:
        pg.close()


def test_migrate_db_verb_reports_counts(
    tmp_path: Path, pg: Databases, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "county.db"
    build_dataset(str(source), seed=6, n_results=50)
    target = pg.new()
    try:
        assert main(["cloud", "migrate-db", "--from", f"sqlite:///{source}", "--to", target]) == 0
        out = capsys.readouterr().out
        stored = sqlite3.connect(source).execute("SELECT COUNT(*) FROM results").fetchone()[0]
        assert re.search(rf"^results\s+{stored}\s+{stored}$", out, re.M), out
        assert "已核对 verified" in out
        assert main(["cloud", "migrate-db", "--from", str(source), "--to", target]) == 2  # not empty now
        assert "already holds data" in capsys.readouterr().err
    finally:
        pg.close()
