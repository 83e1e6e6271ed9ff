"""process_batch against a real SQLite database: idempotency, rejections, seq gaps, status, fuzzing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from kuaijian_schema import payload_sha256, sign_payload
from tests.cloud.factories import T0, Grid, batch_payload

A1 = "370214101203-01"
A2 = "370214101203-02"
B1 = "370214102001-01"


def _msg(station: str, payload: bytes, kind: str = "result", at_min: int = 0) -> Inbound:
    return Inbound(f"kj/v1/{station}/{kind}", payload, T0 + timedelta(minutes=at_min), mid=1, qos=1)


def _count(db: Database, sql: str, *params: Any) -> int:
    return int(db.execute(sql, list(params)).fetchone()[0])


def test_redelivery_is_a_noop_but_acked_each_time(db: Database, grid: Grid, settings: Settings) -> None:
    results = [grid.result(A1) for _ in range(3)]
    payload = batch_payload(results)
    for _ in range(3):
        out = process_batch(db, [_msg(A1, payload)], settings)
        assert [str(i) for i in out.acks[A1].to_ack().ids] == [r["id"] for r in results]
        assert out.acks[A1].seqs == [1, 2, 3]
    assert _count(db, "SELECT COUNT(*) FROM results") == 3
    # redeliveries inside one batch too
    out = process_batch(db, [_msg(A1, payload), _msg(A1, payload)], settings)
    assert out.stored == 0
    assert out.duplicates == 6
    assert _count(db, "SELECT COUNT(*) FROM seq_gaps") == 0


def test_stored_row_keeps_wire_fields(db: Database, grid: Grid, settings: Settings) -> None:
    r = grid.result(A1, verdict="positive", values={"ratio": 0.31, "conc_mg_kg": 0.8})
    process_batch(db, [_msg(A1, json.dumps(r).encode())], settings)
    row = db.dicts("SELECT * FROM results WHERE id = ?", [r["id"]])[0]
    assert row["product"] == "菠菜"
    assert row["analyte"] == "imidacloprid"
    assert row["verdict"] == "positive"
    assert json.loads(row["values_json"]) == {"ratio": 0.31, "conc_mg_kg": 0.8}
    assert row["sig"] == r["sig"]
    assert row["seq"] == 1
    assert row["received_at"] == T0.isoformat()


def test_rejections_dead_lettered_with_reason_and_listed(
    db: Database, grid: Grid, settings: Settings
) -> None:
    good = grid.result(A1)
    forged = grid.result(A1)
    forged["verdict"] = "positive"  # changed after signing
    unsigned = grid.result(A1)
    del unsigned["sig"]
    wrong_key = grid.result(A1)
    wrong_key["sig"] = sign_payload(wrong_key, grid.key(B1))
    other_station = grid.result(A2)  # correctly signed by A2, but published on A1's topic
    bad_schema = grid.result(A1, verdict="maybe")
    out = process_batch(
        db,
        [_msg(A1, batch_payload([good, forged, unsigned, wrong_key, other_station, bad_schema]))],
        settings,
    )
    ack = out.acks[A1].to_ack()
    assert [str(i) for i in ack.ids] == [good["id"]]
    reasons = {r.id: r.reason for r in ack.rejected}
    assert reasons[forged["id"]] == "bad signature"
    assert reasons[unsigned["id"]] == "unsigned"
    assert reasons[wrong_key["id"]] == "bad signature"
    assert reasons[other_station["id"]] == "bad signature"  # A1's key does not verify A2's signature
    assert reasons[bad_schema["id"]].startswith("schema: verdict")
    dead = {r["result_id"]: r["reason"] for r in db.dicts("SELECT * FROM dead_letters")}
    assert dead == reasons
    assert _count(db, "SELECT COUNT(*) FROM results") == 1


def test_station_mismatch_with_valid_signature(db: Database, grid: Grid, settings: Settings) -> None:
    # signed with A1's key but claiming to be B1: signature verifies, station check rejects it
    r = grid.result(A1, station=B1)
    out = process_batch(db, [_msg(A1, json.dumps(r).encode())], settings)
    assert out.acks[A1].rejected[0].reason.startswith("station mismatch")
    assert _count(db, "SELECT COUNT(*) FROM results") == 0


def test_unknown_station_and_garbage(db: Database, grid: Grid, settings: Settings) -> None:
    stranger = "999999999999-01"
    msgs = [
        _msg(stranger, json.dumps(grid.result(A1, station=stranger)).encode()),
        _msg(A1, b"\xff\xfe not json"),
        _msg(A1, b"[1, 2]"),
        Inbound("kj/v1/nonsense", b"{}", T0),
        _msg(A1, b"{}", kind="config"),
    ]
    out = process_batch(db, msgs, settings)
    assert out.acks[stranger].rejected[0].reason == f"unknown station {stranger}"
    reasons = [r["reason"] for r in db.dicts("SELECT reason FROM dead_letters ORDER BY id")]
    assert reasons[0] == f"unknown station {stranger}"
    assert reasons[1].startswith("payload is not UTF-8 JSON")
    assert reasons[2] == "payload must be a JSON object"
    assert reasons[3].startswith("not a kj/v1 station topic")
    assert reasons[4] == "unexpected topic kind 'config'"
    row = db.dicts("SELECT payload FROM dead_letters WHERE id = 2")[0]
    assert row["payload"].startswith("hex:fffe")


def test_seq_gaps_detected_and_closed_by_late_results(db: Database, grid: Grid, settings: Settings) -> None:
    r = {s: grid.result(A1, seq=s) for s in range(1, 11)}

    def send(*seqs: int) -> None:
        process_batch(db, [_msg(A1, batch_payload([r[s] for s in seqs]))], settings)

    def gaps() -> list[tuple[int, int, bool]]:
        rows = db.execute("SELECT first_seq, last_seq, closed_at FROM seq_gaps ORDER BY first_seq, id")
        return [(a, b, c is not None) for a, b, c in rows.fetchall()]

    send(1, 2)
    assert gaps() == []
    send(6)  # 3..5 missing
    assert gaps() == [(3, 5, False)]
    send(9, 7)  # out of order within a batch: only 8 is missing on top
    assert gaps() == [(3, 5, False), (8, 8, False)]
    send(4)  # splits 3..5
    assert gaps() == [(3, 3, False), (5, 5, False), (8, 8, False)]
    send(3, 5, 8)
    assert gaps() == [(3, 3, True), (5, 5, True), (8, 8, True)]
    send(10)
    assert all(closed for *_, closed in gaps())
    assert _count(db, "SELECT high_seq FROM stations WHERE id = ?", A1) == 10


def test_status_updates_station_in_arrival_order(db: Database, grid: Grid, settings: Settings) -> None:
    def status(state: str, minute: int, depth: int | None, received: int) -> Inbound:
        doc: dict[str, Any] = {
            "station": A1,
            "state": state,
            "at": (T0 + timedelta(minutes=minute)).isoformat(),
        }
        if depth is not None:
            doc.update(outbox_depth=depth, oldest_unsent_age_s=12.5)
        return _msg(A1, json.dumps(doc).encode(), kind="status", at_min=received)

    def row() -> dict[str, Any]:
        return db.dicts("SELECT * FROM stations WHERE id = ?", [A1])[0]

    process_batch(db, [status("online", 5, 40, received=5)], settings)
    assert (row()["online"], row()["backlog"], row()["oldest_unsent_age_s"]) == (1, 40, 12.5)
    assert row()["last_seen"] == (T0 + timedelta(minutes=5)).isoformat()
    # the last will was composed at connect time (minute 4) but arrives later: it still wins
    process_batch(db, [status("offline", 4, None, received=9)], settings)
    assert (row()["online"], row()["backlog"]) == (0, 40)  # the will keeps the last known backlog
    assert row()["last_seen"] == (T0 + timedelta(minutes=5)).isoformat()
    process_batch(db, [status("online", 10, 0, received=10)], settings)
    assert (row()["online"], row()["backlog"]) == (1, 0)
    bad = _msg(
        A1, json.dumps({"station": B1, "state": "online", "at": T0.isoformat()}).encode(), kind="status"
    )
    process_batch(db, [bad], settings)
    assert db.dicts("SELECT reason FROM dead_letters")[0]["reason"].startswith("station mismatch")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"results": st.lists(_json, max_size=3)}).map(lambda v: json.dumps(v).encode()),
    ),
    kind=st.sampled_from(["result", "status"]),
    station=st.sampled_from([A1, B1, "999999999999-99"]),
)
def test_fuzz_never_crashes(
    db: Database, grid: Grid, settings: Settings, payload: bytes, kind: str, station: str
) -> None:
    before = _count(db, "SELECT COUNT(*) FROM dead_letters")
    out = process_batch(db, [_msg(station, payload, kind=kind)], settings)
    assert out.stored == 0
    if kind == "result":
        assert _count(db, "SELECT COUNT(*) FROM dead_letters") > before


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["seq", "channel", "values", "measured_at", "sample", "id", "qc", "analyte"]),
    value=_json,
)
def test_fuzz_signed_fields_never_crash(
    db: Database, grid: Grid, settings: Settings, field: str, value: Any
) -> None:
    """Correctly signed results with arbitrary field values are stored or rejected, never crash."""
    doc = grid.result(A1)
    doc[field] = value
    doc["sig"] = sign_payload(doc, grid.key(A1))
    out = process_batch(db, [_msg(A1, json.dumps(doc).encode())], settings)
    acked = len(out.acks[A1].ids) if A1 in out.acks else 0
    assert acked + out.rejected == 1
    seq = doc["seq"]
    if out.rejected and isinstance(doc["id"], str) and type(seq) is int and 0 <= seq < 2**63:
        # a rejection names id, seq and the hash of exactly the item received
        (rej,) = out.acks[A1].rejected
        assert (rej.id, rej.seq, rej.sha256) == (doc["id"], seq, payload_sha256(doc))
    elif out.rejected:
        assert A1 not in out.acks or not out.acks[A1].rejected


def test_internal_error_rolls_back_only_that_message(
    db: Database, grid: Grid, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug hit halfway through a message undoes that message (rows and ack entries), not the batch."""
    import cloud.ingest_checks
    from kuaijian_schema import Result as real

    class Exploding:
        @staticmethod
        def model_validate(doc: dict[str, Any]) -> Any:
            if doc["seq"] == 4:
                raise RuntimeError("boom")
            return real.model_validate(doc)

    monkeypatch.setattr(cloud.ingest_checks, "Result", Exploding)
    first = [grid.result(A1) for _ in range(2)]  # seq 1, 2
    second = [grid.result(A1) for _ in range(2)]  # seq 3 stored, then seq 4 explodes
    out = process_batch(db, [_msg(A1, batch_payload(first)), _msg(A1, batch_payload(second))], settings)
    assert [str(i) for i in out.acks[A1].to_ack().ids] == [r["id"] for r in first]
    assert out.stored == 2
    assert _count(db, "SELECT COUNT(*) FROM results") == 2
    reason = db.dicts("SELECT reason FROM dead_letters")[0]["reason"]
    assert reason == "internal error: RuntimeError: boom"
    assert _count(db, "SELECT high_seq FROM stations WHERE id = ?", A1) == 2


