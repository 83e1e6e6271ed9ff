"""The live dashboard's read side: the overview of one grid node (figures of the node, its ancestors and
children, station tiles, open cases, charts, the latest results) and the live feed's tail query.

Does: read, scoped to a `cloud.grid.Node` the caller resolved (`cloud.auth.resolve_scope`); count figures
through cloud.reports so the dashboard and the reports agree. The live feed tails `results` by rowid
(`results_after`, `cursor`), so results committed by any ingest process show up.
Does not: authorise, HTTP or Server-Sent Events (cloud.api.routes.dashboard), or write anything.
"""

# ruff: noqa: S608 - SQL text here is assembled only from this module's constants; values are bound.
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from cloud import periods, reports
from cloud.auth import User, resolve_scope
from cloud.db import Database
from cloud.grid import WHOLE_GRID, Node, ancestors, children
from cloud.sqlfilter import subtree_sql
from kuaijian_schema.wire import Status

RECENT = 30
MAX_STATIONS = 1000
MAX_CASES = 200


class NodeFigures(BaseModel):
    id: str
    name: str
    level: str
    tests: int
    valid: int
    positives: int
    positive_rate: float | None
    stations_total: int
    stations_online: int


class InstrumentNote(BaseModel):
    """An instrument of a station's last status that needs a look."""

    name: str
    serial: str | None
    state: str  # ok | unavailable | error | starting
    last_error: str | None  # the reason, when the state is `error`
    last_event: str | None  # e.g. the analyzer's memory found cleared or replaced (reading goes on)


class StationTile(BaseModel):
    id: str
    name: str
    group_id: str | None
    group_name: str | None
    state: str  # online | offline | unknown (never reported a status)
    last_seen: str | None
    outbox_depth: int | None  # as last reported: current only while online
    oldest_unsent_age_s: float | None
    backlog_age_s: float | None  # how old that report is (since the last status heard while online)
    instruments: list[InstrumentNote] = Field(
        default_factory=list,
        description="instruments of the last status in state `error` (with the reason) or with a last_event",
    )


def _instrument_notes(status_json: str | None) -> list[InstrumentNote]:
    """The instruments of a stored status (`Status` JSON) in state `error` or with an event."""
    if not status_json:
        return []
    try:
        status = Status.model_validate_json(status_json)
    except ValueError:  # stored by ingest from a validated Status; an older row may not parse
        return []
    return [
        InstrumentNote(
            name=i.name,
            serial=i.serial,
            state=i.state,
            last_error=i.last_error if i.state == "error" else None,
            last_event=i.last_event,
        )
        for i in status.instruments
        if i.state == "error" or i.last_event
    ]


class OpenCase(BaseModel):
    id: int
    station: str
    station_name: str
    analyte: str
    product: str
    status: str
    level: str
    escalations: int
    opened_at: str
    deadline: str
    overdue: bool


class LiveResult(BaseModel):
    rowid: int
    id: str
    station: str
    station_name: str
    analyte: str
    product: str
    sample_id: str
    method: str
    verdict: str
    measured_at: str
    received_at: str
    flags: list[str] = []
    """Ingest flags: `implausible_time` (measured_at is then the receive time), `seq_jump`."""
    qc: list[str] = Field(default_factory=list, description="QC flags of the result (wire names)")
    margin_sd: float | None = Field(
        default=None,
        description="gold: distance of the T/C ratio from the nearest decision boundary in noise sds of "
        "the ratio (how sure the verdict is); absent for results without it",
    )
    test_snr: float | None = Field(default=None, description="gold: signal-to-noise of the test line")


class Totals(BaseModel):
    tests: int
    valid: int
    positives: int
    suspects: int
    positive_rate: float | None
    stations_total: int
    stations_online: int
    open_cases: int
    overdue_cases: int


class Overview(BaseModel):
    user: str
    node: NodeFigures
    path: list[NodeFigures]
    window: dict[str, str | int]
    totals: Totals
    children: list[NodeFigures]
    stations: list[StationTile]
    cases: list[OpenCase]
    by_analyte: list[reports.AnalyteRow]
    per_day: list[reports.DayRow]
    recent: list[LiveResult]
    cursor: int


