"""The live dashboard: static page at /dashboard/ (and / redirects there), its data endpoint
GET /api/dashboard/overview, the names it shows for codes (GET /api/labels) and the Server-Sent Events feed
GET /api/live.

The live feed tails the `results` table by SQLite rowid (so results committed by any ingest process show
up) and wakes early when the in-process ingest calls `cloud.live.hub_for(app).notify()`. EventSource cannot
send headers, so /api/live alone also accepts the bearer token as `?token=`. Each event is
`event: result`, `id: <rowid>` (the browser resends it as Last-Event-ID on reconnect, so nothing is
missed), `data: <json>`; a comment heartbeat every `PING_S` seconds keeps proxies from closing the stream.
The token is checked again on every pass: when it expires or is revoked the stream sends `event: auth`
(`data: {"code": ...}`) and ends.

Does not: compute report figures (cloud.reports) or write to the database.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from cloud import reports
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep, SettingsDep
from cloud.auth import User, user_for_token
from cloud.clock import Clock
from cloud.db import Database, connect
from cloud.errors import NotFound, Unauthenticated
from cloud.live import hub_for
from cloud.sqlfilter import subtree_sql
from kuaijian_schema.labels import ANALYTES, QC_FLAGS
from kuaijian_schema.wire import Status

router = APIRouter(tags=["dashboard"])

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_FILES = {
    "auth.js": "text/javascript",
    "app.js": "text/javascript",
    "app.css": "text/css",
    "index.html": "text/html",
    "command.html": "text/html",
    "command.js": "text/javascript",
    "command.css": "text/css",
}
POLL_S = 1.0
PING_S = 10.0
BATCH = 200
RECENT = 30
MAX_STATIONS = 1000
MAX_CASES = 200


# ---------------------------------------------------------------- static page


def _static(name: str) -> FileResponse:
    return FileResponse(
        STATIC_DIR / name,
        media_type=f"{STATIC_FILES[name]}; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/dashboard", include_in_schema=False)
def dashboard_redirect() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/dashboard/", include_in_schema=False)
def dashboard_page() -> FileResponse:
    return _static("index.html")


@router.get("/dashboard/{name}", include_in_schema=False)
def dashboard_asset(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dashboard file")
    return _static(name)


# ---------------------------------------------------------------- labels


class Name(BaseModel):
    zh: str
    en: str


class Labels(BaseModel):
    analytes: dict[str, Name]
    qc: dict[str, Name]
    timezone: str


@router.get("/api/labels", tags=["dashboard"])
def labels(settings: SettingsDep) -> Labels:
    """Chinese and English names of analyte and QC-flag codes (kuaijian_schema.labels), and the grid's time
    zone: what the dashboard shows instead of codes and UTC. Public: it holds no data."""
    return Labels(
        analytes={k: Name(zh=v[0], en=v[1]) for k, v in ANALYTES.items()},
        qc={k: Name(zh=v[0], en=v[1]) for k, v in QC_FLAGS.items()},
        timezone=settings.timezone,
    )


# ---------------------------------------------------------------- overview


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


def _station_counts(db: Database, scope: reports.Scope) -> tuple[int, int]:
    clause, params = subtree_sql("s.node_id", scope.path)
    row = db.execute(
        f"SELECT COUNT(*), COALESCE(SUM(s.online), 0) FROM stations s WHERE {clause}",  # noqa: S608
        params,
    ).fetchone()
    return int(row[0]), int(row[1])


def _figures(db: Database, scope: reports.Scope, period: reports.Period, tz: ZoneInfo) -> NodeFigures:
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


def _children(db: Database, scope: reports.Scope) -> list[reports.Scope]:
    if scope.id is None:
        rows = db.execute(
            "SELECT id, code, name, level, path FROM grid_nodes WHERE parent_id IS NULL ORDER BY code"
        )
    else:
        rows = db.execute(
            "SELECT id, code, name, level, path FROM grid_nodes WHERE parent_id = ? ORDER BY code", [scope.id]
        )
    return [reports.Scope(id=r[0], code=r[1], name=r[2], level=r[3], path=r[4]) for r in rows.fetchall()]


def _stations(db: Database, scope: reports.Scope, now: datetime) -> list[StationTile]:
    """Stations under `scope`, grouped by town (by village once the scope is a town or below)."""
    clause, params = subtree_sql("s.node_id", scope.path)
    rows = db.execute(
        f"""SELECT s.id, g.name, g.path, s.online, s.last_seen, s.backlog, s.oldest_unsent_age_s, s.status_at,
                   s.status_json
            FROM stations s JOIN grid_nodes g ON g.id = s.node_id WHERE {clause}
            ORDER BY g.path LIMIT ?""",  # noqa: S608
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
            f"SELECT id, code, name FROM grid_nodes WHERE id IN ({marks})",  # noqa: S608 - placeholders only
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


def _cases(db: Database, scope: reports.Scope, now: datetime) -> tuple[list[OpenCase], int, int]:
    clause, params = subtree_sql("c.origin_node_id", scope.path)
    now_s = now.isoformat()
    total, overdue = db.execute(
        f"""SELECT COUNT(*), COALESCE(SUM(CASE WHEN c.deadline < ? THEN 1 ELSE 0 END), 0) FROM cases c
            WHERE c.status != 'closed' AND {clause}""",  # noqa: S608
        [now_s, *params],
    ).fetchone()
    rows = db.execute(
        f"""SELECT c.id, c.station, g.name, c.analyte, c.product, c.status, c.level, c.escalations,
                   c.opened_at, c.deadline
            FROM cases c JOIN grid_nodes g ON g.id = c.origin_node_id
            WHERE c.status != 'closed' AND {clause} ORDER BY c.deadline, c.id LIMIT ?""",  # noqa: S608
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


def results_after(db: Database, scope: reports.Scope, after: int, limit: int) -> list[LiveResult]:
    """Results under `scope` with rowid > `after`, oldest first (the live feed's tail query)."""
    clause, params = subtree_sql("r.node_id", scope.path)
    rows = db.execute(
        f"""SELECT {_LIVE_COLUMNS} FROM results r JOIN grid_nodes g ON g.id = r.node_id
            WHERE r.rowid > ? AND {clause} ORDER BY r.rowid LIMIT ?""",  # noqa: S608
        [after, *params, limit],
    ).fetchall()
    return [_live_row(r) for r in rows]


def _recent(db: Database, scope: reports.Scope) -> list[LiveResult]:
    clause, params = subtree_sql("r.node_id", scope.path)
    rows = db.execute(
        f"""SELECT {_LIVE_COLUMNS} FROM results r JOIN grid_nodes g ON g.id = r.node_id
            WHERE {clause} ORDER BY r.rowid DESC LIMIT ?""",  # noqa: S608
        [*params, RECENT],
    ).fetchall()
    return [_live_row(r) for r in rows]


def _cursor(db: Database) -> int:
    return int(db.execute("SELECT COALESCE(MAX(rowid), 0) FROM results").fetchone()[0])


def overview(
    db: Database,
    user: User,
    code: str | None,
    now: datetime,
    days: int,
    tz: ZoneInfo = reports.REPORT_TZ,
) -> Overview:
    """Everything the dashboard shows for node `code` (default: the user's node) over the last `days` local
    days of the grid's time zone `tz`."""
    cursor = _cursor(db)  # before reading anything else: the live feed resumes after it, nothing is lost
    scope = reports.resolve_scope(db, user, code)
    today = reports.local_today(now, tz)
    period = reports.range_period(today - timedelta(days=days - 1), today)
    node = _figures(db, scope, period, tz)
    ancestors = [s for s in reports.scope_path(db, scope) if user.sees(s.path)]
    if user.is_admin and scope.id is not None:
        ancestors.insert(0, reports.ALL_SCOPE)
    path = [node if s.code == scope.code else _figures(db, s, period, tz) for s in ancestors]
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
        children=[_figures(db, c, period, tz) for c in _children(db, scope)],
        stations=_stations(db, scope, now),
        cases=cases,
        by_analyte=reports.by_analyte(db, scope, period, tz),
        per_day=reports.per_day(db, scope, period, tz),
        recent=_recent(db, scope),
        cursor=cursor,
    )


