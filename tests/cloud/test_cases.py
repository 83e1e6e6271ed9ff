"""Cases: opening rules, the report → assign → remind → feedback → close lifecycle through the API,
automatic reminders and level-by-level escalation driven by a ManualClock and `cases.tick`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cloud import cases
from cloud.clock import ManualClock
from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, batch_payload, bearer

A1 = "370214101203-01"
B1 = "370214102001-01"


def _send(db: Database, settings: Settings, results: list[dict[str, Any]], at: Any = T0) -> None:
    station = results[0]["station"]
    process_batch(db, [Inbound(f"kj/v1/{station}/result", batch_payload(results), at)], settings)


def _case(db: Database, case_id: int) -> dict[str, Any]:
    row = cases.case_row(db, case_id)
    assert row is not None
    return row


def _trail(db: Database, case_id: int) -> list[tuple[str, str]]:
    return [(a["actor"], a["action"]) for a in cases.actions(db, case_id)]


def test_positive_opens_case_and_joins_open_one(db: Database, grid: Grid, settings: Settings) -> None:
    _send(db, settings, [grid.result(A1, verdict="positive")])
    (case_id,) = [r[0] for r in db.execute("SELECT id FROM cases").fetchall()]
    case = _case(db, case_id)
    assert (case["level"], case["status"], case["reason"]) == ("station", "open", "positive")
    assert case["deadline"] == (T0 + timedelta(hours=24)).isoformat()
    _send(db, settings, [grid.result(A1, verdict="positive")])  # same station/product/analyte
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 1
    assert _trail(db, case_id) == [("system", "report"), ("system", "report")]
    _send(db, settings, [grid.result(A1, verdict="positive", analyte="acephate")])  # other analyte: new case
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 2
    _send(db, settings, [grid.result(A1, verdict="negative"), grid.result(A1, verdict="invalid")])
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 2


def test_second_suspect_within_window_opens_case(db: Database, grid: Grid, settings: Settings) -> None:
    def suspect(days: float, product: str = "菠菜") -> dict[str, Any]:
        return grid.result(
            A1,
            verdict="suspect",
            measured_at=(T0 + timedelta(days=days)).isoformat(),
            sample={"id": f"S{days}", "product": product},
        )

    _send(db, settings, [suspect(0)], at=T0 + timedelta(days=0))
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 0
    _send(db, settings, [suspect(8)], at=T0 + timedelta(days=8))  # 8 days later: outside the 7-day window
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 0
    _send(db, settings, [suspect(9, product="韭菜")], at=T0 + timedelta(days=9))  # other product
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 0
    _send(db, settings, [suspect(10)], at=T0 + timedelta(days=10))  # 2nd within 7 days of day 8
    row = db.execute("SELECT reason, product FROM cases").fetchall()
    assert row == [("repeated_suspect", "菠菜")]


def test_threshold_is_configurable(db: Database, grid: Grid, settings: Settings) -> None:
    strict = settings.model_copy(update={"suspect_threshold": 3})
    for _ in range(2):
        _send(db, strict, [grid.result(A1, verdict="suspect")])
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 0
    _send(db, strict, [grid.result(A1, verdict="suspect")])
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 1


def test_reminders_and_escalation_up_to_county(db: Database, grid: Grid, settings: Settings) -> None:
    clock = ManualClock(T0)
    _send(db, settings, [grid.result(A1, verdict="positive")], at=clock.now())
    case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])
    hours = settings.case_deadline_hours  # station 24, village 24, town 48, county 72; remind 4 h before

    assert cases.tick(db, clock.advance(timedelta(hours=19)), settings) == cases.TickReport(0, 0)
    assert cases.tick(db, clock.advance(timedelta(hours=1)), settings) == cases.TickReport(1, 0)  # 20 h: near
    assert cases.tick(db, clock.now(), settings) == cases.TickReport(0, 0)  # idempotent
    assert cases.tick(db, clock.advance(timedelta(hours=4)), settings) == cases.TickReport(
        1, 1
    )  # 24 h: overdue
    case = _case(db, case_id)
    assert (case["level"], case["escalations"]) == ("village", 1)
    assert case["deadline"] == (clock.now() + timedelta(hours=hours["village"])).isoformat()
    assert (
        db.execute("SELECT code FROM grid_nodes WHERE id = ?", [case["node_id"]]).fetchone()[0]
        == "370214101203"
    )

    clock.advance(timedelta(hours=hours["village"]))
    assert cases.tick(db, clock.now(), settings).escalated == 1  # no near-reminder was due in between ticks
    assert _case(db, case_id)["level"] == "town"
    clock.advance(timedelta(hours=hours["town"]))
    cases.tick(db, clock.now(), settings)
    assert _case(db, case_id)["level"] == "county"
    clock.advance(timedelta(hours=hours["county"] + 1))
    assert cases.tick(db, clock.now(), settings) == cases.TickReport(1, 0)  # county: overdue, nowhere to go
    assert cases.tick(db, clock.advance(timedelta(days=3)), settings) == cases.TickReport(0, 0)
    case = _case(db, case_id)
    assert (case["level"], case["escalations"], case["reminded"]) == ("county", 3, "overdue")
    trail = [
        (a["action"], (a["data"] or {}).get("kind") or (a["data"] or {}).get("to_level"))
        for a in cases.actions(db, case_id)
    ]
    assert trail == [
        ("report", None),
        ("remind", "near"),
        ("remind", "overdue"),
        ("escalate", "village"),
        ("remind", "overdue"),
        ("escalate", "town"),
        ("remind", "overdue"),
        ("escalate", "county"),
        ("remind", "overdue"),
    ]


def test_closed_case_does_not_escalate(db: Database, grid: Grid, settings: Settings) -> None:
    clock = ManualClock(T0)
    _send(db, settings, [grid.result(A1, verdict="positive")], at=clock.now())
    case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])
    db.execute("UPDATE cases SET status = 'closed', closed_at = ? WHERE id = ?", [T0.isoformat(), case_id])
    assert cases.tick(db, clock.advance(timedelta(days=30)), settings) == cases.TickReport(0, 0)


def test_lifecycle_through_api(
    api: Any, grid: Grid, db: Database, settings: Settings, clock: ManualClock
) -> None:
    _send(db, settings, [grid.result(A1, verdict="positive")], at=clock.now())
    case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])
    station, village, town = (bearer(grid.tokens[n]) for n in ("station_a", "village_a", "town_a"))

    def act(headers: dict[str, str], **body: Any) -> Any:
        return api.post(f"/api/cases/{case_id}/actions", json=body, headers=headers)

    clock.advance(timedelta(hours=1))
    r = act(station, action="assign", assignee="village_a", note="please handle")  # a user, not free text
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "assigned"
    assert act(village, action="close").status_code == 409  # close needs feedback first
    clock.advance(timedelta(hours=2))
    r = act(station, action="feedback", feedback="product_held", note="12 kg held", data={"kg": 12})
    assert r.json()["status"] == "feedback"
    # escalate to village: the station may still add feedback but can no longer close
    cases.tick(db, clock.advance(timedelta(hours=24)), settings)
    assert api.get(f"/api/cases/{case_id}", headers=station).json()["level"] == "village"
    assert act(station, action="close").status_code == 403
    assert act(station, action="feedback", feedback="retest_negative").status_code == 200
    assert act(village, action="remind", note="催办").status_code == 200
    r = act(village, action="close", note="lab confirmed, product destroyed")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "closed"
    assert body["closed_at"] == clock.now().isoformat()
    assert [(a["actor"], a["action"]) for a in body["actions"]] == [
        ("system", "report"),
        ("station_a", "assign"),
        ("station_a", "feedback"),
        ("system", "remind"),
        ("system", "escalate"),
        ("station_a", "feedback"),
        ("village_a", "remind"),
        ("village_a", "close"),
    ]
    assert body["actions"][2]["data"] == {"kg": 12, "kind": "product_held"}
    assert act(town, action="note", note="late").status_code == 409  # closed
    listed = api.get("/api/cases", params={"status": "closed"}, headers=town).json()
    assert [c["id"] for c in listed["items"]] == [case_id]
    assert act(town, action="assign", assignee="x").status_code == 409  # closed cases take no actions


def test_assign_needs_assignee(api: Any, grid: Grid, db: Database, settings: Settings) -> None:
    _send(db, settings, [grid.result(A1, verdict="positive")])
    case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])
    r = api.post(
        f"/api/cases/{case_id}/actions", json={"action": "assign"}, headers=bearer(grid.tokens["town_a"])
    )
    assert r.status_code == 422
    assert "assignee" in r.json()["detail"]


def test_overdue_filter(api: Any, grid: Grid, db: Database, settings: Settings, clock: ManualClock) -> None:
    _send(db, settings, [grid.result(B1, verdict="positive")], at=clock.now())
    county = bearer(grid.tokens["county"])
    assert api.get("/api/cases", params={"overdue": True}, headers=county).json()["total"] == 0
    clock.advance(timedelta(hours=25))
    assert api.get("/api/cases", params={"overdue": True}, headers=county).json()["total"] == 1


def test_reporting_level_cannot_close_and_assignees_are_users(
    api: Any, grid: Grid, db: Database, settings: Settings, clock: ManualClock
) -> None:
    """Issue 12: a station's own account could close its positive case within seconds; assignees were free text."""
    _send(db, settings, [grid.result(A1, verdict="positive")], at=clock.now())
    case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])
    station, town, town_b = (bearer(grid.tokens[n]) for n in ("station_a", "town_a", "town_b"))

    def act(headers: dict[str, str], **body: Any) -> Any:
        return api.post(f"/api/cases/{case_id}/actions", json=body, headers=headers)

    assert act(station, action="feedback", feedback="product_held").status_code == 200
    r = act(station, action="close")  # still at station level, feedback given: the station may not close it
    assert r.status_code == 403
    assert "上级" in r.json()["detail"]
    assert act(town, action="assign", assignee="王五 13800000000").status_code == 422  # free text
    assert act(town, action="assign", assignee="town_b").status_code == 422  # another town's user
    assert act(town, action="assign", assignee="station_a").status_code == 200
    mine = api.get("/api/cases", params={"mine": "true"}, headers=station).json()
    assert [c["id"] for c in mine["items"]] == [case_id]
    assert api.get("/api/cases", params={"mine": "true"}, headers=town).json()["total"] == 0
    assert act(town_b, action="close").status_code == 404  # not in its scope
    assert act(town, action="close").status_code == 200


def test_town_closes_only_after_feedback_and_manual_escalation(
    api: Any, grid: Grid, db: Database, settings: Settings, clock: ManualClock
) -> None:
    _send(db, settings, [grid.result(A1, verdict="positive")], at=clock.now())
    case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])
    station, town = (bearer(grid.tokens[n]) for n in ("station_a", "town_a"))

    def act(headers: dict[str, str], **body: Any) -> Any:
        return api.post(f"/api/cases/{case_id}/actions", json=body, headers=headers)

    assert act(town, action="close").status_code == 409  # no feedback yet
    r = act(station, action="escalate", note="上报")  # the manual 上报 button: one level up now
    assert r.status_code == 200
    assert (r.json()["level"], r.json()["node_code"]) == ("village", "370214101203")
    assert act(station, action="escalate").status_code == 403  # now above the station
    assert act(station, action="feedback", feedback="retest_positive").status_code == 200
    assert act(town, action="close").json()["status"] == "closed"
