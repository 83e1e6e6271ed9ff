"""Sample registrations over the result topic, the pre-market decision, certificates, one case per sample."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from cloud import producers
from cloud.auth import User
from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from kuaijian_schema import SampleRegistration, new_result_id, sign_payload
from tests.cloud.factories import T0, Grid, bearer
from tests.cloud.test_producers import CSV_TEXT

A1 = "370214101203-01"
B1 = "370214102001-01"


def _admin() -> User:
    return User(id=0, name="t", role="admin", node_id=None, node_code=None, node_path="/")


def _producers(db: Database) -> dict[str, str]:
    producers.import_rows(db, _admin(), producers.parse_table(CSV_TEXT.encode(), "p.csv"), T0)
    return {r[1]: producers.ref_of(r[0]) for r in db.execute("SELECT id, name FROM producers").fetchall()}


def _reg(grid: Grid, station: str, code: str, producer: str, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "sample",
        "id": str(new_result_id()),
        "seq": grid.next_seq(station),
        "station": station,
        "code": code,
        "producer": producer,
        "producer_name": "x",
        "product": "韭菜",
        "batch": "B-1",
        "plot": "东片1号",
        "quantity_kg": 500.0,
        "market_date": "2026-11-05",
        "sampler": "张三",
        "registered_at": T0.isoformat(),
        "retest_of": None,
    }
    doc.update(over)
    doc["sig"] = sign_payload(doc, grid.key(station))
    SampleRegistration.model_validate(doc)
    return doc


def _send(db: Database, settings: Settings, station: str, *docs: dict[str, Any], minute: int = 0) -> Any:
    payload = json.dumps({"results": list(docs)}, ensure_ascii=False).encode()
    msg = Inbound(f"kj/v1/{station}/result", payload, T0 + timedelta(minutes=minute), mid=1, qos=1)
    return process_batch(db, [msg], settings)


def _status(db: Database, station: str, code: str) -> str:
    return str(
        db.execute("SELECT status FROM samples WHERE station = ? AND code = ?", [station, code]).fetchone()[0]
    )


def test_bad_registrations_are_rejected_whole(db: Database, grid: Grid, settings: Settings) -> None:
    refs = _producers(db)
    coop = refs["青岛南万蔬菜专业合作社"]
    farm_b = refs["东程家庭农场"]  # 东程社区, not A1's village
    ok = _reg(grid, A1, "26110201", coop)
    out = _send(db, settings, A1, ok)
    assert out.stored == 1
    assert out.acks[A1].seqs == [ok["seq"]]
    bad = [
        _reg(grid, A1, "26110202", "P999"),  # unknown producer
        _reg(grid, A1, "26110201", coop),  # duplicate code, another registration id
        _reg(grid, A1, "26110203", farm_b),  # another village's producer
    ]
    out = _send(db, settings, A1, *bad)
    reasons = [r.reason for r in out.acks[A1].rejected]
    assert len(reasons) == 3
    assert "unknown producer" in reasons[0]
    assert "duplicate sample code" in reasons[1]
    assert "another village" in reasons[2]
    assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 1  # nothing half-stored
    assert db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 3
    assert _send(db, settings, A1, ok).duplicates == 1  # redelivery: a no-op, acked again
    assert db.execute("SELECT COUNT(*) FROM seq_gaps WHERE closed_at IS NULL").fetchone()[0] == 0


def test_negative_batch_gets_certificate_public_page_verifies(
    api: Any, db: Database, grid: Grid, settings: Settings
) -> None:
    refs = _producers(db)
    reg = _reg(grid, A1, "26110210", refs["青岛南万蔬菜专业合作社"])
    res = grid.result(A1, sample={"id": "26110210", "product": "韭菜"}, verdict="negative")
    _send(db, settings, A1, res, reg)  # measurement first, registration after: decided all the same
    assert _status(db, A1, "26110210") == "released"
    number = db.execute("SELECT number FROM certificates").fetchone()[0]
    page = api.get(f"/verify/{number}")  # no login
    assert page.status_code == 200
    assert "核验通过" in page.text
    assert "青岛南万蔬菜专业合作社" in page.text
    assert "韭菜" in page.text
    assert "吡虫啉 (imidacloprid)：阴性" in page.text  # the analyte by its Chinese name first
    assert "13800000011" not in page.text  # the phone number is not for buyers
    assert "default-src 'none'" in page.headers["content-security-policy"]
    qr = api.get(f"/verify/{number}/qr.svg")
    assert qr.status_code == 200
    assert qr.text.startswith("<svg")
    assert api.get("/verify/HG20261102FFFFFFFF").status_code == 404
    listed = api.get("/api/samples", headers=bearer(grid.tokens["town_a"])).json()
    assert listed["items"][0]["status"] == "released"
    assert listed["items"][0]["certificate"] == number
    assert api.get("/api/samples", headers=bearer(grid.tokens["town_b"])).json()["total"] == 0


def test_positive_card_holds_batch_one_case_with_every_line(
    api: Any, db: Database, grid: Grid, settings: Settings
) -> None:
    refs = _producers(db)
    ref = refs["青岛南万蔬菜专业合作社"]
    reg = _reg(grid, A1, "26110220", ref)
    lines = [
        grid.result(
            A1,
            sample={"id": "26110220", "product": "韭菜"},
            analyte=a,
            channel=0,
            verdict="positive",
            values={"ratio": 0.2 + i / 10},
            qc=["ok"] if i else [],
        )
        for i, a in enumerate(("AOZ", "AMOZ", "SEM"))
    ]
    _send(db, settings, A1, reg, *lines)
    assert _status(db, A1, "26110220") == "held"
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 1  # one nitrofuran card, ONE case
    case_id = db.execute("SELECT id FROM cases").fetchone()[0]
    detail = api.get(f"/api/cases/{case_id}", headers=bearer(grid.tokens["town_a"])).json()
    assert detail["sample"]["producer_name"] == "青岛南万蔬菜专业合作社"
    assert detail["sample"]["batch"] == "B-1"
    assert sorted(r["analyte"] for r in detail["results"]) == ["AMOZ", "AOZ", "SEM"]
    assert all("ratio" in r["values"] for r in detail["results"])
    history = api.get(f"/api/producers/{ref}/history", headers=bearer(grid.tokens["town_a"])).json()
    assert [b["code"] for b in history["held_batches"]] == ["26110220"]


def test_suspect_requires_retest_and_retest_links_to_original(
    db: Database, grid: Grid, settings: Settings
) -> None:
    ref = _producers(db)["李桂兰"]
    _send(db, settings, A1, _reg(grid, A1, "26110230", ref, product="草莓"))
    _send(db, settings, A1, grid.result(A1, sample={"id": "26110230", "product": "草莓"}, verdict="suspect"))
    assert _status(db, A1, "26110230") == "retest"
    assert db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 0
    retest = _reg(grid, A1, "26110231", ref, product="草莓", retest_of="26110230")
    _send(
        db,
        settings,
        A1,
        retest,
        grid.result(A1, sample={"id": "26110231", "product": "草莓"}, verdict="negative"),
    )
    row = db.execute("SELECT root_code, status FROM samples WHERE code = '26110231'").fetchone()
    assert tuple(row) == ("26110230", "released")
    assert _status(db, A1, "26110230") == "released"


def test_unregistered_measurement_is_kept_and_listed(
    api: Any, db: Database, grid: Grid, settings: Settings
) -> None:
    res = grid.result(A1, sample={"id": "KEYPAD-7", "product": "芹菜"}, verdict="positive")
    out = _send(db, settings, A1, res)
    assert out.stored == 1
    listed = api.get("/api/samples/unregistered", headers=bearer(grid.tokens["town_a"])).json()
    assert [i["sample_id"] for i in listed["items"]] == ["KEYPAD-7"]
    assert listed["items"][0]["registration"].startswith("未登记")
    assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 1  # still a case, as before


def _hold(api: Any, db: Database, grid: Grid, settings: Settings, code: str) -> tuple[str, Any]:
    """Register batch `code`, test it negative (a certificate), then positive: held, certificate revoked,
    one case. Returns (producer ref, act(token name, **body) on that case)."""
    ref = _producers(db)["青岛南万蔬菜专业合作社"]
    _send(db, settings, A1, _reg(grid, A1, code, ref))
    _send(db, settings, A1, grid.result(A1, sample={"id": code, "product": "韭菜"}, verdict="negative"))
    assert _status(db, A1, code) == "released"
    _send(
        db,
        settings,
        A1,
        grid.result(A1, sample={"id": code, "product": "韭菜"}, verdict="positive"),
        minute=1,
    )
    assert _status(db, A1, code) == "held"
    assert db.execute("SELECT revoked_at FROM certificates").fetchone()[0] is not None
    case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])

    def act(who: str, **body: Any) -> Any:
        r = api.post(f"/api/cases/{case_id}/actions", json=body, headers=bearer(grid.tokens[who]))
        assert r.status_code == 200, r.text
        return r.json()

    return ref, act


def _retest(grid: Grid, db: Database, settings: Settings, ref: str, code: str, of: str, verdict: str) -> None:
    _send(db, settings, A1, _reg(grid, A1, code, ref, retest_of=of), minute=2)
    _send(
        db, settings, A1, grid.result(A1, sample={"id": code, "product": "韭菜"}, verdict=verdict), minute=3
    )


def test_held_batch_released_by_a_closed_case_with_a_negative_lab_result(
    api: Any, db: Database, grid: Grid, settings: Settings
) -> None:
    _, act = _hold(api, db, grid, settings, "26110240")
    act("station_a", action="feedback", feedback="lab_negative", note="送检结果阴性")
    assert (
        _status(db, A1, "26110240") == "held"
    )  # feedback alone does not lift the hold: the level above closes
    closed = act("village_a", action="close")
    assert closed["status"] == "closed"
    assert _status(db, A1, "26110240") == "released"
    number, revoked, summary = db.execute(
        "SELECT number, revoked_at, summary_json FROM certificates"
    ).fetchone()
    assert revoked is None
    assert {line["confirmation"] for line in json.loads(summary)} == {"lab"}
    page = api.get(f"/verify/{number}").text
    assert "核验通过" in page
    assert "经送检确认" in page
    audit = db.execute("SELECT data_json FROM case_actions WHERE action = 'close'").fetchone()[0]
    assert json.loads(audit)["batches"] == [{"code": "26110240", "status": "released", "certificate": number}]


def test_held_batch_needs_two_negative_retests_after_a_retest_negative_close(
    api: Any, db: Database, grid: Grid, settings: Settings
) -> None:
    ref, act = _hold(api, db, grid, settings, "26110250")
    _retest(grid, db, settings, ref, "26110251", "26110250", "negative")
    assert _status(db, A1, "26110250") == "held"  # negative retests while the case is open change nothing
    act("station_a", action="feedback", feedback="retest_negative")
    act("town_a", action="close")
    assert _status(db, A1, "26110250") == "retest"  # one negative retest of the two
    _retest(grid, db, settings, ref, "26110252", "26110250", "negative")
    assert _status(db, A1, "26110250") == "released"
    assert db.execute("SELECT revoked_at FROM certificates").fetchone()[0] is None


def test_a_positive_retest_or_a_destroyed_product_keeps_the_batch_held(
    api: Any, db: Database, grid: Grid, settings: Settings
) -> None:
    _, act = _hold(api, db, grid, settings, "26110260")
    act("station_a", action="feedback", feedback="product_destroyed")
    act("station_a", action="feedback", feedback="lab_negative")
    act("village_a", action="close")
    assert _status(db, A1, "26110260") == "held"  # destroyed produce is never released
    assert db.execute("SELECT revoked_at FROM certificates").fetchone()[0] is not None


def test_a_positive_after_the_close_holds_the_batch_again(
    api: Any, db: Database, grid: Grid, settings: Settings
) -> None:
    ref, act = _hold(api, db, grid, settings, "26110270")
    act("station_a", action="feedback", feedback="lab_negative")
    act("village_a", action="close")
    assert _status(db, A1, "26110270") == "released"
    _retest(grid, db, settings, ref, "26110271", "26110270", "positive")
    assert _status(db, A1, "26110270") == "held"
    assert db.execute("SELECT COUNT(*) FROM cases WHERE status != 'closed'").fetchone()[0] == 1
    assert db.execute("SELECT revoked_at FROM certificates").fetchone()[0] is not None


def test_a_conflicting_duplicate_registration_is_rejected_not_taken_as_a_redelivery(
    db: Database, grid: Grid, settings: Settings
) -> None:
    ref = _producers(db)["青岛南万蔬菜专业合作社"]
    reg = _reg(grid, A1, "26110280", ref)
    assert _send(db, settings, A1, reg).stored == 1
    again = _send(db, settings, A1, reg)  # a redelivery: acked again, nothing new
    assert (again.stored, again.duplicates, again.rejected) == (0, 1, 0)
    forged = {k: v for k, v in reg.items() if k != "sig"} | {"batch": "B-2", "quantity_kg": 5000.0}
    forged["sig"] = sign_payload(forged, grid.key(A1))
    out = _send(db, settings, A1, forged)
    assert (out.stored, out.duplicates, out.rejected) == (0, 0, 1)
    assert out.acks[A1].rejected[0].id == reg["id"]
    reason = db.execute("SELECT reason FROM dead_letters").fetchone()[0]
    assert "conflicting duplicate" in reason
    row = db.execute("SELECT batch, quantity_kg FROM samples WHERE code = '26110280'").fetchone()
    assert tuple(row) == ("B-1", 500.0)
