"""The live dashboard: static page at /dashboard/ (and / redirects there), its data endpoint
GET /api/dashboard/overview, the names it shows for codes (GET /api/labels) and the Server-Sent Events feed
GET /api/live.

The overview and the live feed's tail query are cloud.dashboard's; this module holds no SQL. The live feed
tails the `results` table by rowid (so results committed by any ingest process show up) and wakes early when the in-process ingest calls `cloud.live.hub_for(app).notify()`. EventSource cannot
send headers, so /api/live alone also accepts the bearer token as `?token=`. Each event is
`event: result`, `id: <rowid>` (the browser resends it as Last-Event-ID on reconnect, so nothing is
missed), `data: <json>`; a comment heartbeat every `PING_S` seconds keeps proxies from closing the stream.
The token is checked again on every pass: when it expires or is revoked the stream sends `event: auth`
(`data: {"code": ...}`) and ends.

Does not: query the database itself (cloud.dashboard, cloud.reports), or write to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from cloud.api.deps import ClockDep, CurrentUserDep, DbDep, SettingsDep
from cloud.auth import resolve_scope, user_for_token
from cloud.clock import Clock
from cloud.dashboard import Overview, overview, results_after
from cloud.dashboard import cursor as cursor_of
from cloud.db import Database, connect
from cloud.errors import NotFound, Unauthenticated
from cloud.grid import Node
from cloud.live import hub_for
from kuaijian_schema.labels import ANALYTES, QC_FLAGS

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
    scope: Node,
    after: int | None,
    token: str,
    clock: Clock,
) -> AsyncIterator[ServerSentEvent]:
    hub = hub_for(request.app)
    db = await anyio.to_thread.run_sync(connect, db_target)
    try:
        async with hub.subscribe() as sub:
            cursor = after if after is not None else await anyio.to_thread.run_sync(cursor_of, db)
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
        scope = resolve_scope(db, user, node)
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