@router.get(
    "/api/dashboard/overview",
    tags=["dashboard"],
    responses={
        401: {"description": "missing or invalid bearer token"},
        404: {"description": "node not in scope"},
    },
)
def dashboard_overview(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    node: Annotated[
        str | None, Query(max_length=64, description="grid node code (default: your node)")
    ] = None,
    days: Annotated[int, Query(ge=1, le=366, description="window of local days ending today")] = 14,
) -> Overview:
    """Figures for one grid node: totals, child nodes (drill-down), station tiles, open cases, charts,
    the most recent results and the live-feed cursor."""
    return overview(
        db, user, node, clock.now(), days, settings.tz
    )  # NotFound → 404, Invalid → 422 (app error handler)


# ---------------------------------------------------------------- live feed (SSE)


def _still_valid(db: Database, token: str, clock: Clock) -> str | None:
    """None while `token` is valid, else the Unauthenticated code (the stream then ends)."""
    try:
        user_for_token(db, token, clock.now())
    except Unauthenticated as exc:
        return exc.code
    return None


async def _live_events(
    request: Request,
    db_target: str,
    scope: reports.Scope,
    after: int | None,
    token: str,
    clock: Clock,
) -> AsyncIterator[ServerSentEvent]:
    hub = hub_for(request.app)
    db = await anyio.to_thread.run_sync(connect, db_target)
    try:
        async with hub.subscribe() as sub:
            cursor = after if after is not None else await anyio.to_thread.run_sync(_cursor, db)
            yield ServerSentEvent(event="hello", data=json.dumps({"cursor": cursor}), retry=2000)
            while not sub.closed:
                # the token is checked on every pass: a logout, revocation or expiry ends the stream
                refused = await anyio.to_thread.run_sync(_still_valid, db, token, clock)
                if refused is not None:
                    yield ServerSentEvent(event="auth", data=json.dumps({"code": refused}))
                    return
                rows = await anyio.to_thread.run_sync(results_after, db, scope, cursor, BATCH)
                for row in rows:
                    cursor = row.rowid
                    yield ServerSentEvent(event="result", id=str(row.rowid), data=row.model_dump_json())
                if len(rows) < BATCH:
                    await sub.wait(POLL_S)
    finally:
        db.close()


