"""Sampling tasks (set, scoped, pushed to stations, progress from registered + measured samples, generated from
the risk view) and the assessment score (every part recomputed here from the documented definition; the
ranking separates units that differ)."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from cloud.assessment import DEFAULT_WEIGHTS
from cloud.db import Database
from kuaijian_schema import StationConfig
from tests.cloud.factories import T0, Grid, bearer

TODAY = date(2026, 11, 2)  # T0 is 2026-11-02 16:00 China time


def _node(db: Database, station: str) -> int:
    return int(db.execute("SELECT node_id FROM stations WHERE id = ?", [station]).fetchone()[0])


def _producer(db: Database, village: str) -> int:
    vid = db.execute("SELECT id FROM grid_nodes WHERE code = ?", [village]).fetchone()[0]
    cur = db.execute(
        """INSERT INTO producers (kind, name, code, village_node_id, products_json, plots_json, created_at,
           updated_at) VALUES ('家庭农场', ?, ?, ?, '[]', '[]', ?, ?) RETURNING id""",
        [f"农场{village}", f"X{uuid.uuid4().hex[:17]}", vid, T0.isoformat(), T0.isoformat()],
    )
    return int(cur.fetchone()[0])


_seq = iter(range(1, 1_000_000))


def add_result(
    db: Database,
    station: str,
    *,
    at: datetime,
    product: str = "韭菜",
    analyte: str = "carbofuran",
    verdict: str = "negative",
    sample: str | None = None,
    delay: timedelta = timedelta(seconds=5),
    qc: list[str] | None = None,
) -> None:
    n = next(_seq)
    db.execute(
        """INSERT INTO results (id, seq, station, node_id, instrument_serial, instrument_model, instrument_driver,
           sample_id, product, method, analyte, channel, measured_at, verdict, values_json, qc_json, algorithm,
           config_version, sig, received_at) VALUES (?, ?, ?, ?, 'G', 'M', 'gold_serial', ?, ?, 'gold', ?, 0, ?, ?,
           '{}', ?, 'gold/1', '1', '0', ?)""",
        [
            str(uuid.uuid4()),
            n,
            station,
            _node(db, station),
            sample or f"U{n}",
            product,
            analyte,
            at.isoformat(),
            verdict,
            json.dumps(qc or []),
            (at + delay).isoformat(),
        ],
    )


def register(
    db: Database, station: str, code: str, producer: int, at: datetime, product: str = "韭菜"
) -> None:
    db.execute(
        """INSERT INTO samples (id, seq, station, node_id, code, root_code, producer_id, product, batch, quantity_kg,
           sampler, registered_at, status, received_at, sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'B1', 10, '李四', ?,
           'pending', ?, '0')""",
        [
            str(uuid.uuid4()),
            next(_seq),
            station,
            _node(db, station),
            code,
            code,
            producer,
            product,
            at.isoformat(),
            at.isoformat(),
        ],
    )


def test_tasks_are_set_scoped_pushed_and_counted(api: Any, db: Database, grid: Grid) -> None:
    town = bearer(grid.tokens["town_a"])
    body = {
        "node": "370214101203",
        "title": "韭菜克百威专项",
        "start": "2026-11-01",
        "due": "2026-11-07",
        "target": 3,
        "products": ["韭菜"],
        "analytes": ["carbofuran"],
    }
    created = api.post("/api/tasks", headers=town, json=body)
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["done"], task["target"], task["state"]) == (0, 3, "active")
    # Bad input: each a clear error, nothing stored.
    assert api.post("/api/tasks", headers=town, json={**body, "due": "2026-10-01"}).status_code == 422
    assert api.post("/api/tasks", headers=town, json={**body, "node": "370214102001"}).status_code == 404
    assert api.post("/api/tasks", headers=town, json={**body, "node": "370214"}).status_code == 404
    assert api.post("/api/tasks", headers=bearer(grid.tokens["village_a"]), json=body).status_code == 403
    assert (
        api.post(
            "/api/tasks", headers=bearer(grid.tokens["county"]), json={**body, "node": "370214"}
        ).status_code
        == 422
    )
    assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 1
    # The station sees the task set for its village, and it is in the station's retained config.
    seen = api.get("/api/tasks", headers=bearer(grid.tokens["station_a"])).json()["items"]
    assert [t["id"] for t in seen] == [task["id"]]
    assert api.get("/api/tasks", headers=bearer(grid.tokens["town_b"])).json()["items"] == []
    for station in ("370214101203-01", "370214101203-02"):
        payload = db.execute(
            "SELECT payload_json FROM configs WHERE station = ? ORDER BY id DESC LIMIT 1", [station]
        ).fetchone()[0]
        cfg = StationConfig.model_validate_json(payload)
        assert [(t.id, t.title, t.target, t.shared) for t in cfg.tasks] == [
            (task["id"], "韭菜克百威专项", 3, True)
        ]
    assert db.execute("SELECT COUNT(*) FROM configs WHERE station = '370214101204-01'").fetchone()[0] == 0
    # Progress: registered + measured (valid, right analyte/product, inside the period) samples only.
    pid = _producer(db, "370214101203")
    day = T0 - timedelta(hours=5)
    register(db, "370214101203-01", "A1", pid, day)
    add_result(db, "370214101203-01", at=day, sample="A1")  # counts
    register(db, "370214101203-02", "A2", pid, day)
    add_result(db, "370214101203-02", at=day, sample="A2", verdict="positive")  # counts
    add_result(db, "370214101203-02", at=day, sample="A2", analyte="imidacloprid")  # same sample: once
    register(db, "370214101203-01", "A3", pid, day)
    add_result(db, "370214101203-01", at=day, sample="A3", verdict="invalid")  # invalid only: no
    register(db, "370214101203-01", "A4", pid, day, product="芹菜")
    add_result(db, "370214101203-01", at=day, sample="A4", product="芹菜")  # other product: no
    register(db, "370214101203-01", "A5", pid, day)  # registered, never measured: no
    add_result(db, "370214101203-01", at=day)  # measured, not registered: no
    register(db, "370214101203-01", "A6", pid, T0 - timedelta(days=10))
    add_result(db, "370214101203-01", at=T0 - timedelta(days=10), sample="A6")  # before the period: no
    got = api.get("/api/tasks?node=370214101203", headers=town).json()["items"][0]
    assert (got["done"], got["completion"], got["state"]) == (2, round(2 / 3, 4), "active")
    cancelled = api.post(f"/api/tasks/{task['id']}/cancel", headers=town).json()
    assert cancelled["state"] == "cancelled"
    assert (
        api.post(f"/api/tasks/{task['id']}/cancel", headers=bearer(grid.tokens["town_b"])).status_code == 404
    )


def test_tasks_generated_from_the_risk_view(api: Any, db: Database, grid: Grid) -> None:
    for i in range(10):
        at = T0 - timedelta(days=1, minutes=i)
        add_result(
            db,
            "370214102001-01",
            at=at,
            product="豇豆",
            analyte="imidacloprid",
            verdict="positive" if i < 6 else "negative",
        )
        add_result(db, "370214101203-01", at=at, product="芹菜", analyte="carbendazim")
    made = api.post(
        "/api/tasks/generate",
        headers=bearer(grid.tokens["county"]),
        json={"start": "2026-11-03", "due": "2026-11-09", "per_place": 20, "places": 1},
    )
    assert made.status_code == 201, made.text
    items = made.json()["items"]
    assert len(items) == 1
    assert (items[0]["node_code"], items[0]["products"], items[0]["analytes"], items[0]["source"]) == (
        "370214102",
        ["豇豆"],
        ["imidacloprid"],
        "risk",
    )


def _expected(parts: dict[str, float | None]) -> float:
    present = {k: v for k, v in parts.items() if v is not None}
    weight = sum(DEFAULT_WEIGHTS[k] for k in present)
    return round(100 * sum(DEFAULT_WEIGHTS[k] * v for k, v in present.items()) / weight, 2) if weight else 0.0


def test_assessment_parts_add_up_and_rank_separates_units(api: Any, db: Database, grid: Grid) -> None:
    county = bearer(grid.tokens["county"])
    day = T0 - timedelta(hours=3)
    # 南万社区 (2 stations): 6 tests, all timely, 4 registered, 1 invalid, 1 QC-flagged; a task 4/5 done.
    pid = _producer(db, "370214101203")
    assert (
        api.post(
            "/api/tasks",
            headers=bearer(grid.tokens["town_a"]),
            json={
                "node": "370214101203",
                "title": "t",
                "start": "2026-11-01",
                "due": "2026-11-08",
                "target": 5,
            },
        ).status_code
        == 201
    )
    for i in range(4):
        register(db, "370214101203-01", f"N{i}", pid, day)
        add_result(db, "370214101203-01", at=day, sample=f"N{i}")
    add_result(db, "370214101203-02", at=day, verdict="invalid")
    add_result(db, "370214101203-02", at=day, qc=["control_weak"])
    # 北万社区 (1 station): 5 tests, 2 uploaded 3 h late, none registered, no task.
    for i in range(5):
        add_result(db, "370214101204-01", at=day, delay=timedelta(hours=3) if i < 2 else timedelta(seconds=2))
    ranking = api.get(
        "/api/reports/rankings?level=village&node=370214101&on=2026-11-02", headers=county
    ).json()
    rows = {r["code"]: r for r in ranking["rows"]}
    nanwan = {
        "coverage": 2 / 2,
        "tasks": 4 / 5,
        "timeliness": 6 / 6,
        "cases": None,
        "quality": 1 - 2 / 6,
        "registration": 4 / 6,
    }
    beiwan = {
        "coverage": 1 / 1,
        "tasks": None,
        "timeliness": 3 / 5,
        "cases": None,
        "quality": 1.0,
        "registration": 0.0,
    }
    for code, parts in (("370214101203", nanwan), ("370214101204", beiwan)):
        row = rows[code]
        assert row["score"] == _expected(parts), (code, row)
        assert row["task_completion"] == parts["tasks"]
        assert row["timeliness"] == parts["timeliness"]
        assert row["quality"] == parts["quality"]
        assert row["registration"] == parts["registration"]
    assert rows["370214101203"]["score"] != rows["370214101204"]["score"]
    assert [r["rank"] for r in ranking["rows"]] == [1, 2]
    assert "任务完成率" in ranking["score_formula"]
    csv_text = api.get(
        "/api/reports/rankings?level=village&node=370214101&on=2026-11-02&format=csv", headers=county
    ).content.decode("utf-8-sig")
    assert "上传及时率 timeliness" in csv_text.splitlines()[0]


def test_ranking_bulletin_page_and_excel(api: Any, db: Database, grid: Grid) -> None:
    import io

    from openpyxl import load_workbook

    day = T0 - timedelta(hours=3)
    add_result(db, "370214101203-01", at=day)
    add_result(db, "370214102001-01", at=day, verdict="invalid")
    county = bearer(grid.tokens["county"])
    page = api.get("/api/reports/rankings?level=town&on=2026-11-02&format=html", headers=county)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "考核排名通报" in page.text
    assert "棘洪滩街道" in page.text
    assert "<script" not in page.text
    book = api.get("/api/reports/rankings?level=town&on=2026-11-02&format=xlsx", headers=county)
    assert book.status_code == 200
    ws = load_workbook(io.BytesIO(book.content)).active
    assert ws is not None
    rows = list(ws.iter_rows(values_only=True))
    assert rows[2][:4] == ("排名", "单位", "编码", "得分")
    by_code = {r[2]: r for r in rows[3:]}
    json_rows = {
        r["code"]: r
        for r in api.get("/api/reports/rankings?level=town&on=2026-11-02", headers=county).json()["rows"]
    }
    assert set(by_code) == set(json_rows) == {"370214101", "370214102"}
    for code, r in json_rows.items():
        assert by_code[code][3] == r["score"]
        assert by_code[code][0] == r["rank"]


def test_map_points_use_the_nearest_imported_coordinates(api: Any, db: Database, grid: Grid) -> None:
    from cloud.errors import GridImportError
    from cloud.grid import import_grid_csv

    import_grid_csv(
        db,
        "level,code,name,parent_code,lat,lon\n"
        "village,370214101203,南万社区,370214101,36.30,120.35\n"
        "station,370214101203-01,南万 01,370214101203,36.31,120.36\n",
    )
    with pytest.raises(GridImportError, match="lat"):
        import_grid_csv(
            db, "level,code,name,parent_code,lat,lon\nvillage,370214101204,北万社区,370214101,95,120\n"
        )
    town = bearer(grid.tokens["town_a"])
    got = {s["station"]: s for s in api.get("/api/risk/map", headers=town).json()["stations"]}
    assert set(got) == {"370214101203-01", "370214101203-02", "370214101204-01"}
    assert (got["370214101203-01"]["lat"], got["370214101203-01"]["own_point"]) == (36.31, True)
    assert (got["370214101203-02"]["lat"], got["370214101203-02"]["own_point"]) == (
        36.30,
        False,
    )  # its village's
    assert got["370214101204-01"]["lat"] is None