def _station_counts(db: Database, scope: Node) -> tuple[int, int]:
    clause, params = subtree_sql("s.node_id", scope.path)
    row = db.execute(
        f"SELECT COUNT(*), COALESCE(SUM(s.online), 0) FROM stations s WHERE {clause}",
        params,
    ).fetchone()
    return int(row[0]), int(row[1])


def _figures(db: Database, scope: Node, period: periods.Period, tz: ZoneInfo) -> NodeFigures:
    c = reports.counts(db, scope, period, tz)
    total, online = _station_counts(db, scope)
    return NodeFigures(
        id=scope.code or "",
        name=scope.name,
        level=scope.level,
        tests=c.tests,
        valid=c.valid,
        positives=c.positives,
        positive_rate=c.positive_rate,
        stations_total=total,
        stations_online=online,
    )


def _stations(db: Database, scope: Node, now: datetime) -> list[StationTile]:
    """Stations under `scope`, grouped by town (by village once the scope is a town or below)."""
    clause, params = subtree_sql("s.node_id", scope.path)
    rows = db.execute(
        f"""SELECT s.id, g.name, g.path, s.online, s.last_seen, s.backlog, s.oldest_unsent_age_s, s.status_at,
                   s.status_json
            FROM stations s JOIN grid_nodes g ON g.id = s.node_id WHERE {clause}
            ORDER BY g.path LIMIT ?""",
        [*params, MAX_STATIONS],
    ).fetchall()
    # paths are /county/town/village/station/: group at the town level at least, so the whole-grid and
    # county views show one box per town, a town view one box per village
    depth = max(1, 0 if scope.id is None else len([p for p in scope.path.split("/") if p]))
    group_ids: set[int] = set()
    parsed: list[tuple[Any, ...]] = []
    for row in rows:
        ids = [int(p) for p in str(row[2]).split("/") if p]
        group = ids[depth] if depth < len(ids) - 1 else (scope.id if scope.id is not None else ids[-1])
        group_ids.add(group)
        parsed.append((*row, group))
    names: dict[int, tuple[str, str]] = {}
    if group_ids:
        marks = ",".join("?" for _ in group_ids)
        for gid, code, name in db.execute(
            f"SELECT id, code, name FROM grid_nodes WHERE id IN ({marks})",
            sorted(group_ids),
        ).fetchall():
            names[int(gid)] = (str(code), str(name))
    tiles = []
    for sid, name, _path, online, last_seen, backlog, oldest, status_at, status_json, group in parsed:
        # online/offline come from the station's retained status (birth / last will); a station that
        # sent results but never a status is "unknown".
        state = "online" if online else ("offline" if status_at else "unknown")
        code, gname = names.get(group, (None, None))
        tiles.append(
            StationTile(
                id=sid,
                name=name,
                group_id=code,
                group_name=gname,
                state=state,
                last_seen=last_seen,
                outbox_depth=backlog,
                oldest_unsent_age_s=oldest,
                # the figures come with the statuses of an online gateway, and last_seen is the arrival
                # of the last of those (or of a result): the age of the backlog shown
                backlog_age_s=None
                if last_seen is None
                else max(0.0, (now - datetime.fromisoformat(str(last_seen))).total_seconds()),
                instruments=_instrument_notes(status_json),
            )
        )
    return tiles


def _cases(db: Database, scope: Node, now: datetime) -> tuple[list[OpenCase], int, int]:
    clause, params = subtree_sql("c.origin_node_id", scope.path)
    now_s = now.isoformat()
    total, overdue = db.execute(
        f"""SELECT COUNT(*), COALESCE(SUM(CASE WHEN c.deadline < ? THEN 1 ELSE 0 END), 0) FROM cases c
            WHERE c.status != 'closed' AND {clause}""",
        [now_s, *params],
    ).fetchone()
    rows = db.execute(
        f"""SELECT c.id, c.station, g.name, c.analyte, c.product, c.status, c.level, c.escalations,
                   c.opened_at, c.deadline
            FROM cases c JOIN grid_nodes g ON g.id = c.origin_node_id
            WHERE c.status != 'closed' AND {clause} ORDER BY c.deadline, c.id LIMIT ?""",
        [*params, MAX_CASES],
    ).fetchall()
    cases = [
        OpenCase(
            id=r[0],
            station=r[1],
            station_name=r[2],
            analyte=r[3],
            product=r[4],
            status=r[5],
            level=r[6],
            escalations=r[7],
            opened_at=r[8],
            deadline=r[9],
            overdue=datetime.fromisoformat(r[9]) < now,
        )
        for r in rows
    ]
    return cases, int(total), int(overdue)


