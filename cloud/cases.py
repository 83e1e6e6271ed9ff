"""Cases: a positive (or repeated-suspect) result opens a case at its station; people act on it;
the scheduler reminds and escalates. Every change is an audited row in ``case_actions``.

Lifecycle:  report (申报, automatic) → assign (交办) → remind (催办, automatic near/after the deadline, or
by hand) → feedback (反馈: retest result, product held/destroyed, lab confirmation) → close.
Each level has a deadline (Settings.case_deadline_hours). When an unresolved case's deadline passes,
`tick` records an overdue reminder and escalates it one level up (station → village → town → county,
逐级上报) with that level's deadline; at county it is reminded once as overdue and stays there.

Opening rules (`on_result`, called by ingest inside its batch transaction):
- positive → a case, unless an unclosed case already exists for the same sample (station + sample id: one
  case per sample, however many lines of a multi-line card or enzyme channels are positive) or for the same
  station+product+analyte, in which case the result is reported on that case;
- suspect → a case when it is the Nth suspect (Settings.suspect_threshold, default 2) for the same
  station+product+analyte measured within Settings.suspect_window_days (default 7) — suspects that
  precede the last closed case of that key are not counted again.

Who may act: anyone who sees the case (its station is in their subtree) may add feedback or a note;
assign / remind / escalate (上报 by hand: one level up now) need the case's current responsible node in the
caller's subtree (else Forbidden). The one who reports is not the one who closes: close (办结) needs feedback
(反馈) first and a caller ABOVE the case's station (village, town, county, admin) who also sees its current node —
a station user never closes its own station's case. An assignee is a user whose node is on the case's path
(the station itself or a level above it), never free text.

Does not: HTTP, or time: `now` is always passed in (the app's Clock), so tests control time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cloud.auth import User
from cloud.db import Database, transaction
from cloud.errors import Conflict, Forbidden, Invalid, NotFound
from cloud.grid import PARENT_LEVEL, node_by_id
from cloud.settings import Settings

ActionName = Literal["assign", "remind", "feedback", "escalate", "close", "note"]
FeedbackKind = Literal[
    "retest_negative", "retest_positive", "product_held", "product_destroyed", "lab_confirmed", "lab_negative"
]
SYSTEM = "system"

CASE_COLUMNS = (
    "id, station, origin_node_id, node_id, level, status, reason, result_id, product, analyte, opened_at,"
    " deadline, assignee, closed_at, escalations, reminded, updated_at"
)


@dataclass(frozen=True)
class NewResult:
    """What case rules need from a freshly stored result."""

    id: str
    station: str
    node_id: int
    product: str
    analyte: str
    verdict: str
    measured_at: datetime
    sample_id: str | None = None


@dataclass(frozen=True)
class TickReport:
    reminded: int
    escalated: int


def _record(
    db: Database,
    case_id: int,
    at: datetime,
    actor: str,
    action: str,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    db.execute(
        "INSERT INTO case_actions (case_id, at, actor, action, note, data_json) VALUES (?, ?, ?, ?, ?, ?)",
        [
            case_id,
            at.isoformat(),
            actor,
            action,
            note,
            None if data is None else json.dumps(data, ensure_ascii=False),
        ],
    )


def _open_case_for_key(db: Database, station: str, product: str, analyte: str) -> int | None:
    row = db.execute(
        "SELECT id FROM cases WHERE station = ? AND product = ? AND analyte = ? AND status != 'closed'"
        " ORDER BY id DESC LIMIT 1",
        [station, product, analyte],
    ).fetchone()
    return None if row is None else int(row[0])


def _open_case_for_sample(db: Database, station: str, sample_id: str | None) -> int | None:
    """The unclosed case of a sample: every positive line / channel of one sample belongs to ONE case."""
    if not sample_id:
        return None
    row = db.execute(
        "SELECT c.id FROM cases c JOIN results r ON r.id = c.result_id WHERE c.station = ? AND r.station = ?"
        " AND r.sample_id = ? AND c.status != 'closed' ORDER BY c.id DESC LIMIT 1",
        [station, station, sample_id],
    ).fetchone()
    return None if row is None else int(row[0])


OPENING_VERDICTS = ("positive", "suspect")
"""The verdicts the opening rules look at; any other verdict never opens or joins a case."""


def on_result(db: Database, result: NewResult, settings: Settings, now: datetime) -> int | None:
    """Apply the opening rules to a newly stored result; returns the case id it opened or joined."""
    if result.verdict not in OPENING_VERDICTS:
        return None
    with transaction(db):
        existing = _open_case_for_sample(db, result.station, result.sample_id)
        if existing is None:
            existing = _open_case_for_key(db, result.station, result.product, result.analyte)
        if result.verdict == "suspect":
            since = result.measured_at - timedelta(days=settings.suspect_window_days)
            last_closed = db.execute(
                "SELECT MAX(closed_at) FROM cases WHERE station = ? AND product = ? AND analyte = ?"
                " AND status = 'closed'",
                [result.station, result.product, result.analyte],
            ).fetchone()[0]
            count = db.execute(
                "SELECT COUNT(*) FROM results WHERE station = ? AND product = ? AND analyte = ?"
                " AND verdict = 'suspect' AND measured_at >= ? AND measured_at <= ?"
                " AND (? IS NULL OR received_at > ?)",
                [
                    result.station,
                    result.product,
                    result.analyte,
                    since.isoformat(),
                    result.measured_at.isoformat(),
                    last_closed,
                    last_closed,
                ],
            ).fetchone()[0]
            if count < settings.suspect_threshold:
                return None
        data = {"result_id": result.id, "verdict": result.verdict}
        if existing is not None:
            _record(db, existing, now, SYSTEM, "report", f"further {result.verdict} result {result.id}", data)
            db.execute("UPDATE cases SET updated_at = ? WHERE id = ?", [now.isoformat(), existing])
            return existing
        reason = "positive" if result.verdict == "positive" else "repeated_suspect"
        deadline = now + timedelta(hours=settings.deadline_hours("station"))
        cur = db.execute(
            "INSERT INTO cases (station, origin_node_id, node_id, level, status, reason, result_id, product,"
            " analyte, opened_at, deadline, updated_at) VALUES (?, ?, ?, 'station', 'open', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                result.station,
                result.node_id,
                result.node_id,
                reason,
                result.id,
                result.product,
                result.analyte,
                now.isoformat(),
                deadline.isoformat(),
                now.isoformat(),
            ],
        )
        case_id = int(cur.fetchone()[0])
        note = (
            f"automatic: positive {result.analyte} in {result.product}"
            if reason == "positive"
            else f"automatic: {settings.suspect_threshold} suspect {result.analyte} results in {result.product}"
            f" within {settings.suspect_window_days:g} days"
        )
        _record(db, case_id, now, SYSTEM, "report", note, {**data, "deadline": deadline.isoformat()})
        return case_id


_REMIND_NOTE = {"near": "deadline approaching", "overdue": "deadline passed"}


def _remind(
    db: Database, case_id: int, now: datetime, kind: str, deadline: str, *, mark: bool = True
) -> None:
    """Record an automatic reminder (催办) of `kind` ("near" / "overdue"); `mark` remembers it on the case."""
    _record(db, case_id, now, SYSTEM, "remind", _REMIND_NOTE[kind], {"kind": kind, "deadline": deadline})
    if mark:
        db.execute(
            "UPDATE cases SET reminded = ?, updated_at = ? WHERE id = ?", [kind, now.isoformat(), case_id]
        )


def tick(db: Database, now: datetime, settings: Settings) -> TickReport:
    """Remind cases nearing their deadline, remind + escalate overdue ones. Idempotent for a given `now`."""
    reminded = escalated = 0
    near = timedelta(hours=settings.remind_before_hours)
    with transaction(db):
        rows = db.execute(
            "SELECT id, node_id, level, deadline, reminded FROM cases WHERE status != 'closed'"
            " AND deadline <= ? ORDER BY id",
            [(now + near).isoformat()],
        ).fetchall()
        for case_id, node_id, level, deadline_s, was_reminded in rows:
            deadline = datetime.fromisoformat(deadline_s)
            if now < deadline:
                if was_reminded == "none":
                    _remind(db, case_id, now, "near", deadline_s)
                    reminded += 1
                continue
            parent_level = PARENT_LEVEL[level]
            node = node_by_id(db, node_id)
            parent = None if node is None or node.parent_id is None else node_by_id(db, node.parent_id)
            if parent_level is None or parent is None:
                if was_reminded != "overdue":
                    _remind(db, case_id, now, "overdue", deadline_s)
                    reminded += 1
                continue
            new_deadline = now + timedelta(hours=settings.deadline_hours(parent.level))
            _remind(db, case_id, now, "overdue", deadline_s, mark=False)  # the escalation resets `reminded`
            _record(
                db,
                case_id,
                now,
                SYSTEM,
                "escalate",
                f"overdue at {level}; escalated to {parent.level} {parent.code}",
                {
                    "from_level": level,
                    "to_level": parent.level,
                    "to_node": parent.code,
                    "deadline": new_deadline.isoformat(),
                },
            )
            db.execute(
                "UPDATE cases SET node_id = ?, level = ?, deadline = ?, escalations = escalations + 1,"
                " reminded = 'none', updated_at = ? WHERE id = ?",
                [parent.id, parent.level, new_deadline.isoformat(), now.isoformat(), case_id],
            )
            reminded += 1
            escalated += 1
    return TickReport(reminded=reminded, escalated=escalated)


def case_row(db: Database, case_id: int) -> dict[str, Any] | None:
    cur = db.execute(f"SELECT {CASE_COLUMNS} FROM cases WHERE id = ?", [case_id])  # noqa: S608 - constant
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def _visible_case(db: Database, user: User, case_id: int) -> dict[str, Any]:
    case = case_row(db, case_id)
    origin = None if case is None else node_by_id(db, int(case["origin_node_id"]))
    if case is None or origin is None or not user.sees(origin.path):
        raise NotFound(f"case {case_id} not found in your scope", code="case.not_found")
    return case


def act(
    db: Database,
    user: User,
    case_id: int,
    action: ActionName,
    now: datetime,
    *,
    note: str | None = None,
    assignee: str | None = None,
    feedback: FeedbackKind | None = None,
    data: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Apply a user's action to a case (audited). Returns the updated case row.

    Raises NotFound (not in scope), Forbidden (may see but not do this), Conflict (closed case,
    close without feedback), Invalid (missing assignee / feedback kind).
    """
    with transaction(db):
        case = _visible_case(db, user, case_id)
        if case["status"] == "closed":
            raise Conflict(f"case {case_id} is closed", code="case.closed")
        current = node_by_id(db, int(case["node_id"]))
        if action in ("assign", "remind", "escalate", "close"):
            if current is None or not user.sees(current.path):
                raise Forbidden(
                    f"case {case_id} is handled at {case['level']} level, above your node",
                    code="case.above_you",
                )
        if action == "close":
            origin = node_by_id(db, int(case["origin_node_id"]))
            if origin is None or user.node_path == origin.path:
                raise Forbidden(
                    "上报的一级不能办结本案，须由上级审核反馈后办结 (the station that reported a case cannot close it;"
                    " the level above closes it after reviewing the feedback)",
                    code="case.reporter_cannot_close",
                )
        payload: dict[str, Any] = dict(data or {})
        status = case["status"]
        if action == "assign":
            if not assignee or not assignee.strip():
                raise Invalid("assign needs an assignee", code="case.needs_assignee")
            _check_assignee(db, case, assignee)
            payload["assignee"] = assignee
            db.execute("UPDATE cases SET assignee = ? WHERE id = ?", [assignee, case_id])
            status = "assigned"
        elif action == "feedback":
            if feedback is None:
                raise Invalid("feedback needs a kind", code="case.needs_feedback_kind")
            payload["kind"] = feedback
            status = "feedback"
        elif action == "close":
            has_feedback = db.execute(
                "SELECT 1 FROM case_actions WHERE case_id = ? AND action = 'feedback' LIMIT 1", [case_id]
            ).fetchone()
            if not has_feedback:
                raise Conflict(
                    "a case is closed after feedback (反馈) has been recorded", code="case.needs_feedback"
                )
            status = "closed"
            db.execute("UPDATE cases SET closed_at = ? WHERE id = ?", [now.isoformat(), case_id])
        elif action == "remind":
            payload["kind"] = "manual"
        elif action == "escalate":
            parent = (
                None if current is None or current.parent_id is None else node_by_id(db, current.parent_id)
            )
            if parent is None:
                raise Conflict(f"case {case_id} is already at the top level", code="case.top_level")
            if settings is None:
                raise Invalid("escalate needs the service settings (deadlines per level)")
            deadline = now + timedelta(hours=settings.deadline_hours(parent.level))
            payload.update({"from_level": case["level"], "to_level": parent.level, "to_node": parent.code})
            payload["deadline"] = deadline.isoformat()
            db.execute(
                "UPDATE cases SET node_id = ?, level = ?, deadline = ?, escalations = escalations + 1,"
                " reminded = 'none' WHERE id = ?",
                [parent.id, parent.level, deadline.isoformat(), case_id],
            )
        if action == "close":
            db.execute("UPDATE cases SET status = 'closed' WHERE id = ?", [case_id])
            decided = _redecide_batches(db, case, now)
            if decided:
                payload["batches"] = decided
        _record(db, case_id, now, user.name, action, note, payload or None)
        db.execute(
            "UPDATE cases SET status = ?, updated_at = ? WHERE id = ?", [status, now.isoformat(), case_id]
        )
        updated = case_row(db, case_id)
    if updated is None:  # pragma: no cover - we hold the write lock
        raise NotFound(f"case {case_id} vanished")
    return updated