def test_case_rule_bug_does_not_lose_results(
    db: Database, grid: Grid, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloud.cases

    def broken(*_a: Any, **_k: Any) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(cloud.cases, "on_result", broken)
    r = grid.result(A1, verdict="positive")
    out = process_batch(db, [_msg(A1, json.dumps(r).encode())], settings)
    assert [str(i) for i in out.acks[A1].to_ack().ids] == [r["id"]]
    assert _count(db, "SELECT COUNT(*) FROM results") == 1


def test_pathological_payloads(db: Database, grid: Grid, settings: Settings) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    huge_seq = grid.result(A1, seq=2**70)
    msgs = [
        _msg(A1, deep),
        _msg(A1, deep, kind="status"),
        _msg(A1, b'{"results": ' + deep + b"}"),
        _msg(A1, json.dumps(huge_seq).encode()),
        _msg(A1, b'{"id": "x", "sig": "' + b"a" * 64 + b'", "values": {"ratio": Infinity}}'),
    ]
    out = process_batch(db, msgs, settings)
    assert out.stored == 0
    assert out.dead_letters == 5
    reasons = [r["reason"] for r in db.dicts("SELECT reason FROM dead_letters ORDER BY id")]
    assert reasons[:3] == [
        "payload nested too deeply",
        "status nested too deeply",
        "payload nested too deeply",
    ]
    assert reasons[3] == "seq out of range"
    assert reasons[4] == "bad signature"


def test_rotated_key_old_signatures_accepted_during_grace_only(
    db: Database, grid: Grid, settings: Settings
) -> None:
    """After `enrol-station --rotate`, results the gateway signed with the old key (still in its outbox)
    verify until the grace period ends; the new key verifies at once; anything else stays rejected."""
    from cloud.enrol import enrol_station
    from tests.cloud.factories import signed_result

    old_key = grid.key(A1)
    rotated = enrol_station(db, A1, "370214101203", T0, rotate=True, grace=timedelta(days=30))
    new_key = bytes.fromhex(rotated.key_hex)
    assert new_key != old_key
    queued = signed_result(A1, old_key, seq=1)  # signed before the rotation
    fresh = signed_result(A1, new_key, seq=2)
    forged = signed_result(A1, b"x" * 32, seq=3)
    out = process_batch(db, [_msg(A1, batch_payload([queued, fresh, forged]), at_min=60)], settings)
    assert sorted(str(i) for i in out.acks[A1].to_ack().ids) == sorted([queued["id"], fresh["id"]])
    assert [r.reason for r in out.acks[A1].rejected] == ["bad signature"]
    late = signed_result(A1, old_key, seq=4)
    after_grace = Inbound(f"kj/v1/{A1}/result", batch_payload([late]), T0 + timedelta(days=31), mid=1, qos=1)
    out = process_batch(db, [after_grace], settings)
    assert [r.reason for r in out.acks[A1].rejected] == ["bad signature"]
    assert _count(db, "SELECT COUNT(*) FROM results") == 2


def test_same_id_other_signed_content_is_a_conflicting_duplicate(
    db: Database, grid: Grid, settings: Settings
) -> None:
    """Issue 9 item 6: never silently acked as stored — dead-lettered with both hashes, rejected by hash."""
    first = grid.result(A1)
    process_batch(db, [_msg(A1, json.dumps(first).encode())], settings)
    other = dict(first, verdict="positive")
    del other["sig"]
    other["sig"] = sign_payload(other, grid.key(A1))
    out = process_batch(db, [_msg(A1, json.dumps(other).encode())], settings)
    assert (out.stored, out.duplicates, out.rejected) == (0, 0, 1)
    ack = out.acks[A1].to_ack()
    assert ack.ids == ()
    assert [(r.id, r.seq, r.sha256) for r in ack.rejected] == [
        (first["id"], first["seq"], payload_sha256(other))
    ]
    dead = db.dicts("SELECT * FROM dead_letters")[0]
    assert dead["reason"].startswith("conflicting duplicate")
    assert (dead["sha256"], dead["stored_sha256"]) == (payload_sha256(other), payload_sha256(first))
    assert db.dicts("SELECT verdict FROM results WHERE id = ?", [first["id"]])[0]["verdict"] == "negative"
    # the identical content again is still a plain, acked redelivery
    out = process_batch(db, [_msg(A1, json.dumps(first).encode())], settings)
    assert (out.duplicates, out.rejected) == (1, 0)


@pytest.mark.parametrize("seq", [True, "5", 5.0])
def test_seq_must_be_a_strict_integer(db: Database, grid: Grid, settings: Settings, seq: Any) -> None:
    doc = grid.result(A1, seq=seq)
    out = process_batch(db, [_msg(A1, json.dumps(doc).encode())], settings)
    assert (out.stored, out.rejected) == (0, 1)
    assert "seq" in db.dicts("SELECT reason FROM dead_letters")[0]["reason"]


def test_seq_far_beyond_the_high_water_mark_is_flagged_not_a_gap(
    db: Database, grid: Grid, settings: Settings
) -> None:
    results = [grid.result(A1, seq=n) for n in (1, 2, 3)]
    far = grid.result(A1, seq=2**63 - 1)
    then = grid.result(A1, seq=4)
    out = process_batch(db, [_msg(A1, batch_payload([*results, far, then]))], settings)
    assert out.stored == 5
    assert _count(db, "SELECT COUNT(*) FROM seq_gaps") == 0
    assert _count(db, "SELECT high_seq FROM stations WHERE id = ?", A1) == 4
    flags = {
        r["seq"]: json.loads(r["ingest_flags"]) for r in db.dicts("SELECT seq, ingest_flags FROM results")
    }
    assert flags[2**63 - 1] == ["seq_jump"]
    assert flags[4] == []
    assert out.acks[A1].seqs[-2:] == [2**63 - 1, 4]  # stored and acked: nothing is dropped


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00", "2016-01-01T00:00:00Z"]
)
def test_implausible_measured_at_is_kept_flagged_and_reported_by_receive_time(
    db: Database, grid: Grid, settings: Settings, when: str
) -> None:
    doc = grid.result(A1, measured_at=when, verdict="positive")
    out = process_batch(db, [_msg(A1, json.dumps(doc).encode(), at_min=3)], settings)
    assert out.stored == 1
    row = db.dicts("SELECT * FROM results")[0]
    assert json.loads(row["ingest_flags"]) == ["implausible_time"]
    assert row["measured_at"] == (T0 + timedelta(minutes=3)).isoformat()  # the receive time
    assert row["measured_at_sent"] is not None
    assert row["measured_at_sent"][:4] == when[:4]
    # a positive still opens its case (the sample was tested), dated by receipt
    case = db.dicts("SELECT opened_at FROM cases")[0]
    assert case["opened_at"] == (T0 + timedelta(minutes=3)).isoformat()
    # the dashboard's feed and the results API carry the flag
    from cloud.auth import User
    from cloud.dashboard import results_after
    from cloud.grid import WHOLE_GRID
    from cloud.queries import list_results

    assert [r.flags for r in results_after(db, WHOLE_GRID, 0, 10)] == [["implausible_time"]]
    (item,) = list_results(
        db, User(id=0, name="t", role="admin", node_id=None, node_code=None, node_path="/")
    ).items
    assert (item["flags"], item["measured_at_sent"]) == (["implausible_time"], row["measured_at_sent"])


