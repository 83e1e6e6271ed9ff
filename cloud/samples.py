"""Samples and the pre-market decision (上市前检测) per batch, with compliance certificates (承诺达标合格证).

Does:
- `store_registration`: store a station's `SampleRegistration` (called by ingest inside its batch
  transaction): the producer must exist and belong to the station's village, the code must be new at the
  station (a redelivery of the same registration id is a no-op; the same id with other signed content is a
  conflicting duplicate); otherwise `Invalid` with the reason and nothing stored. A retest (`retest_of`) joins the batch of its original sample (`root_code`).
- `decide`: the batch's fate from every result whose sample id is a code of the batch (the original and its
  retests), in order:
    any positive on any sample of the batch            → ``held``     暂停上市 (confirmation: retest or lab)
      unless every case those positives were reported on is closed (办结, by the level above) with a
      negative confirmation as its last confirming feedback and none recorded the product destroyed
      (`confirmation`); then the hold is lifted:
        closed with ``lab_negative`` (送检阴性) on every case  → ``released``
        else the last two tested samples after the last positive are negative on every analyte
             (复检两次均为阴性)                               → ``released``
        else                                                → ``retest``  (the retests still to do)
    else the latest tested sample has suspect/invalid  → ``retest``   需复检
    else the latest tested sample is negative on every
         required analyte (all analytes it was tested for,
         at least one)                                  → ``released`` 可上市, a certificate is issued
    else                                                → ``pending``  待检测
  A batch held after its certificate was issued gets the certificate revoked; released again after a
  negative confirmation, the same certificate is valid again with the confirmation in its summary.
- queries: samples in scope, a producer's history and held batches, results without a registration
  (未登记), and the public view of a certificate (only what a buyer may see).

Does not: HTTP, cases (cloud.cases opens one per positive sample), or any wire validation (kuaijian_schema).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cloud.auth import User, scoped_node
from cloud.clock import utc_iso
from cloud.db import Database
from cloud.errors import Invalid, NotFound
from cloud.producers import id_of_ref, ref_of, scope_path
from cloud.sqlfilter import subtree_sql
from kuaijian_schema.wire import RawSignal, SampleRegistration

GRID_TZ = ZoneInfo("Asia/Shanghai")
STATUS_LABEL = {
    "pending": "待检测 (pending)",
    "released": "可上市 (may go to market)",
    "held": "暂停上市 (held: confirmation required)",
    "retest": "需复检 (retest required)",
}
VERDICT_LABEL = {"negative": "阴性", "positive": "阳性", "suspect": "可疑", "invalid": "无效"}


@dataclass(frozen=True)
class Decision:
    station: str
    root_code: str
    status: str
    certificate: str | None


def store_registration(db: Database, reg: SampleRegistration, node_id: int, received_at: datetime) -> bool:
    """Store `reg` from the station at grid node `node_id`; False if this registration id is already stored."""
    rid = str(reg.id)
    stored = db.execute("SELECT sig FROM samples WHERE id = ?", [rid]).fetchone()
    if stored is not None:
        if (
            stored[0] != reg.sig
        ):  # validly signed, other content under a stored id: never taken as a redelivery
            raise Invalid(
                f"登记编号冲突 (conflicting duplicate): registration id {rid} is stored with other content"
            )
        return False
    pid = id_of_ref(reg.producer)
    row = db.execute(
        "SELECT p.village_node_id, (SELECT parent_id FROM grid_nodes WHERE id = ?) FROM producers p WHERE p.id = ?",
        [node_id, pid],
    ).fetchone()
    if row is None:
        raise Invalid(f"未知生产主体 (unknown producer) {reg.producer}")
    if row[0] != row[1]:
        raise Invalid(f"生产主体 {reg.producer} 不属于本站所在村 (producer of another village)")
    taken = db.execute(
        "SELECT id FROM samples WHERE station = ? AND code = ?", [reg.station, reg.code]
    ).fetchone()
    if taken is not None:
        raise Invalid(f"样品编号重复 (duplicate sample code) {reg.code} at {reg.station}")
    root = reg.code
    if reg.retest_of is not None:
        orig = db.execute(
            "SELECT root_code FROM samples WHERE station = ? AND code = ?", [reg.station, reg.retest_of]
        ).fetchone()
        if orig is None:
            raise Invalid(f"复检的原样品未登记 (retest of an unknown sample) {reg.retest_of}")
        root = str(orig[0])
    db.execute(
        "INSERT INTO samples (id, seq, station, node_id, code, root_code, producer_id, product, batch, plot,"
        " quantity_kg, market_date, sampler, registered_at, retest_of, status, received_at, sig)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        [
            rid,
            reg.seq,
            reg.station,
            node_id,
            reg.code,
            root,
            pid,
            reg.product,
            reg.batch,
            reg.plot,
            reg.quantity_kg,
            None if reg.market_date is None else reg.market_date.isoformat(),
            reg.sampler,
            utc_iso(reg.registered_at),
            reg.retest_of,
            received_at.isoformat(),
            reg.sig,
        ],
    )
    return True


def root_of(db: Database, station: str, code: str) -> str | None:
    row = db.execute(
        "SELECT root_code FROM samples WHERE station = ? AND code = ?", [station, code]
    ).fetchone()
    return None if row is None else str(row[0])


def result_lines(db: Database, station: str, code: str) -> list[dict[str, Any]]:
    """Every result of sample `code` at `station` with values, QC flags and (when the gateway attached the
    raw signal) `signal`: the profile / absorbance curve reduced to at most 256 points for a plot."""
    cur = db.execute(
        "SELECT id, analyte, channel, method, verdict, values_json, qc_json, measured_at, raw_json FROM results"
        " WHERE station = ? AND sample_id = ? ORDER BY measured_at, seq",
        [station, code],
    )
    out = []
    for rid, analyte, channel, method, verdict, values, qc, measured, raw in cur.fetchall():
        out.append(
            {
                "result_id": rid,
                "analyte": analyte,
                "channel": channel,
                "method": method,
                "verdict": verdict,
                "values": json.loads(values),
                "qc": json.loads(qc),
                "measured_at": measured,
                "signal": _curve(raw),
            }
        )
    return out


def _curve(raw_json: str | None) -> list[float] | None:
    """The plot points of a stored raw signal; None when there is none or it does not decode."""
    if raw_json is None:
        return None
    try:
        return RawSignal.model_validate_json(raw_json).curve()
    except ValueError:  # pydantic's ValidationError is a ValueError too
        return None


def decide(db: Database, station: str, code: str, now: datetime) -> Decision | None:
    """Re-decide the batch that sample `code` belongs to (inside the caller's transaction); None if the
    code is not registered at `station` (an unregistered measurement: nothing to decide)."""
    root = root_of(db, station, code)
    if root is None:
        return None
    chain = db.execute(
        "SELECT id, code FROM samples WHERE station = ? AND root_code = ? ORDER BY registered_at, seq",
        [station, root],
    ).fetchall()
    tested = [(sid, c, result_lines(db, station, c)) for sid, c in chain]
    tested = [t for t in tested if t[2]]
    status = "pending"
    latest_id: str | None = None
    summary: list[dict[str, Any]] = []
    positive = [
        i for i, (_, _, lines) in enumerate(tested) if any(li["verdict"] == "positive" for li in lines)
    ]
    if positive:
        status = "held"
        confirmation = _confirmation(
            db,
            station,
            [li["result_id"] for i in positive for li in tested[i][2] if li["verdict"] == "positive"],
        )
        after = tested[positive[-1] + 1 :]
        if confirmation is not None:
            status = "retest"
            if len(after) >= 2 and all(_all_negative(lines) for _, _, lines in after[-2:]):
                latest_id, _, lines = after[-1]
                summary = _summary(lines, confirmation="retest")
                status = "released"
            elif confirmation == "lab" and all(_all_negative(lines) for _, _, lines in after):
                latest_id, _, lines = (after or [tested[positive[-1]]])[-1]
                summary = _summary(lines, confirmation="lab")
                status = "released"
    elif tested:
        latest_id, _, lines = tested[-1]
        if _all_negative(lines):
            status = "released"
            summary = _summary(lines)
        else:
            status = "retest"
    db.execute(
        "UPDATE samples SET status = ?, decided_at = ? WHERE station = ? AND root_code = ?",
        [status, now.isoformat(), station, root],
    )
    cert = db.execute(
        "SELECT number, revoked_at FROM certificates WHERE station = ? AND root_code = ?", [station, root]
    ).fetchone()
    number: str | None = None if cert is None else str(cert[0])
    if status == "released" and cert is None and latest_id is not None:
        local = now.astimezone(GRID_TZ)
        number = f"HG{local:%Y%m%d}{secrets.token_hex(4).upper()}"
        db.execute(
            "INSERT INTO certificates (number, station, root_code, sample_id, issued_at, summary_json)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [number, station, root, latest_id, now.isoformat(), json.dumps(summary, ensure_ascii=False)],
        )
    elif status == "released" and cert is not None and cert[1] is not None and latest_id is not None:
        db.execute(  # the hold was lifted by a negative confirmation: the same certificate is valid again
            "UPDATE certificates SET revoked_at = NULL, sample_id = ?, issued_at = ?, summary_json = ?"
            " WHERE number = ?",
            [latest_id, now.isoformat(), json.dumps(summary, ensure_ascii=False), cert[0]],
        )
    elif status == "held" and cert is not None and cert[1] is None:
        db.execute("UPDATE certificates SET revoked_at = ? WHERE number = ?", [now.isoformat(), cert[0]])
    return Decision(station, root, status, number)


def _all_negative(lines: list[dict[str, Any]]) -> bool:
    """Every analyte (line / channel) the sample was tested for has only negative results."""
    by_analyte: dict[str, set[str]] = {}
    for line in lines:
        by_analyte.setdefault(f"{line['analyte']}#{line['channel']}", set()).add(line["verdict"])
    return bool(by_analyte) and all(v == {"negative"} for v in by_analyte.values())


def _summary(lines: list[dict[str, Any]], *, confirmation: str | None = None) -> list[dict[str, Any]]:
    """The certificate's lines: every analyte negative (confirmed by two retests or a laboratory when the
    batch had been held)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        item = {"analyte": line["analyte"], "method": line["method"], "verdict": "negative"}
        if confirmation is not None:
            item["confirmation"] = confirmation
        seen[(line["analyte"], str(line["channel"]))] = item
    return list(seen.values())