@router.get(
    "/api/live",
    tags=["dashboard"],
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "endless stream of `result` events"},
        401: {"description": "missing or invalid token"},
        404: {"description": "node not in scope"},
    },
)
def live(
    request: Request,
    settings: SettingsDep,
    db: DbDep,
    clock: ClockDep,
    token: Annotated[
        str | None, Query(max_length=256, description="bearer token (EventSource sends no headers)")
    ] = None,
    node: Annotated[
        str | None, Query(max_length=64, description="grid node code (default: your node)")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, description="resume after this results rowid (default: now)")
    ] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> EventSourceResponse:
    """Server-Sent Events: every result stored under `node` from now on (or after `after` / Last-Event-ID)."""
    secret = token
    if secret is None and authorization is not None and authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()
    if not secret:
        raise Unauthenticated("missing token", code="auth.missing")
    user = user_for_token(db, secret, clock.now())  # Unauthenticated → 401 (app error handler)
    try:
        scope = reports.resolve_scope(db, user, node)
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    resume = after
    if last_event_id is not None and last_event_id.strip().isdigit():
        resume = int(last_event_id.strip())
    return EventSourceResponse(
        _live_events(request, settings.database, scope, resume, secret, clock),
        ping=PING_S,
        send_timeout=30,
        headers={"Cache-Control": "no-store"},
    )