def test_measured_at_stored_in_utc(db: Database, grid: Grid, settings: Settings) -> None:
    doc = grid.result(A1, measured_at="2026-11-02T16:00:00.250000+08:00")
    process_batch(db, [_msg(A1, json.dumps(doc).encode())], settings)
    row = db.dicts("SELECT measured_at, ingest_flags FROM results")[0]
    assert row["measured_at"] == "2026-11-02T08:00:00.250000+00:00"
    assert json.loads(row["ingest_flags"]) == []


def test_text_with_nul_is_dead_lettered_and_the_rest_of_the_batch_stored(
    db: Database, grid: Grid, settings: Settings
) -> None:
    """U+0000 (PostgreSQL cannot store it) can only arrive as the JSON escape; a validly signed result holding it
    is refused, the other result of the same message stored."""
    bad = grid.result(A1, product="菠\x00菜")
    good = grid.result(A1)
    payload = batch_payload([bad, good])
    assert b"\\u0000" in payload
    process_batch(db, [_msg(A1, payload)], settings)
    assert db.execute("SELECT id FROM results").fetchall() == [(good["id"],)]
    reasons = [r[0] for r in db.execute("SELECT reason FROM dead_letters").fetchall()]
    assert reasons == ["text contains U+0000"]


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-inf", "1e400"])
def test_a_signed_non_finite_value_is_rejected_to_the_station(
    db: Database, grid: Grid, settings: Settings, text: str
) -> None:
    # a value the station signed as the text "NaN" (no gateway sends one: it sends null) was coerced to a float
    # NaN that no JSON column can hold: the whole message became an internal error, never acked, re-sent forever
    bad = grid.result(A1, values={"ratio": text})
    good = grid.result(A1)
    out = process_batch(db, [_msg(A1, batch_payload([bad, good]))], settings)
    assert out.acks[A1].ids == [good["id"]]
    [rejection] = out.acks[A1].rejected
    assert (rejection.id, rejection.seq, rejection.sha256) == (bad["id"], bad["seq"], payload_sha256(bad))
    assert rejection.reason.startswith("schema: values.ratio"), rejection.reason
    assert _count(db, "SELECT COUNT(*) FROM results") == 1


def test_an_id_in_another_spelling_is_the_stored_id(db: Database, grid: Grid, settings: Settings) -> None:
    # the id is stored canonical (lower-case, hyphens); a station that signs it upper-case under other content
    # names the same result: a conflicting duplicate — it was looked up as sent, missed, and acked as stored
    first = grid.result(A1)
    process_batch(db, [_msg(A1, json.dumps(first).encode())], settings)
    other = grid.result(A1, id=first["id"].upper(), verdict="positive")
    out = process_batch(db, [_msg(A1, json.dumps(other).encode())], settings)
    assert (out.stored, out.acks[A1].ids) == (0, [])
    [rejection] = out.acks[A1].rejected
    assert rejection.id == first["id"]
    assert "conflicting duplicate" in rejection.reason
    assert db.dicts("SELECT id, verdict FROM results") == [{"id": first["id"], "verdict": "negative"}]