_LIVE_COLUMNS = """r.rowid, r.id, r.station, g.name, r.analyte, r.product, r.sample_id, r.method, r.verdict,
                   r.measured_at, r.received_at, r.ingest_flags, r.qc_json, r.values_json"""


def _live_row(r: tuple[Any, ...]) -> LiveResult:
    values = json.loads(r[13])
    if not isinstance(values, dict):
        values = {}
    return LiveResult(
        rowid=r[0],
        id=r[1],
        station=r[2],
        station_name=r[3],
        analyte=r[4],
        product=r[5],
        sample_id=r[6],
        method=r[7],
        verdict=r[8],
        measured_at=r[9],
        received_at=r[10],
        flags=json.loads(r[11] or "[]"),
        qc=[str(q) for q in json.loads(r[12])],
        margin_sd=_number(values.get("margin_sd")),
        test_snr=_number(values.get("test_snr")),
    )


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def results_after(db: Database, scope: Node, after: int, limit: int) -> list[LiveResult]:
    """Results under `scope` with rowid > `after`, oldest first (the live feed's tail query)."""
    clause, params = subtree_sql("r.node_id", scope.path)
    rows = db.execute(
        f"""SELECT {_LIVE_COLUMNS} FROM results r JOIN grid_nodes g ON g.id = r.node_id
            WHERE r.rowid > ? AND {clause} ORDER BY r.rowid LIMIT ?""",
        [after, *params, limit],
    ).fetchall()
    return [_live_row(r) for r in rows]


def _recent(db: Database, scope: Node) -> list[LiveResult]:
    clause, params = subtree_sql("r.node_id", scope.path)
    rows = db.execute(
        f"""SELECT {_LIVE_COLUMNS} FROM results r JOIN grid_nodes g ON g.id = r.node_id
            WHERE {clause} ORDER BY r.rowid DESC LIMIT ?""",
        [*params, RECENT],
    ).fetchall()
    return [_live_row(r) for r in rows]


def cursor(db: Database) -> int:
    """The newest results rowid: the live feed resumes after it."""
    return int(db.execute("SELECT COALESCE(MAX(rowid), 0) FROM results").fetchone()[0])


def overview(
    db: Database,
    user: User,
    code: str | None,
    now: datetime,
    days: int,
    tz: ZoneInfo = periods.REPORT_TZ,
) -> Overview:
    """Everything the dashboard shows for node `code` (default: the user's node) over the last `days` local
    days of the grid's time zone `tz`."""
    last = cursor(db)  # before reading anything else: the live feed resumes after it, nothing is lost
    scope = resolve_scope(db, user, code)
    today = periods.local_today(now, tz)
    period = periods.range_period(today - timedelta(days=days - 1), today)
    node = _figures(db, scope, period, tz)
    above = [s for s in ancestors(db, scope) if user.sees(s.path)]
    if user.is_admin and scope.id is not None:
        above.insert(0, WHOLE_GRID)
    path = [node if s.code == scope.code else _figures(db, s, period, tz) for s in above]
    stations_total, stations_online = node.stations_total, node.stations_online
    totals_counts = reports.counts(db, scope, period, tz)
    cases, open_cases, overdue = _cases(db, scope, now)
    return Overview(
        user=user.name,
        node=node,
        path=path or [node],
        window={"from": period.start.isoformat(), "to": period.end.isoformat(), "days": days},
        totals=Totals(
            tests=totals_counts.tests,
            valid=totals_counts.valid,
            positives=totals_counts.positives,
            suspects=totals_counts.suspects,
            positive_rate=totals_counts.positive_rate,
            stations_total=stations_total,
            stations_online=stations_online,
            open_cases=open_cases,
            overdue_cases=overdue,
        ),
        children=[_figures(db, c, period, tz) for c in children(db, scope.id)],
        stations=_stations(db, scope, now),
        cases=cases,
        by_analyte=reports.by_analyte(db, scope, period, tz),
        per_day=reports.per_day(db, scope, period, tz),
        recent=_recent(db, scope),
        cursor=last,
    )