def results_on_cases(db: Database, station: str) -> dict[str, int]:
    """Every result reported on a case of `station` → that case's id: the result that opened it, and each
    further result the opening rules reported on it (its ``report`` actions)."""
    out = {
        str(rid): int(cid)
        for cid, rid in db.execute("SELECT id, result_id FROM cases WHERE station = ?", [station])
    }
    for case_id, data in db.execute(
        "SELECT a.case_id, a.data_json FROM case_actions a JOIN cases c ON c.id = a.case_id"
        " WHERE c.station = ? AND a.action = 'report' AND a.data_json IS NOT NULL",
        [station],
    ).fetchall():
        rid = json.loads(data).get("result_id")
        if rid:
            out.setdefault(str(rid), int(case_id))
    return out


def _redecide_batches(db: Database, case: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Re-decide the sample batches of every result reported on a case that is being closed (a negative
    confirmation lifts a hold, cloud.samples.decide); [{code, status, certificate}] of those batches."""
    from cloud import samples  # samples imports producers → auth; imported here to keep this module light

    ids = {rid for rid, cid in results_on_cases(db, str(case["station"])).items() if cid == case["id"]}
    codes = sorted(
        {
            str(code)
            for rid in ids
            for (code,) in db.execute(
                "SELECT sample_id FROM results WHERE id = ? AND sample_id IS NOT NULL", [rid]
            ).fetchall()
        }
    )
    out: dict[str, dict[str, Any]] = {}
    for code in codes:
        decision = samples.decide(db, str(case["station"]), code, now)
        if decision is not None:
            out[decision.root_code] = {
                "code": decision.root_code,
                "status": decision.status,
                "certificate": decision.certificate,
            }
    return list(out.values())


def assignable(db: Database, case: dict[str, Any]) -> list[str]:
    """Names of the users a case may be assigned to (交办): those of its station or a level above it."""
    origin = node_by_id(db, int(case["origin_node_id"]))
    if origin is None:
        return []
    rows = db.execute(
        "SELECT u.name, g.path FROM users u JOIN grid_nodes g ON g.id = u.node_id WHERE u.revoked_at IS NULL "
        "ORDER BY length(g.path), u.name"
    ).fetchall()
    return [str(name) for name, path in rows if origin.path.startswith(str(path))]


def _check_assignee(db: Database, case: dict[str, Any], assignee: str) -> None:
    """The assignee must be a user responsible for the case's station: its node is the station or above."""
    row = db.execute(
        "SELECT g.path FROM users u JOIN grid_nodes g ON g.id = u.node_id WHERE u.name = ? AND u.revoked_at IS NULL",
        [assignee],
    ).fetchone()
    origin = node_by_id(db, int(case["origin_node_id"]))
    if row is None or origin is None or not origin.path.startswith(str(row[0])):
        raise Invalid(
            f"交办对象须为负责该服务站的用户 (assignee must be a user of the case's station or a level above it): {assignee!r}",
            code="case.bad_assignee",
        )


def actions(db: Database, case_id: int) -> list[dict[str, Any]]:
    cur = db.execute(
        "SELECT id, at, actor, action, note, data_json FROM case_actions WHERE case_id = ? ORDER BY id",
        [case_id],
    )
    out = []
    for row in cur.fetchall():
        item = dict(zip([d[0] for d in cur.description], row, strict=True))
        item["data"] = None if item.pop("data_json") is None else json.loads(row[5])
        out.append(item)
    return out


def get_case(db: Database, user: User, case_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A case in the user's scope with its audit trail; NotFound otherwise."""
    case = _visible_case(db, user, case_id)
    return case, actions(db, case_id)


def case_sample(db: Database, case: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the sample registration with producer and batch, or None when unregistered; every result of the
    case's sample at its station with values and QC flags)."""
    from cloud import samples  # samples imports producers → auth; imported here to keep this module light

    row = db.execute("SELECT sample_id FROM results WHERE id = ?", [case["result_id"]]).fetchone()
    if row is None:
        return None, []
    sample_id = str(row[0])
    return samples.sample_for_result(db, case["station"], sample_id), samples.result_lines(
        db, case["station"], sample_id
    )
