"""Reports on a generated dataset: every figure is recomputed here independently in plain Python (local
China time via zoneinfo, no SQL) and compared; CSV export parses back; report endpoints are scoped."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloud import periods, report_render, reports
from cloud.app import create_app
from cloud.assessment import DEFAULT_WEIGHTS
from cloud.auth import create_user
from cloud.clock import ManualClock
from cloud.db import open_db, transaction
from cloud.enrol import enrol_station
from cloud.errors import Invalid
from cloud.grid import WHOLE_GRID, Node, node_or_whole_grid, upsert_node
from cloud.settings import Settings, db_setting
from tests.cloud.engines import Databases

CN = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # 11:00 China time, Wednesday of 2026-W48
ANALYTES = ("毒死蜱", "克百威", "organophosphate")
PRODUCTS = ("菠菜", "韭菜", "芹菜", "豇豆")
VERDICTS = ("negative", "positive", "suspect", "invalid")
CASE_KINDS = (
    "closed_on_time",
    "closed_late",
    "closed_escalated",
    "open_overdue",
    "open_escalated",
    "open_pending",
)

# county → town → village → stations; station 370215101202-01 never reports (coverage < 1).
GRID: dict[str, tuple[str, dict[str, tuple[str, dict[str, tuple[str, list[str]]]]]]] = {
    "370214": (
        "城阳区",
        {
            "370214101": (
                "流亭街道",
                {
                    "370214101201": ("东流亭村", ["370214101201-01", "370214101201-02"]),
                    "370214101202": ("西流亭村", ["370214101202-01"]),
                },
            ),
            "370214102": ("夏庄街道", {"370214102201": ("源头村", ["370214102201-01"])}),
        },
    ),
    "370215": (
        "即墨区",
        {
            "370215100": ("通济街道", {"370215100201": ("新兴村", ["370215100201-01"])}),
            "370215101": (
                "环秀街道",
                {
                    "370215101201": ("东关村", ["370215101201-01"]),
                    "370215101202": ("西关村", ["370215101202-01"]),
                },
            ),
        },
    ),
}
SILENT_STATION = "370215101202-01"


@dataclass
class Dataset:
    db: str  # a SQLite path or a postgresql:// URL
    ancestors: dict[str, set[str]] = field(default_factory=dict)  # station → {its codes up to county}
    levels: dict[str, str] = field(default_factory=dict)  # code → level
    names: dict[str, str] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, bytes] = field(default_factory=dict)

    def stations_under(self, code: str | None) -> set[str]:
        return {s for s, anc in self.ancestors.items() if code is None or code in anc}


def _ts(dt: datetime, rng: random.Random) -> str:
    """Stored like cloud code stores it (datetime.isoformat: no fraction when microsecond == 0)."""
    return (
        dt.astimezone(UTC).isoformat() if rng.random() < 0.5 else dt.astimezone(UTC).isoformat("T", "seconds")
    )


def build_dataset(target: str, seed: int = 20261125, n_results: int = 900) -> Dataset:
    rng = random.Random(seed)
    ds = Dataset(db=target)
    db = open_db(target)
    try:
        for county, (cname, towns) in GRID.items():
            upsert_node(db, "county", county, cname, None)
            ds.levels[county], ds.names[county] = "county", cname
            for town, (tname, villages) in towns.items():
                upsert_node(db, "town", town, tname, county, {"grid_head": "王强 13800000000"})
                ds.levels[town], ds.names[town] = "town", tname
                for village, (vname, stations) in villages.items():
                    upsert_node(db, "village", village, vname, town)
                    ds.levels[village], ds.names[village] = "village", vname
                    for st in stations:
                        enrol = enrol_station(db, st, village, NOW - timedelta(days=90))
                        ds.keys[st] = bytes.fromhex(enrol.key_hex)
                        ds.levels[st], ds.names[st] = "station", f"{vname} {st[-2:]}号站"
                        ds.ancestors[st] = {county, town, village, st}
        node_ids = {code: nid for code, nid in db.execute("SELECT code, id FROM grid_nodes").fetchall()}
        reporting = sorted(s for s in ds.ancestors if s != SILENT_STATION)
        start = datetime(2026, 9, 20, tzinfo=UTC)
        span_s = int((NOW - start).total_seconds())
        instants: list[datetime] = [
            start + timedelta(seconds=rng.randrange(span_s)) for _ in range(n_results)
        ]
        # Local-midnight boundaries (16:00 UTC) on both sides, incl. month ends and week starts.
        for day in (date(2026, 9, 30), date(2026, 10, 31), date(2026, 11, 15), date(2026, 11, 22)):
            edge = datetime(day.year, day.month, day.day, 16, 0, tzinfo=UTC)
            instants += [edge, edge - timedelta(microseconds=1), edge - timedelta(seconds=1)]
        seqs: Counter[str] = Counter()
        with transaction(db):
            for at in sorted(instants):
                st = rng.choice(reporting)
                seqs[st] += 1
                verdict = rng.choices(VERDICTS, weights=(80, 9, 7, 4))[0]
                row = {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "seq": seqs[st],
                    "station": st,
                    "node_id": node_ids[st],
                    "instrument_serial": "GR-1",
                    "instrument_model": "KJ-G100",
                    "instrument_driver": "gold_serial",
                    "sample_id": f"S{seqs[st]:05d}",
                    "product": rng.choice(PRODUCTS),
                    "producer": rng.choice([None, "张三合作社"]),
                    "sampled_at": None,
                    "method": "gold",
                    "analyte": rng.choice(ANALYTES),
                    "channel": 0,
                    "measured_at": _ts(at, rng),
                    "verdict": verdict,
                    "values_json": json.dumps({"ratio": 0.5}),
                    "qc_json": "[]",
                    "algorithm": "gold/1",
                    "config_version": "v1",
                    "raw_json": None,
                    "operator": None,
                    "sig": "0" * 64,
                    "received_at": _ts(at + timedelta(seconds=2), rng),
                }
                db.execute(
                    f"INSERT INTO results ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",  # noqa: S608
                    list(row.values()),
                )
                ds.results.append({**row, "at": at})
                if verdict == "positive" and rng.random() < 0.85:
                    ds.cases.append(_make_case(db, rng, row, at, node_ids))
    finally:
        db.close()
    return ds


def _make_case(
    db: Any, rng: random.Random, row: dict[str, Any], at: datetime, node_ids: dict[str, int]
) -> dict[str, Any]:
    opened = at + timedelta(minutes=1)
    deadline = opened + timedelta(hours=24)
    kind = rng.choice(CASE_KINDS)
    if kind.startswith("open") and opened < NOW - timedelta(days=3):
        kind = "closed_on_time" if rng.random() < 0.5 else kind  # keep plenty of old open cases too
    closed_at: datetime | None = None
    escalations = 0
    status = "closed"
    if kind == "closed_on_time":
        closed_at = opened + timedelta(hours=rng.uniform(1, 23.9))
    elif kind == "closed_late":
        closed_at = deadline + timedelta(
            hours=rng.uniform(0.1, 10)
        )  # closed after the deadline, before escalation
    elif kind == "closed_escalated":
        escalations = 1
        deadline = deadline + timedelta(hours=48)  # the escalated level's deadline
        closed_at = opened + timedelta(hours=30)  # before the new deadline, still not on time
    else:
        status = rng.choice(["open", "assigned", "feedback"])
        if kind == "open_overdue":
            deadline = NOW - timedelta(hours=rng.uniform(0.5, 5))
        elif kind == "open_escalated":
            escalations = 1
            deadline = NOW + timedelta(hours=20)
        else:
            deadline = NOW + timedelta(hours=rng.uniform(0.5, 20))
    case = {
        "station": row["station"],
        "origin_node_id": row["node_id"],
        "node_id": row["node_id"],
        "level": "station",
        "status": status,
        "reason": "positive",
        "result_id": row["id"],
        "product": row["product"],
        "analyte": row["analyte"],
        "opened_at": opened.isoformat(),
        "deadline": deadline.isoformat(),
        "assignee": None,
        "closed_at": None if closed_at is None else closed_at.isoformat(),
        "escalations": escalations,
        "reminded": "none",
        "updated_at": opened.isoformat(),
    }
    db.execute(
        f"INSERT INTO cases ({', '.join(case)}) VALUES ({', '.join('?' for _ in case)})",  # noqa: S608
        list(case.values()),
    )
    return {**case, "opened": opened, "deadline_dt": deadline, "closed": closed_at}


# ------------------------------------------------------------------ independent computations


def local_day(dt: datetime) -> date:
    return dt.astimezone(CN).date()


def in_period(dt: datetime, first: date, last: date) -> bool:
    return first <= local_day(dt) <= last


def expect_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    v = Counter(r["verdict"] for r in rows)
    valid = len(rows) - v["invalid"]
    return {
        "tests": len(rows),
        "valid": valid,
        "positives": v["positive"],
        "suspects": v["suspect"],
        "invalid": v["invalid"],
        "positive_rate": (v["positive"] / valid) if valid else None,
    }


def results_in(ds: Dataset, code: str | None, first: date, last: date) -> list[dict[str, Any]]:
    under = ds.stations_under(code)
    return [r for r in ds.results if r["station"] in under and in_period(r["at"], first, last)]


def expect_closure(ds: Dataset, code: str | None, first: date, last: date) -> dict[str, Any]:
    under = ds.stations_under(code)
    cases = [c for c in ds.cases if c["station"] in under and in_period(c["opened"], first, last)]
    on_time = late = overdue = pending = 0
    for c in cases:
        if c["closed"] is not None:
            if c["escalations"] == 0 and c["closed"] <= c["deadline_dt"]:
                on_time += 1
            else:
                late += 1
        elif c["escalations"] > 0 or c["deadline_dt"] < NOW:
            overdue += 1
        else:
            pending += 1
    due = on_time + late + overdue
    return {
        "opened": len(cases),
        "closed": on_time + late,
        "closed_on_time": on_time,
        "closed_late": late,
        "open_overdue": overdue,
        "open_pending": pending,
        "on_time_rate": (on_time / due) if due else None,
    }


def expect_ranking(
    ds: Dataset, level: str, within: str | None, first: date, last: date
) -> list[dict[str, Any]]:
    nodes = [
        c for c, lvl in ds.levels.items() if lvl == level and (within is None or within in _anc_of(ds, c))
    ]
    out = []
    for code in nodes:
        stations = ds.stations_under(code)
        rows = results_in(ds, code, first, last)
        active = {r["station"] for r in rows if r["verdict"] != "invalid"}
        cl = expect_closure(ds, code, first, last)
        coverage = len(active) / len(stations) if stations else None
        counted = expect_counts(rows)
        tests = counted["tests"]
        # The documented assessment (docs/reports.md): weighted mean of the parts that have data. This
        # dataset has no tasks and no registered samples; every result reached the cloud 2 s after measuring.
        parts = {
            "coverage": coverage,
            "tasks": None,
            "timeliness": 1.0 if tests else None,
            "cases": cl["on_time_rate"],
            "quality": (1 - counted["invalid"] / tests) if tests else None,
            "registration": 0.0 if tests else None,
        }
        present = {k: v for k, v in parts.items() if v is not None}
        weight = sum(DEFAULT_WEIGHTS[k] for k in present)
        score = 100 * sum(DEFAULT_WEIGHTS[k] * v for k, v in present.items()) / weight if weight else 0.0
        out.append(
            {
                "code": code,
                "score": round(score, 2),
                "valid": expect_counts(rows)["valid"],
                "stations_total": len(stations),
                "stations_active": len(active),
                "cases_on_time": cl["closed_on_time"],
                **{k: expect_counts(rows)[k] for k in ("tests", "positives")},
            }
        )
    out.sort(key=lambda r: (-r["score"], -r["valid"], r["code"]))
    return out


def _anc_of(ds: Dataset, code: str) -> set[str]:
    """Codes of `code` and its ancestors (codes are prefixes of their descendants' codes here)."""
    return {c for c in ds.levels if code.startswith(c)}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def dataset(module_dbs: Databases) -> Dataset:
    return build_dataset(module_dbs.new())


@pytest.fixture
def db(dataset: Dataset) -> Iterator[Any]:
    conn = open_db(dataset.db)
    try:
        yield conn
    finally:
        conn.close()


def scope_of(db: Any, code: str | None) -> Node:
    return node_or_whole_grid(db, code)


SCOPES = (None, "370214", "370215101", "370214101201", "370214101201-02")


# ------------------------------------------------------------------ pure-function tests


def test_dataset_has_the_cases_the_checks_need(dataset: Dataset) -> None:
    kinds = Counter(
        "closed" if c["closed"] else ("escalated" if c["escalations"] else "open") for c in dataset.cases
    )
    assert kinds["closed"] > 10, kinds
    assert kinds["escalated"] > 0, kinds
    assert kinds["open"] > 3, kinds
    assert len(dataset.results) > 900


@pytest.mark.parametrize("code", SCOPES)
def test_positivity_by_month_analyte_product(db: Any, dataset: Dataset, code: str | None) -> None:
    first, last = date(2026, 10, 1), date(2026, 11, 30)
    got = reports.positivity(db, scope_of(db, code), periods.range_period(first, last))
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results_in(dataset, code, first, last):
        groups[(local_day(r["at"]).strftime("%Y-%m"), r["analyte"], r["product"])].append(r)
    expected = {k: expect_counts(v) for k, v in groups.items()}
    assert {
        (g.month, g.analyte, g.product): g.model_dump(exclude={"month", "analyte", "product"}) for g in got
    } == expected
    assert [(g.month, g.analyte, g.product) for g in got] == sorted(expected)
    assert sum(g.tests for g in got) == len(results_in(dataset, code, first, last)) > 0


def test_month_boundary_is_china_midnight(db: Any, dataset: Dataset) -> None:
    """A result at 2026-10-31T16:00:00Z is 1 November in China; one microsecond earlier is October."""
    oct_ = reports.counts(db, WHOLE_GRID, periods.month_period(date(2026, 10, 1)))
    nov = reports.counts(db, WHOLE_GRID, periods.month_period(date(2026, 11, 1)))
    assert oct_.model_dump() == expect_counts(
        results_in(dataset, None, date(2026, 10, 1), date(2026, 10, 31))
    )
    assert nov.model_dump() == expect_counts(results_in(dataset, None, date(2026, 11, 1), date(2026, 11, 30)))
    edge = datetime(2026, 10, 31, 16, tzinfo=UTC)
    assert local_day(edge) == date(2026, 11, 1)
    assert local_day(edge - timedelta(microseconds=1)) == date(2026, 10, 31)


@pytest.mark.parametrize("code", SCOPES)
def test_counts_per_day_and_per_analyte(db: Any, dataset: Dataset, code: str | None) -> None:
    first, last = date(2026, 11, 10), date(2026, 11, 24)
    scope, period = scope_of(db, code), periods.range_period(first, last)
    rows = results_in(dataset, code, first, last)
    assert reports.counts(db, scope, period).model_dump() == expect_counts(rows)
    days = reports.per_day(db, scope, period)
    assert [d.day for d in days] == [(first + timedelta(days=i)).isoformat() for i in range(15)]
    for d in days:
        assert d.model_dump(exclude={"day"}) == expect_counts(
            [r for r in rows if local_day(r["at"]).isoformat() == d.day]
        )
    by_a = {a.analyte: a.model_dump(exclude={"analyte"}) for a in reports.by_analyte(db, scope, period)}
    assert by_a == {
        a: expect_counts([r for r in rows if r["analyte"] == a]) for a in {r["analyte"] for r in rows}
    }


@pytest.mark.parametrize("code", SCOPES)
def test_on_time_closure(db: Any, dataset: Dataset, code: str | None) -> None:
    first, last = date(2026, 9, 1), date(2026, 11, 30)
    got = reports.closure(db, scope_of(db, code), periods.range_period(first, last), NOW)
    assert got.model_dump() == expect_closure(dataset, code, first, last)


@pytest.mark.parametrize(
    ("level", "kind", "on", "within"),
    [
        ("town", "day", date(2026, 11, 20), None),
        ("town", "week", date(2026, 11, 18), None),
        ("town", "week", date(2026, 11, 18), "370215"),
        ("county", "week", date(2026, 11, 11), None),
        ("county", "month", date(2026, 10, 15), None),
        ("village", "month", date(2026, 11, 3), "370214"),
    ],
)
def test_rankings(db: Any, dataset: Dataset, level: str, kind: str, on: date, within: str | None) -> None:
    period = periods.period_containing(kind, on)  # type: ignore[arg-type]
    got = reports.ranking(db, scope_of(db, within), level, period, NOW)  # type: ignore[arg-type]
    expected = expect_ranking(dataset, level, within, period.start, period.end)
    assert [r.code for r in got.rows] == [e["code"] for e in expected]
    assert [r.rank for r in got.rows] == list(range(1, len(expected) + 1))
    for r, e in zip(got.rows, expected, strict=True):
        assert r.model_dump(include=set(e)) == e
    assert any(r.stations_active < r.stations_total for r in got.rows) or level == "village" or within


def test_weekly_report(db: Any, dataset: Dataset) -> None:
    week = periods.parse_iso_week("2026-W47")
    assert (week.start, week.end) == (date(2026, 11, 16), date(2026, 11, 22))
    rep = reports.weekly_report(db, scope_of(db, "370214"), week, NOW)
    rows = results_in(dataset, "370214", week.start, week.end)
    assert rep.totals.model_dump() == expect_counts(rows)
    assert rep.previous_week.model_dump() == expect_counts(
        results_in(dataset, "370214", date(2026, 11, 9), date(2026, 11, 15))
    )
    assert rep.closure.model_dump() == expect_closure(dataset, "370214", week.start, week.end)
    assert [c.code for c in rep.children] == [
        e["code"] for e in expect_ranking(dataset, "town", "370214", week.start, week.end)
    ]
    assert sorted(p.id for p in rep.positives) == sorted(r["id"] for r in rows if r["verdict"] == "positive")
    assert sum(d.tests for d in rep.per_day) == len(rows)
    page = report_render.weekly_html(rep)
    assert "城阳区 快检周报 2026-W47" in page
    assert "<script" not in page
    parsed = list(csv.DictReader(io.StringIO(report_render.weekly_csv(rep).decode("utf-8-sig"))))
    assert [r["编码 code"] for r in parsed] == [*(c.code for c in rep.children), "370214"]
    assert int(parsed[-1]["检测数 tests"]) == len(rows)


def test_period_validation() -> None:
    with pytest.raises(Invalid):
        periods.parse_iso_week("2026-47")
    with pytest.raises(Invalid):
        periods.range_period(date(2026, 2, 1), date(2026, 1, 1))
    with pytest.raises(Invalid):
        periods.day_period(date(1, 1, 1))
    assert periods.week_period(date(2026, 1, 1)).label == "2026-W01"
    assert periods.month_period(date(2026, 12, 31)).end == date(2026, 12, 31)


# ------------------------------------------------------------------ HTTP: CSV and scoping


def api_client(app: Any) -> Any:
    """A TestClient for `app`; starlette warns about httpx at import, silenced for that import only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx.*")
        from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture
def client(dataset: Dataset) -> Iterator[tuple[Any, dict[str, str]]]:
    settings = Settings(
        **db_setting(dataset.db), broker_url=None, scheduler_enabled=False, ingest_enabled=False
    )
    app = create_app(settings, clock=ManualClock(NOW))
    db = open_db(dataset.db)
    try:
        suffix = uuid.uuid4().hex[:8]
        tokens = {
            "admin": create_user(db, f"admin-{suffix}", "admin", None, NOW),
            "county": create_user(db, f"cy-{suffix}", "county", "370214", NOW),
            "town": create_user(db, f"lt-{suffix}", "town", "370214101", NOW),
        }
    finally:
        db.close()
    with api_client(app) as tc:
        yield tc, tokens


def _get(tc: Any, token: str, path: str, **params: Any) -> Any:
    return tc.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_positivity_csv_parses_back(client: tuple[Any, dict[str, str]]) -> None:
    tc, tok = client
    params = {"node": "370214", "start": "2026-10-01", "end": "2026-11-30"}
    js = _get(tc, tok["admin"], "/api/reports/positivity", **params)
    assert js.status_code == 200, js.text
    resp = _get(tc, tok["admin"], "/api/reports/positivity", format="csv", **params)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    assert resp.content.startswith(b"\xef\xbb\xbf")
    parsed = list(csv.DictReader(io.StringIO(resp.content.decode("utf-8-sig"))))
    rows = js.json()["rows"]
    assert len(parsed) == len(rows) > 0
    for p, r in zip(parsed, rows, strict=True):
        assert (p["月份 month"], p["检测项目 analyte"], p["样品 product"]) == (
            r["month"],
            r["analyte"],
            r["product"],
        )
        assert int(p["检测数 tests"]) == r["tests"]
        assert int(p["阳性数 positives"]) == r["positives"]
        if r["positive_rate"] is None:
            assert p["阳性率 positive_rate"] == ""
        else:
            assert float(p["阳性率 positive_rate"]) == pytest.approx(r["positive_rate"], rel=1e-5)
    assert any(p["检测项目 analyte"] == "毒死蜱" for p in parsed)


def test_ranking_and_weekly_formats(client: tuple[Any, dict[str, str]], dataset: Dataset) -> None:
    tc, tok = client
    rk = _get(tc, tok["admin"], "/api/reports/rankings", level="county", period="month", on="2026-10-15")
    assert rk.status_code == 200, rk.text
    expected = expect_ranking(dataset, "county", None, date(2026, 10, 1), date(2026, 10, 31))
    assert [r["code"] for r in rk.json()["rows"]] == [e["code"] for e in expected]
    rk_csv = _get(
        tc,
        tok["admin"],
        "/api/reports/rankings",
        level="county",
        period="month",
        on="2026-10-15",
        format="csv",
    )
    parsed = list(csv.DictReader(io.StringIO(rk_csv.content.decode("utf-8-sig"))))
    assert [(p["编码 code"], float(p["得分 score"])) for p in parsed] == [
        (e["code"], e["score"]) for e in expected
    ]
    html_page = _get(tc, tok["county"], "/api/reports/weekly", week="2026-W47", format="html")
    assert html_page.status_code == 200
    assert html_page.headers["content-type"].startswith("text/html")
    assert "城阳区" in html_page.text
    weekly = _get(tc, tok["county"], "/api/reports/weekly", week="2026-W47").json()
    assert weekly["node"]["code"] == "370214"
    assert weekly["week"] == "2026-W47"
    default_week = _get(tc, tok["county"], "/api/reports/weekly").json()
    assert default_week["week"] == "2026-W47"  # NOW is in W48: the default is the last full week
    assert _get(tc, tok["county"], "/api/reports/weekly", week="2026-47").status_code == 422
    summ = _get(tc, tok["town"], "/api/reports/summary", start="2026-11-01", end="2026-11-24").json()
    assert summ["totals"] == expect_counts(
        results_in(dataset, "370214101", date(2026, 11, 1), date(2026, 11, 24))
    )
    assert summ["closure"] == expect_closure(dataset, "370214101", date(2026, 11, 1), date(2026, 11, 24))


def test_report_endpoints_are_scoped(client: tuple[Any, dict[str, str]], dataset: Dataset) -> None:
    tc, tok = client
    paths = [
        "/api/reports/summary",
        "/api/reports/positivity",
        "/api/reports/closure",
        "/api/reports/rankings",
        "/api/reports/weekly",
    ]
    for path in paths:
        assert tc.get(path).status_code == 401, path
        # another town, the other county and an unknown node all look the same: 404
        for node in ("370214102", "370215", "999999"):
            resp = _get(tc, tok["town"], path, node=node)
            assert resp.status_code == 404, (path, node, resp.text)
        assert _get(tc, tok["town"], path, node="370214101201").status_code == 200, path
        assert _get(tc, tok["county"], path, node="370215").status_code == 404, path
    # defaults to the caller's own node; the county officer's town ranking holds only its own towns
    own = _get(tc, tok["town"], "/api/reports/summary").json()
    assert own["node"]["code"] == "370214101"
    towns = _get(
        tc, tok["county"], "/api/reports/rankings", level="town", period="week", on="2026-11-18"
    ).json()
    assert {r["code"] for r in towns["rows"]} == {"370214101", "370214102"}
    everything = _get(
        tc, tok["admin"], "/api/reports/rankings", level="town", period="week", on="2026-11-18"
    ).json()
    assert {r["code"] for r in everything["rows"]} == {
        c for c, lvl in dataset.levels.items() if lvl == "town"
    }


def test_report_cli_verb(dataset: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kuaijian.cli import build_parser

    parser = build_parser()  # the real `kuaijian` tree: the verb is `kuaijian cloud report`
    out = tmp_path / "weekly.csv"
    db_arg = ["--db", dataset.db]
    args = parser.parse_args(
        [
            "cloud",
            "report",
            "weekly",
            *db_arg,
            "--node",
            "370214",
            "--week",
            "2026-W47",
            "--format",
            "csv",
            "-o",
            str(out),
        ]
    )
    assert args.func(args) == 0
    parsed = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8-sig"))))
    week_rows = results_in(dataset, "370214", date(2026, 11, 16), date(2026, 11, 22))
    assert parsed[-1]["编码 code"] == "370214"
    assert int(parsed[-1]["检测数 tests"]) == len(week_rows)
    args = parser.parse_args(
        ["cloud", "report", "positivity", *db_arg, "--start", "2026-10-01", "--end", "2026-10-31"]
    )
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sum(r["tests"] for r in doc["rows"]) == len(
        results_in(dataset, None, date(2026, 10, 1), date(2026, 10, 31))
    )
    args = parser.parse_args(["cloud", "report", "closure", *db_arg, "--node", "999"])
    assert args.func(args) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["/api/reports/summary", "/api/reports/positivity", "/api/reports/closure"])
def test_out_of_range_dates_are_422_not_500(
    client: tuple[Any, dict[str, str]], dataset: Dataset, path: str
) -> None:
    """Found by schemathesis: `end=0001-01-01` overflowed the default-start arithmetic."""
    tc, tok = client
    for params in ({"end": "0001-01-01"}, {"start": "0001-01-01"}, {"end": "9999-12-31"}):
        resp = _get(tc, tok["admin"], path, **params)
        assert resp.status_code == 422, (path, params, resp.text)
        assert "dates must lie between" in resp.text
