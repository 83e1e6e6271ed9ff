"""Risk early warning on a generated season: a planted rise of carbofuran on 韭菜 in one town is found, the
unchanged analyte × product × town cells stay quiet (false alert rate reported), repeated positives of one
producer and a station's rising invalid share alert, the feed is scoped, and the priority view ranks the
risky pair first."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud import risk
from cloud.auth import create_user, user_for_token
from cloud.db import Database, open_db, transaction
from cloud.enrol import enrol_station
from cloud.grid import upsert_node
from cloud.riskstats import RiseParams, betabinom_sf, binom_sf, rise_test
from tests.cloud.factories import api_client_class, bearer

CN_OFFSET = timedelta(hours=8)
TOWNS = ("370214101", "370214102", "370214103", "370214104")
ANALYTES = ("carbofuran", "imidacloprid", "carbendazim", "procymidone")
PRODUCTS = ("韭菜", "豇豆", "芹菜", "菠菜")
BASE_RATE = {"carbofuran": 0.03, "imidacloprid": 0.05, "carbendazim": 0.02, "procymidone": 0.04}
RISE_TOWN = "370214101"
WEEKS = 16
PER_STATION_DAY = 12
# Monday 2026-11-23 00:00 China time: the first day of the planted week (2026-W48).
RISE_WEEK = date(2026, 11, 23)
SEASON_START = RISE_WEEK - timedelta(days=7 * (WEEKS - 1))


@dataclass
class Season:
    db_path: Path
    stations: dict[str, str] = field(default_factory=dict)  # station → town
    node_ids: dict[str, int] = field(default_factory=dict)


def _utc(day: date, seconds: int) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - CN_OFFSET + timedelta(seconds=seconds)


def _row(
    station: str, node_id: int, seq: int, at: datetime, analyte: str, product: str, verdict: str
) -> list[Any]:
    return [
        str(uuid.uuid4()),
        seq,
        station,
        node_id,
        "GR-1",
        "KJ-G100",
        "gold_serial",
        f"S{seq:06d}",
        product,
        "gold",
        analyte,
        0,
        at.isoformat(),
        verdict,
        json.dumps({"ratio": 0.5}),
        "[]",
        "gold/1",
        "v1",
        "0" * 64,
        (at + timedelta(seconds=3)).isoformat(),
    ]


INSERT = """INSERT INTO results (id, seq, station, node_id, instrument_serial, instrument_model, instrument_driver,
    sample_id, product, method, analyte, channel, measured_at, verdict, values_json, qc_json, algorithm,
    config_version, sig, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def build_season(db_path: Path, *, rise: bool = True, seed: int = 2026) -> Season:
    rng = random.Random(seed)
    season = Season(db_path)
    db = open_db(db_path)
    try:
        upsert_node(db, "county", "370214", "城阳区", None)
        for t, town in enumerate(TOWNS):
            upsert_node(db, "town", town, f"街道{t + 1}", "370214")
            for v in range(2):
                village = f"{town}{v + 201:03d}"
                upsert_node(db, "village", village, f"村{t + 1}-{v + 1}", town)
                for s in range(2):
                    station = f"{village}-{s + 1:02d}"
                    enrol_station(db, station, village, _utc(SEASON_START, 0) - timedelta(days=1))
                    season.stations[station] = town
        season.node_ids = {c: i for c, i in db.execute("SELECT code, id FROM grid_nodes").fetchall()}
        with transaction(db):
            for station, town in season.stations.items():
                seq = 0
                for d in range(7 * WEEKS):
                    day = SEASON_START + timedelta(days=d)
                    for _ in range(PER_STATION_DAY):
                        seq += 1
                        analyte, product = rng.choice(ANALYTES), rng.choice(PRODUCTS)
                        rate = BASE_RATE[analyte]
                        planted = (
                            rise
                            and town == RISE_TOWN
                            and analyte == "carbofuran"
                            and product == "韭菜"
                            and day >= RISE_WEEK
                        )
                        if planted:
                            rate = 0.50
                        u = rng.random()
                        verdict = (
                            "invalid" if u < 0.02 else ("positive" if rng.random() < rate else "negative")
                        )
                        at = _utc(day, rng.randrange(7 * 3600, 19 * 3600))
                        db.execute(
                            INSERT,
                            _row(station, season.node_ids[station], seq, at, analyte, product, verdict),
                        )
    finally:
        db.close()
    return season


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> Season:
    return build_season(tmp_path_factory.mktemp("season") / "cloud.db")


def _alerts(db: Database, kind: str) -> list[dict[str, Any]]:
    cur = db.execute("SELECT * FROM risk_alerts WHERE kind = ? ORDER BY id", [kind])
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def test_binomial_tail_matches_the_definition() -> None:
    from math import comb

    for n, x, p in ((10, 3, 0.1), (40, 0, 0.3), (25, 25, 0.9), (60, 12, 0.05)):
        direct = sum(comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(x, n + 1))
        assert binom_sf(x, n, p) == pytest.approx(direct, rel=1e-9, abs=1e-300)
    assert binom_sf(5, 4, 0.5) == 0.0
    # Beta-binomial with a huge prior weight tends to the binomial; with a = b = 1 it is uniform on 0..n.
    assert betabinom_sf(3, 20, 0.05 * 1e7, 0.95 * 1e7) == pytest.approx(binom_sf(3, 20, 0.05), rel=1e-4)
    assert betabinom_sf(7, 9, 1.0, 1.0) == pytest.approx(3 / 10, rel=1e-9)


def test_the_rule_needs_a_real_rise() -> None:
    params = RiseParams()
    # 2 positives in 5 against a 3 % history: rare, but below the minimum count.
    assert not rise_test(2, 5, 30, 1000, 0.03, params).alert
    # 6 in 14 against 3 %: alerts, high.
    test = rise_test(6, 14, 30, 1000, 0.03, params)
    assert test.alert
    assert test.severity == "high"
    # The same count in a cell whose own history is as high: no alert.
    assert not rise_test(6, 14, 400, 1000, 0.03, params).alert


def test_planted_rise_alerts_and_unchanged_cells_stay_quiet(season: Season, tmp_path: Path) -> None:
    db = open_db(season.db_path)
    try:
        cells = 0
        # Scan week by week through the season, as the scheduler would (each scan looks at this week and the last).
        for week in range(8, WEEKS + 1):
            now = _utc(SEASON_START + timedelta(days=7 * week), 0) - timedelta(hours=1)
            cells += risk.scan(db, now).cells
        alerts = _alerts(db, "positivity_rise")
        planted_key = f"rise:carbofuran:韭菜:{RISE_TOWN}:2026-W48"
        assert planted_key in {a["key"] for a in alerts}, f"no alert for the planted rise; got {alerts}"
        hit = next(a for a in alerts if a["key"] == planted_key)
        assert hit["node_id"] == season.node_ids[RISE_TOWN]
        assert hit["observed"] >= 3
        assert hit["p_value"] < 0.001
        false = [
            a
            for a in alerts
            if not (
                a["analyte"] == "carbofuran"
                and a["product"] == "韭菜"
                and a["node_id"] == season.node_ids[RISE_TOWN]
            )
        ]
        rate = len(false) / cells
        print(
            f"risk scan: {cells} cell-weeks evaluated, {len(false)} false alerts ({rate:.2%}) on unchanged cells"
        )
        assert rate <= 0.005, f"false alerts on unchanged cells: {false}"
        # A second scan of the same week does not duplicate.
        before = len(_alerts(db, "positivity_rise"))
        risk.scan(db, _utc(RISE_WEEK + timedelta(days=6), 0))
        assert len(_alerts(db, "positivity_rise")) == before
    finally:
        db.close()


@pytest.mark.parametrize("seed", [7, 8])
def test_a_quiet_season_stays_quiet(tmp_path: Path, seed: int) -> None:
    quiet = build_season(tmp_path / "quiet.db", rise=False, seed=seed)
    db = open_db(quiet.db_path)
    try:
        cells = 0
        for week in range(8, WEEKS + 1):
            cells += risk.scan(
                db, _utc(SEASON_START + timedelta(days=7 * week), 0) - timedelta(hours=1)
            ).cells
        alerts = _alerts(db, "positivity_rise")
        print(f"quiet season {seed}: {len(alerts)} alerts in {cells} cell-weeks")
        assert len(alerts) / cells <= 0.002, alerts
    finally:
        db.close()


def test_station_invalid_rise_and_producer_repeats(tmp_path: Path) -> None:
    season = build_season(tmp_path / "c.db", rise=False, seed=11)
    db = open_db(season.db_path)
    station = next(iter(season.stations))
    node_id = season.node_ids[station]
    now = _utc(RISE_WEEK + timedelta(days=4), 0)
    try:
        with transaction(db):
            for i in range(12):  # a bad card lot: 12 invalid tests in two days
                at = _utc(RISE_WEEK + timedelta(days=1 + i % 2), 9 * 3600 + i)
                db.execute(INSERT, _row(station, node_id, 100_000 + i, at, "imidacloprid", "豇豆", "invalid"))
            village = db.execute("SELECT id FROM grid_nodes WHERE code = ?", [station[:12]]).fetchone()[0]
            db.execute(
                """INSERT INTO producers (kind, name, code, village_node_id, products_json, plots_json, created_at,
                   updated_at) VALUES ('合作社', '绿源蔬菜专业合作社', '93370214MA3C00000X', ?, '[]', '[]', ?, ?)""",
                [village, now.isoformat(), now.isoformat()],
            )
            pid = db.execute("SELECT id FROM producers").fetchone()[0]
            for i, code in enumerate(("P1", "P2")):
                at = _utc(RISE_WEEK - timedelta(days=20 * i), 10 * 3600)
                db.execute(
                    """INSERT INTO samples (id, seq, station, node_id, code, root_code, producer_id, product, batch,
                       quantity_kg, sampler, registered_at, status, received_at, sig)
                       VALUES (?, ?, ?, ?, ?, ?, ?, '韭菜', ?, 50, '王五', ?, 'held', ?, '0')""",
                    [
                        str(uuid.uuid4()),
                        200_000 + i,
                        station,
                        node_id,
                        code,
                        code,
                        pid,
                        f"B{i}",
                        at.isoformat(),
                        at.isoformat(),
                    ],
                )
                row = _row(station, node_id, 300_000 + i, at, "carbofuran", "韭菜", "positive")
                row[7] = code
                db.execute(INSERT, row)
        risk.scan(db, now)
        inv = _alerts(db, "station_invalid")
        assert [a["station"] for a in inv] == [station]
        assert inv[0]["observed"] >= 12
        rep = _alerts(db, "producer_repeat")
        assert len(rep) == 1
        assert rep[0]["producer_id"] == pid
        assert rep[0]["observed"] == 2
        assert rep[0]["node_id"] == village
        # No other station's invalid share moved.
        assert len(inv) == 1
    finally:
        db.close()


def test_feed_is_scoped_and_priorities_rank_the_risky_pair(season: Season, tmp_path: Path) -> None:
    from cloud.app import create_app
    from cloud.clock import ManualClock
    from cloud.settings import Settings

    now = _utc(RISE_WEEK + timedelta(days=6), 12 * 3600)
    db = open_db(season.db_path)
    try:
        risk.scan(db, now)
        tokens = {
            "rise_town": create_user(db, "t-rise", "town", RISE_TOWN, now),
            "other_town": create_user(db, "t-other", "town", TOWNS[1], now),
            "county": create_user(db, "c", "county", "370214", now),
        }
        other = user_for_token(db, tokens["other_town"], now)
        assert other is not None
    finally:
        db.close()
    settings = Settings(db_path=season.db_path, broker_url=None, scheduler_enabled=False)
    with api_client_class()(create_app(settings, clock=ManualClock(now))) as api:
        mine = api.get("/api/risk/alerts?kind=positivity_rise", headers=bearer(tokens["rise_town"])).json()
        assert any(a["key"].startswith("rise:carbofuran:韭菜:") for a in mine["items"])
        theirs = api.get("/api/risk/alerts?kind=positivity_rise", headers=bearer(tokens["other_town"])).json()
        assert all(a["node_code"] == TOWNS[1] for a in theirs["items"])
        assert not any(a["key"].startswith(f"rise:carbofuran:韭菜:{RISE_TOWN}") for a in theirs["items"])
        alert_id = next(a["id"] for a in mine["items"] if a["product"] == "韭菜")
        assert (
            api.post(f"/api/risk/alerts/{alert_id}/ack", headers=bearer(tokens["other_town"])).status_code
            == 404
        )
        acked = api.post(f"/api/risk/alerts/{alert_id}/ack", headers=bearer(tokens["rise_town"])).json()
        assert acked["acknowledged_by"] == "t-rise"
        top = api.get("/api/risk/priorities?days=28", headers=bearer(tokens["county"])).json()
        first = top["items"][0]
        assert (first["analyte"], first["product"], first["place_code"]) == ("carbofuran", "韭菜", RISE_TOWN)
        assert api.get("/api/risk/priorities?days=0", headers=bearer(tokens["county"])).status_code == 422
