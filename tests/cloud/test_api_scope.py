"""REST API: results/stations/grid/cases/configs and node scoping (a town officer cannot see another town)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, batch_payload, bearer

A1 = "370214101203-01"  # town A (棘洪滩), village 南万
A2 = "370214101203-02"  # town A, village 南万
A3 = "370214101204-01"  # town A, village 北万
B1 = "370214102001-01"  # town B (上马)


def _ingest(db: Database, settings: Settings, results: list[dict[str, Any]]) -> None:
    by_station: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_station.setdefault(r["station"], []).append(r)
    msgs = [Inbound(f"kj/v1/{s}/result", batch_payload(rs), T0) for s, rs in by_station.items()]
    out = process_batch(db, msgs, settings)
    assert out.rejected == 0


@pytest.fixture
def seeded(db: Database, grid: Grid, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """A1: 3 negative + 1 positive (opens a case); A3: 2 negative; B1: 1 positive (case) + 2 negative."""
    data = {
        A1: [grid.result(A1) for _ in range(3)]
        + [
            grid.result(
                A1, verdict="positive", analyte="acephate", measured_at=(T0 + timedelta(hours=1)).isoformat()
            )
        ],
        A3: [grid.result(A3, sample={"id": "X", "product": "韭菜"}) for _ in range(2)],
        B1: [grid.result(B1, verdict="positive")] + [grid.result(B1) for _ in range(2)],
    }
    _ingest(db, settings, [r for rs in data.values() for r in rs])
    return data


def test_requires_token(api: Any) -> None:
    assert api.get("/api/results").status_code == 401
    assert api.get("/api/results", headers=bearer("kjc_nope")).status_code == 401
    assert api.get("/api/health").status_code == 200


def test_health_reveals_counts_only_to_a_token_and_in_its_scope(
    api: Any, grid: Grid, seeded: dict[str, list[dict[str, Any]]]
) -> None:
    anonymous = api.get("/api/health")
    assert anonymous.status_code == 200
    assert set(anonymous.json()) == {"status", "now"}  # no result count for an anonymous prober
    assert "results" not in api.get("/api/health", headers=bearer("kjc_nope")).json()
    total = sum(len(rs) for rs in seeded.values())
    assert api.get("/api/health", headers=bearer(grid.tokens["admin"])).json()["results"] == total
    town_a = sum(len(rs) for s, rs in seeded.items() if s.startswith("370214101"))
    assert 0 < town_a < total
    assert api.get("/api/health", headers=bearer(grid.tokens["town_a"])).json()["results"] == town_a


def test_results_scoped_and_filtered(api: Any, grid: Grid, seeded: dict[str, list[dict[str, Any]]]) -> None:
    def ids(token: str, **params: Any) -> set[str]:
        r = api.get("/api/results", params=params, headers=bearer(grid.tokens[token]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == len(body["items"]) or body["limit"] < body["total"]
        return {item["id"] for item in body["items"]}

    every = {r["id"] for rs in seeded.values() for r in rs}
    town_a = {r["id"] for s in (A1, A3) for r in seeded[s]}
    assert ids("admin") == every
    assert ids("county") == every
    assert ids("town_a") == town_a
    assert ids("town_b") == {r["id"] for r in seeded[B1]}
    assert ids("village_a") == {r["id"] for r in seeded[A1]}
    assert ids("station_a") == {r["id"] for r in seeded[A1]}
    assert ids("county", node="370214101") == town_a
    assert ids("county", node="370214101204") == {r["id"] for r in seeded[A3]}
    assert ids("town_a", verdict="positive") == {seeded[A1][3]["id"]}
    assert ids("admin", product="韭菜") == {r["id"] for r in seeded[A3]}
    assert ids("admin", analyte="acephate") == {seeded[A1][3]["id"]}
    assert ids("admin", station=B1) == {r["id"] for r in seeded[B1]}
    t1 = (T0 + timedelta(minutes=30)).isoformat()
    assert ids("admin", since=t1) == {seeded[A1][3]["id"]}
    assert ids("admin", until=t1) == every - {seeded[A1][3]["id"]}


def test_pagination_totals(api: Any, grid: Grid, seeded: dict[str, list[dict[str, Any]]]) -> None:
    seen: list[str] = []
    for offset in range(0, 10, 3):
        body = api.get(
            "/api/results", params={"limit": 3, "offset": offset}, headers=bearer(grid.tokens["admin"])
        ).json()
        assert body["total"] == 9
        assert body["limit"] == 3
        assert body["offset"] == offset
        seen += [i["id"] for i in body["items"]]
    assert len(seen) == 9
    assert len(set(seen)) == 9
    assert (
        api.get("/api/results", params={"limit": 0}, headers=bearer(grid.tokens["admin"])).status_code == 422
    )


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/results", {"node": "370214102"}),
        ("/api/results", {"station": B1}),
        ("/api/stations", {"node": "370214102001"}),
        ("/api/grid/tree", {"node": "370214102"}),
        ("/api/grid/rollup", {"node": "370214102"}),
        ("/api/cases", {"node": "370214102"}),
        (f"/api/stations/{B1}", {}),
        ("/api/grid/nodes/370214102", {}),
        ("/api/grid/nodes/370214", {}),  # the parent county is outside a town's subtree too
    ],
)
def test_town_officer_gets_404_for_other_town(
    api: Any, grid: Grid, seeded: dict[str, list[dict[str, Any]]], path: str, params: dict[str, str]
) -> None:
    r = api.get(path, params=params, headers=bearer(grid.tokens["town_a"]))
    assert r.status_code == 404, r.text
    assert "not found in your scope" in r.json()["detail"]
    # and the same request is fine for the county officer
    assert api.get(path, params=params, headers=bearer(grid.tokens["county"])).status_code == 200


def test_other_towns_result_and_case_are_404(
    api: Any, grid: Grid, db: Database, seeded: dict[str, list[dict[str, Any]]]
) -> None:
    b_result = seeded[B1][0]["id"]
    b_case = db.execute("SELECT id FROM cases WHERE station = ?", [B1]).fetchone()[0]
    town_a = bearer(grid.tokens["town_a"])
    assert api.get(f"/api/results/{b_result}", headers=town_a).status_code == 404
    assert api.get(f"/api/cases/{b_case}", headers=town_a).status_code == 404
    r = api.post(f"/api/cases/{b_case}/actions", json={"action": "note", "note": "x"}, headers=town_a)
    assert r.status_code == 404
    assert api.get(f"/api/results/{b_result}", headers=bearer(grid.tokens["town_b"])).status_code == 200
    # case list: town A sees only its own case
    cases = api.get("/api/cases", headers=town_a).json()
    assert [c["station"] for c in cases["items"]] == [A1]
    # nothing leaked through the case trail either
    assert db.execute("SELECT COUNT(*) FROM case_actions WHERE actor = 'town_a'").fetchone()[0] == 0


def test_stations_status_and_tree(api: Any, grid: Grid, seeded: dict[str, list[dict[str, Any]]]) -> None:
    body = api.get("/api/stations", headers=bearer(grid.tokens["town_a"])).json()
    assert body["total"] == 3
    assert {s["id"] for s in body["items"]} == {A1, A2, A3}
    a1 = next(s for s in body["items"] if s["id"] == A1)
    assert a1["last_seen"] == T0.isoformat()
    assert a1["high_seq"] == 4
    assert a1["online"] is False
    tree = api.get("/api/grid/tree", headers=bearer(grid.tokens["town_a"])).json()
    assert [t["code"] for t in tree] == ["370214101"]
    assert [v["code"] for v in tree[0]["children"]] == ["370214101203", "370214101204"]
    assert tree[0]["people"]["grid_head"] == "王强 13800000001"
    admin_tree = api.get("/api/grid/tree", headers=bearer(grid.tokens["admin"])).json()
    assert [t["code"] for t in admin_tree] == ["370214"]


def test_rollup_counts(api: Any, grid: Grid, seeded: dict[str, list[dict[str, Any]]]) -> None:
    body = api.get("/api/grid/rollup", headers=bearer(grid.tokens["county"])).json()
    assert body["node"]["tests"] == 9
    assert body["node"]["positives"] == 2
    kids = {c["code"]: c for c in body["children"]}
    assert kids["370214101"]["tests"] == 6
    assert kids["370214101"]["positives"] == 1
    assert kids["370214101"]["positive_rate"] == pytest.approx(1 / 6)
    assert kids["370214102"]["tests"] == 3
    assert kids["370214102"]["open_cases"] == 1
    assert kids["370214101"]["stations"] == 3
    village = api.get(
        "/api/grid/rollup", params={"node": "370214101203"}, headers=bearer(grid.tokens["town_a"])
    )
    assert {c["code"]: c["tests"] for c in village.json()["children"]} == {A1: 4, A2: 0}


def test_dead_letters_admin_only(api: Any, grid: Grid, db: Database, settings: Settings) -> None:
    process_batch(db, [Inbound(f"kj/v1/{A1}/result", b"garbage", T0)], settings)
    assert api.get("/api/dead-letters", headers=bearer(grid.tokens["county"])).status_code == 403
    body = api.get("/api/dead-letters", headers=bearer(grid.tokens["admin"])).json()
    assert body["total"] == 1
    assert body["items"][0]["reason"].startswith("payload is not UTF-8 JSON")


def test_dead_letter_reason_filter_takes_wildcards_literally(api: Any, grid: Grid, db: Database) -> None:
    reasons = ["bad_sig", "badXsig", "100% wrong", "1000 wrong", "back\\slash", "backslash"]
    for reason in reasons:
        db.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason) VALUES (?, 't', '', ?)",
            [T0.isoformat(), reason],
        )

    def found(text: str) -> list[str]:
        r = api.get("/api/dead-letters", params={"reason": text}, headers=bearer(grid.tokens["admin"]))
        assert r.status_code == 200, r.text
        return sorted(item["reason"] for item in r.json()["items"])

    assert found("bad_sig") == ["bad_sig"]  # `_` is not "any character"
    assert found("0%") == ["100% wrong"]  # `%` is not "anything"
    assert found("%") == ["100% wrong"]
    assert found("_") == ["bad_sig"]
    assert found("k\\s") == ["back\\slash"]
    assert found("sig") == ["badXsig", "bad_sig"]


def test_config_push_scoped_and_versioned(api: Any, grid: Grid, db: Database) -> None:
    kit = {
        "name": "imidacloprid-v2",
        "length": 200,
        "control_position": 150,
        "lines": [{"analyte": "imidacloprid", "position": 80, "cutoff": 0.5, "suspect_band": 0.1}],
    }
    town_a = bearer(grid.tokens["town_a"])
    r = api.post("/api/configs", json={"target": "370214101", "gold_kits": [kit]}, headers=town_a)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == "1"
    assert r.json()["stations"] == [A1, A2, A3]
    assert r.json()["published"] == 0  # no broker in this test: pending
    r = api.post("/api/configs", json={"target": A1, "gold_kits": [kit]}, headers=town_a)
    assert r.json()["version"] == "2"
    assert r.json()["stations"] == [A1]
    assert api.post("/api/configs", json={"target": B1}, headers=town_a).status_code == 404
    assert (
        api.post("/api/configs", json={"target": A1}, headers=bearer(grid.tokens["village_a"])).status_code
        == 403
    )
    bad = dict(kit, control_position=500)
    assert (
        api.post("/api/configs", json={"target": A1, "gold_kits": [bad]}, headers=town_a).status_code == 422
    )
    hist = api.get("/api/configs", params={"station": A1}, headers=town_a).json()
    assert [c["version"] for c in hist["items"]] == ["2", "1"]
    assert hist["items"][0]["config"]["gold_kits"][0]["name"] == "imidacloprid-v2"
    assert api.get("/api/configs", headers=bearer(grid.tokens["town_b"])).json()["total"] == 0


def test_openapi_lists_endpoints(api: Any) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for p in (
        "/api/results",
        "/api/stations",
        "/api/grid/rollup",
        "/api/cases/{case_id}/actions",
        "/api/configs",
    ):
        assert p in paths


def test_time_filters_accept_any_offset(
    api: Any, grid: Grid, seeded: dict[str, list[dict[str, Any]]]
) -> None:
    """Issue 9 item 5: the same instant written with +08:00 or Z selects the same rows."""
    t1 = T0 + timedelta(minutes=30)
    counts = set()
    for text in (
        t1.isoformat(),
        t1.astimezone(ZoneInfo("Asia/Shanghai")).isoformat(),
        "2026-11-02T03:30:00-05:00",
    ):
        for name in ("since", "until"):
            r = api.get("/api/results", params={name: text}, headers=bearer(grid.tokens["admin"]))
            assert r.status_code == 200, r.text
            counts.add((name, r.json()["total"]))
    assert counts == {("since", 1), ("until", 8)}
