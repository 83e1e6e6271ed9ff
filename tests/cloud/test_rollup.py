"""The daily aggregates (cloud.rollup) against the results they summarise, on both engines: the tables equal
an independent computation in Python (incremental triggers, the late registration of a sample, the first fill
of revision 0010), and every report, ranking, list total and grid roll-up gives the same numbers from the
aggregates as from the results themselves."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloud import assessment, grid_queries, periods, queries, reports, rollup
from cloud.auth import User, resolve_scope
from cloud.db import Database, connect, open_db, transaction
from cloud.grid import WHOLE_GRID, Node
from cloud.sqlfilter import like_prefix
from tests.cloud.engines import Databases
from tests.cloud.test_reports import NOW, Dataset, build_dataset

CN = ZoneInfo("Asia/Shanghai")
RAW_TZ = ZoneInfo("Asia/Chongqing")
"""The same clock as Asia/Shanghai under another name: reports in it are computed from results alone."""
ADMIN = User(id=0, name="admin", role="admin", node_id=None, node_code=None, node_path="/")


def _add_results_and_samples(db: Database, ds: Dataset, seed: int) -> None:
    """Results with QC flags, slow uploads and registered samples — some registered before their result
    arrives, some after — on top of the report dataset."""
    rng = random.Random(seed)
    stations = sorted({r["station"] for r in ds.results})
    nodes = dict(db.execute("SELECT id, node_id FROM stations").fetchall())
    with transaction(db):
        villages = {
            row[0]: row[1]
            for row in db.execute(
                "SELECT s.id, g.parent_id FROM stations s JOIN grid_nodes g ON g.id = s.node_id"
            ).fetchall()
        }
        producer: dict[str, int] = {}
        for n, st in enumerate(stations):
            db.execute(
                "INSERT INTO producers (kind, name, code, village_node_id, products_json, plots_json,"
                " created_at, updated_at) VALUES ('合作社', ?, ?, ?, '[]', '[]', ?, ?)",
                [f"合作社{n}", f"91370214MA{n:08d}", villages[st], NOW.isoformat(), NOW.isoformat()],
            )
            producer[st] = int(db.scalar("SELECT id FROM producers WHERE code = ?", [f"91370214MA{n:08d}"]))

        def register(st: str, code: str, seq: int) -> None:
            db.execute(
                "INSERT INTO samples (id, seq, station, node_id, code, root_code, producer_id, product, batch,"
                " quantity_kg, sampler, registered_at, status, received_at, sig)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, '菠菜', 'B1', 1.0, 'op', ?, 'pending', ?, 'x')",
                [
                    str(uuid.uuid4()),
                    seq,
                    st,
                    nodes[st],
                    code,
                    code,
                    producer[st],
                    NOW.isoformat(),
                    NOW.isoformat(),
                ],
            )

        later: list[tuple[str, str, int]] = []
        for n in range(300):
            st = rng.choice(stations)
            at = datetime(2026, 10, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(50 * 86400))
            delay = timedelta(minutes=rng.choice((0.1, 59, 61, 180)))
            code = f"R{n:04d}"
            when = rng.random()
            if when < 0.3:
                register(st, code, 10_000 + n)  # registered before the result arrives
            elif when < 0.6:
                later.append((st, code, 10_000 + n))
            db.execute(
                "INSERT INTO results (id, seq, station, node_id, instrument_serial, instrument_model,"
                " instrument_driver, sample_id, product, method, analyte, channel, measured_at, verdict,"
                " values_json, qc_json, algorithm, config_version, sig, received_at)"
                " VALUES (?, ?, ?, ?, 'GR-1', 'M', 'd', ?, ?, 'gold', ?, 0, ?, ?, '{}', ?, 'a', 'v1', 's', ?)",
                [
                    str(uuid.uuid4()),
                    100_000 + n,
                    st,
                    nodes[st],
                    code,
                    rng.choice(("菠菜", "韭菜")),
                    rng.choice(("毒死蜱", "克百威")),
                    at.isoformat(),
                    rng.choice(("negative", "positive", "suspect", "invalid")),
                    rng.choice(("[]", json.dumps(["low_control"]))),
                    (at + delay).isoformat(),
                ],
            )
        # duplicates by id change nothing (the ingest's ON CONFLICT path)
        rid = db.scalar("SELECT id FROM results ORDER BY id LIMIT 1")
        db.execute(
            "INSERT INTO results SELECT * FROM results WHERE id = ? ON CONFLICT (id) DO NOTHING",
            [rid],
        )
        for st, code, seq in later:
            register(st, code, seq)  # registered after its result was stored


def expected_tables(db: Database) -> tuple[dict[tuple[Any, ...], tuple[int, ...]], Counter[tuple[Any, ...]]]:
    """result_days and result_day_items computed in Python from results and samples."""
    registered = {(s, c) for s, c in db.execute("SELECT station, code FROM samples").fetchall()}
    days: dict[tuple[Any, ...], list[int]] = {}
    items: Counter[tuple[Any, ...]] = Counter()
    rows = db.execute(
        "SELECT measured_at, received_at, node_id, verdict, qc_json, station, sample_id, analyte, product"
        " FROM results"
    ).fetchall()
    for measured, received, node, verdict, qc, station, sample, analyte, product in rows:
        m = datetime.fromisoformat(measured)
        day = m.astimezone(CN).date().isoformat()
        minutes = (datetime.fromisoformat(received) - m).total_seconds() / 60
        counts = days.setdefault((day, node, verdict), [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += verdict == "invalid" or qc != "[]"
        counts[2] += minutes <= 60
        counts[3] += (station, sample) in registered
        items[(day, node, analyte, product, verdict)] += 1
    return {k: tuple(v) for k, v in days.items()}, items


def totals_of(items: Counter[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """result_totals: the day dropped."""
    out: Counter[tuple[Any, ...]] = Counter()
    for key, n in items.items():
        out[key[1:]] += n
    return out


def stored_totals(db: Database) -> Counter[tuple[Any, ...]]:
    rows = db.execute("SELECT node_id, analyte, product, verdict, tests FROM result_totals").fetchall()
    return Counter({(r[0], r[1], r[2], r[3]): r[4] for r in rows})


def stored_tables(db: Database) -> tuple[dict[tuple[Any, ...], tuple[int, ...]], Counter[tuple[Any, ...]]]:
    days = {
        (r[0], r[1], r[2]): (r[3], r[4], r[5], r[6])
        for r in db.execute(
            "SELECT day, node_id, verdict, tests, flawed, timely, registered FROM result_days"
        ).fetchall()
    }
    items = Counter(
        {
            (r[0], r[1], r[2], r[3], r[4]): r[5]
            for r in db.execute(
                "SELECT day, node_id, analyte, product, verdict, tests FROM result_day_items"
            ).fetchall()
        }
    )
    return days, items


@pytest.fixture(scope="module")
def data(module_dbs: Databases) -> Iterator[tuple[Database, Dataset]]:
    target = module_dbs.new("rollup")
    ds = build_dataset(target, seed=11, n_results=700)
    db = open_db(target)
    try:
        _add_results_and_samples(db, ds, seed=12)
        yield db, ds
    finally:
        db.close()


def test_aggregates_equal_the_results_they_summarise(data: tuple[Database, Dataset]) -> None:
    db, _ = data
    expected_days, expected_items = expected_tables(db)
    days, items = stored_tables(db)
    assert sum(v[3] for v in expected_days.values()) > 0, "the dataset should register some samples"
    assert days == expected_days
    assert items == expected_items
    assert stored_totals(db) == totals_of(expected_items)


def test_first_fill_equals_the_results(new_db: Databases) -> None:
    """What revision 0010 runs over the results already stored (`fill_sql`) gives the same tables."""
    target = new_db.new()
    build_dataset(target, seed=13, n_results=200)
    db = connect(target)
    try:
        with transaction(db):
            db.execute("DELETE FROM result_days")
            db.execute("DELETE FROM result_day_items")
            db.execute("DELETE FROM result_totals")
            for sql in rollup.fill_sql(db.dialect, "results"):
                db.execute(sql)
        days, items = stored_tables(db)
        assert sum(v[0] for v in days.values()) == 200 + 12
        assert (days, items) == expected_tables(db)
        assert stored_totals(db) == totals_of(items)
    finally:
        db.close()


PERIODS = [
    periods.week_period(date(2026, 11, 18)),
    periods.week_period(date(2026, 10, 1)),
    periods.month_period(date(2026, 10, 31)),
    periods.day_period(date(2026, 11, 15)),
    periods.range_period(date(2026, 9, 1), date(2026, 12, 31)),
]


def _scopes(db: Database) -> list[Node]:
    codes = [r[0] for r in db.execute("SELECT code FROM grid_nodes WHERE level != 'station' ORDER BY id")]
    return [WHOLE_GRID, *(resolve_scope(db, ADMIN, c) for c in codes)]


def test_reports_and_rankings_from_the_aggregates_match_the_results(data: tuple[Database, Dataset]) -> None:
    db, _ = data
    assert rollup.covers(CN)
    assert not rollup.covers(RAW_TZ)
    for scope in _scopes(db):
        for period in PERIODS:
            for fn in (reports.counts, reports.by_analyte, reports.positivity, reports.per_day):
                assert fn(db, scope, period, CN) == fn(db, scope, period, RAW_TZ), (
                    fn.__name__,
                    scope,
                    period,
                )
            level = reports.child_level(scope)
            if level is not None:
                a = reports.ranking(db, scope, level, period, NOW, CN)
                b = reports.ranking(db, scope, level, period, NOW, RAW_TZ)
                assert a.rows == b.rows


def test_assessment_counts_from_the_aggregates_match_the_results(data: tuple[Database, Dataset]) -> None:
    db, _ = data
    now_text = NOW.strftime("%Y-%m-%dT%H:%M:%S")
    for scope in _scopes(db):
        for period in PERIODS:
            lo, hi = period.utc_bounds(CN)
            args = (db, scope.path, lo, hi, now_text, period.start, period.end, NOW)
            fast = assessment.unit_parts(*args, CN, rollup.TIMELY_MINUTES)
            raw = assessment.unit_parts(*args, RAW_TZ, rollup.TIMELY_MINUTES)
            assert fast == raw, (scope, period)
            assert fast[1]["tests"] > 0 or scope.path != "/"


def _python_count(
    ds_rows: list[dict[str, Any]], since: datetime | None, until: datetime | None, **eq: Any
) -> int:
    lo = None if since is None else since.astimezone(UTC)
    hi = None if until is None else until.astimezone(UTC)
    n = 0
    for r in ds_rows:
        at = r["at"]
        if (lo is not None and at < lo) or (hi is not None and at >= hi):
            continue
        if all(r[k] == v for k, v in eq.items()):
            n += 1
    return n


def test_list_totals_and_grid_rollup_over_any_instants(data: tuple[Database, Dataset]) -> None:
    db, _ = data
    rows = [
        {**dict(zip(("station", "node_id", "analyte", "product", "verdict"), r[:5], strict=True)),
         "at": datetime.fromisoformat(r[5])}
        for r in db.execute("SELECT station, node_id, analyte, product, verdict, measured_at FROM results")
    ]  # fmt: skip
    midnight = datetime(2026, 10, 31, 16, 0, tzinfo=UTC)  # 2026-11-01 00:00 China time
    bounds: list[tuple[datetime | None, datetime | None]] = [
        (None, None),
        (midnight, None),
        (None, midnight),
        (midnight, midnight + timedelta(days=7)),
        (midnight - timedelta(microseconds=1), midnight + timedelta(days=3, hours=5, seconds=1)),
        (midnight + timedelta(hours=3), midnight + timedelta(hours=9)),  # inside one day
        (datetime(2026, 10, 3, 7, 15, 2, 500, tzinfo=UTC), datetime(2026, 11, 20, 1, 0, tzinfo=UTC)),
    ]
    station = rows[0]["station"]
    town = db.scalar("SELECT t.code FROM grid_nodes t WHERE t.level = 'town' ORDER BY t.id LIMIT 1")
    town_path = db.scalar("SELECT path FROM grid_nodes WHERE code = ?", [town])
    under = {
        int(r[0])
        for r in db.execute(
            "SELECT id FROM grid_nodes WHERE path LIKE ? ESCAPE '\\'", [like_prefix(town_path)]
        )
    }
    for since, until in bounds:
        page = queries.list_results(db, ADMIN, since=since, until=until, limit=1)
        assert page.total == _python_count(rows, since, until)
        for filters in (
            {"verdict": "positive"},
            {"analyte": "毒死蜱"},
            {"product": "韭菜", "verdict": "invalid"},
        ):
            got = queries.list_results(db, ADMIN, since=since, until=until, limit=1, **filters).total
            assert got == _python_count(rows, since, until, **filters), (since, until, filters)
        got = queries.list_results(db, ADMIN, station=station, since=since, until=until, limit=1).total
        assert got == _python_count(rows, since, until, station=station)
        got = queries.list_results(db, ADMIN, node=town, since=since, until=until, limit=1).total
        assert got == sum(1 for r in rows if r["node_id"] in under and _python_count([r], since, until))
        grid = grid_queries.rollup(db, ADMIN, town, since=since, until=until)
        assert grid["node"]["tests"] == sum(
            1 for r in rows if r["node_id"] in under and _python_count([r], since, until)
        )
        assert grid["node"]["positives"] == sum(
            1 for r in rows
            if r["node_id"] in under and r["verdict"] == "positive" and _python_count([r], since, until)
        )  # fmt: skip