CONFIRMING = ("retest_negative", "retest_positive", "lab_confirmed", "lab_negative")
"""Feedback kinds (cloud.cases) that say what confirmation found; the last one on a case counts."""


def _confirmation(db: Database, station: str, result_ids: list[str]) -> str | None:
    """How the positives `result_ids` of one batch were confirmed negative: ``lab`` when every case they
    were reported on is closed with ``lab_negative`` as its last confirming feedback, ``retest`` when every
    such case is closed with a negative one (some by ``retest_negative``); None while any case is open, has
    no negative confirmation, recorded the product destroyed, or a positive is on no case at all."""
    from cloud.cases import results_on_cases  # cases imports this module (re-deciding on close)

    ids = set(result_ids)
    cases = results_on_cases(db, station)
    if not ids <= cases.keys():
        return None
    kinds: list[str] = []
    for case_id in sorted({cases[rid] for rid in ids}):
        row = db.execute("SELECT status FROM cases WHERE id = ?", [case_id]).fetchone()
        feedback = [
            json.loads(d).get("kind")
            for (d,) in db.execute(
                "SELECT data_json FROM case_actions WHERE case_id = ? AND action = 'feedback'"
                " AND data_json IS NOT NULL ORDER BY id",
                [case_id],
            ).fetchall()
        ]
        confirming = [k for k in feedback if k in CONFIRMING]
        if row is None or row[0] != "closed" or "product_destroyed" in feedback or not confirming:
            return None
        if confirming[-1] not in ("lab_negative", "retest_negative"):
            return None
        kinds.append(confirming[-1])
    return "lab" if all(k == "lab_negative" for k in kinds) else "retest"


_SAMPLE_SELECT = (
    "SELECT s.code, s.root_code, s.station, s.product, s.batch, s.plot, s.quantity_kg, s.market_date,"
    " s.sampler, s.registered_at, s.retest_of, s.status, s.decided_at, s.producer_id, p.name AS producer_name,"
    " p.kind AS producer_kind, c.number AS certificate, c.revoked_at AS certificate_revoked_at FROM samples s"
    " JOIN producers p ON p.id = s.producer_id"
    " LEFT JOIN certificates c ON c.station = s.station AND c.root_code = s.root_code"
)


def _sample_item(db: Database, row: dict[str, Any], *, lines: bool) -> dict[str, Any]:
    item = dict(row)
    item["producer"] = ref_of(int(item.pop("producer_id")))
    item["status_label"] = STATUS_LABEL.get(item["status"], item["status"])
    if lines:
        item["results"] = result_lines(db, item["station"], item["code"])
    return item


def _under(db: Database, user: User, node: str, column: str) -> tuple[str, list[object]]:
    """The subtree condition of grid node `node` (a code) on `column`; NotFound outside the user's scope."""
    return subtree_sql(column, scoped_node(db, user, node).path)


def list_samples(
    db: Database,
    user: User,
    *,
    station: str | None = None,
    producer: str | None = None,
    status: str | None = None,
    node: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """(total, page) of registered samples in the caller's scope (under grid node `node` when given),
    newest first."""
    clause, params = subtree_sql("s.node_id", user.node_path)
    where, args = [clause], list(params)
    if node:
        sub, sub_params = _under(db, user, node, "s.node_id")
        where.append(sub)
        args.extend(sub_params)
    if station:
        where.append("s.station = ?")
        args.append(station)
    if producer:
        where.append("s.producer_id = ?")
        args.append(id_of_ref(producer))
    if status:
        where.append("s.status = ?")
        args.append(status)
    w = " AND ".join(f"({x})" for x in where)
    total = int(db.execute(f"SELECT COUNT(*) FROM samples s WHERE {w}", args).fetchone()[0])  # noqa: S608
    cur = db.execute(
        f"{_SAMPLE_SELECT} WHERE {w} ORDER BY s.registered_at DESC LIMIT ? OFFSET ?", [*args, limit, offset]
    )
    names = [d[0] for d in cur.description]
    return total, [_sample_item(db, dict(zip(names, r, strict=True)), lines=False) for r in cur.fetchall()]


def get_sample(db: Database, user: User, station: str, code: str) -> dict[str, Any]:
    cur = db.execute(f"{_SAMPLE_SELECT} WHERE s.station = ? AND s.code = ?", [station, code])
    row = cur.fetchone()
    path = db.execute(
        "SELECT g.path FROM samples s JOIN grid_nodes g ON g.id = s.node_id WHERE s.station = ? AND s.code = ?",
        [station, code],
    ).fetchone()
    if row is None or path is None or not user.sees(str(path[0])):
        raise NotFound(f"样品 {code} 不在您的辖区 (sample not found in your scope)")
    return _sample_item(db, dict(zip([d[0] for d in cur.description], row, strict=True)), lines=True)


def sample_for_result(db: Database, station: str, sample_id: str) -> dict[str, Any] | None:
    """The registration a measurement names (for case details), or None (未登记)."""
    cur = db.execute(f"{_SAMPLE_SELECT} WHERE s.station = ? AND s.code = ?", [station, sample_id])
    row = cur.fetchone()
    if row is None:
        return None
    return _sample_item(db, dict(zip([d[0] for d in cur.description], row, strict=True)), lines=True)


def producer_history(db: Database, user: User, ref: str) -> dict[str, Any]:
    """A producer's samples (test history) and held batches, within what `user` may see."""
    pid = id_of_ref(ref)
    path = db.execute(
        "SELECT g.path FROM producers p JOIN grid_nodes g ON g.id = p.village_node_id WHERE p.id = ?", [pid]
    ).fetchone()
    if path is None or not str(path[0]).startswith(scope_path(user)):
        raise NotFound(f"生产主体 {ref} 不存在 (producer not found)")
    _, items = list_samples(db, user, producer=ref, limit=1000)
    return {
        "producer": ref,
        "samples": items,
        "held_batches": [i for i in items if i["status"] == "held" and i["code"] == i["root_code"]],
        "certificates": sorted({i["certificate"] for i in items if i["certificate"]}),
    }


def unregistered_results(
    db: Database, user: User, *, node: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """Results whose sample id names no registration at their station (shown as 未登记), newest first."""
    clause, params = (
        subtree_sql("r.node_id", user.node_path) if not node else _under(db, user, node, "r.node_id")
    )
    w = f"({clause}) AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.station = r.station AND s.code = r.sample_id)"  # noqa: S608
    total = int(db.execute(f"SELECT COUNT(*) FROM results r WHERE {w}", params).fetchone()[0])  # noqa: S608
    cur = db.execute(
        "SELECT r.id, r.station, r.sample_id, r.product, r.analyte, r.verdict, r.measured_at FROM results r"  # noqa: S608
        f" WHERE {w} ORDER BY r.measured_at DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    names = [d[0] for d in cur.description]
    return total, [{**dict(zip(names, r, strict=True)), "registration": "未登记 (unregistered)"} for r in cur]


def public_certificate(db: Database, number: str) -> dict[str, Any]:
    """What a buyer may see of a certificate: product, quantity, producer name and contact person, village,
    date, test summary, validity. No ID number, phone, plot or station key material. NotFound otherwise."""
    row = db.execute(
        "SELECT c.number, c.issued_at, c.revoked_at, c.summary_json, s.product, s.batch, s.quantity_kg,"
        " p.name, p.kind, p.contact, g.name FROM certificates c"
        " JOIN samples s ON s.id = c.sample_id JOIN producers p ON p.id = s.producer_id"
        " JOIN grid_nodes g ON g.id = p.village_node_id WHERE c.number = ?",
        [number],
    ).fetchone()
    if row is None:
        raise NotFound("合格证不存在 (certificate not found)")
    issued = datetime.fromisoformat(row[1]).astimezone(GRID_TZ)
    return {
        "number": row[0],
        "valid": row[2] is None,
        "issued_on": issued.date().isoformat(),
        "revoked_at": row[2],
        "tests": json.loads(row[3]),
        "product": row[4],
        "batch": row[5],
        "quantity_kg": row[6],
        "producer": row[7],
        "producer_kind": row[8],
        "contact": row[9],
        "village": row[10],
    }
