"""Risk early warning: GET /api/risk/alerts (the scoped feed), POST /api/risk/alerts/{id}/ack (签收),
GET /api/risk/priorities (analyte × product × place ranked for next period's tasks), POST /api/risk/scan
(admin/county: scan now instead of waiting for the scheduler).

Does not: compute anything itself (cloud.risk and cloud.risk_feed do).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status

from cloud import risk, risk_feed
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep, SettingsDep
from cloud.api.pagination import PageDep

router = APIRouter(prefix="/api/risk", tags=["risk"])


@router.get("/alerts")
def alerts(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    kind: Literal["positivity_rise", "producer_repeat", "station_invalid"] | None = None,
    severity: Literal["high", "medium"] | None = None,
    since: Annotated[
        datetime | None, Query(description="created at or after (any UTC offset; none means UTC)")
    ] = None,
    unacknowledged: bool = False,
) -> dict[str, Any]:
    """Risk alerts on units in your scope, newest first."""
    total, items = risk_feed.list_alerts(
        db,
        user,
        kind=kind,
        severity=severity,
        since=since,
        unacknowledged=unacknowledged,
        limit=page.limit,
        offset=page.offset,
    )
    return {"total": total, "limit": page.limit, "offset": page.offset, "items": items}


@router.post("/alerts/{alert_id}/ack")
def acknowledge(
    db: DbDep, user: CurrentUserDep, clock: ClockDep, alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> dict[str, Any]:
    """Mark an alert as seen (签收) by you; the first acknowledgement is kept."""
    return risk_feed.acknowledge(db, user, alert_id, clock.now())


@router.get("/priorities")
def priorities(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    days: Annotated[int, Query(ge=1, le=3660, description="planning window, days back from now")] = 90,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> dict[str, Any]:
    """Where to test next: cells ranked by their shrunk positive-rate estimate over the window."""
    items = risk_feed.priorities(
        db, user, clock.now(), days=days, place_level=settings.risk_place_level, limit=limit
    )
    return {"days": days, "items": [asdict(p) for p in items]}


@router.post("/scan")
def scan(db: DbDep, user: CurrentUserDep, clock: ClockDep, settings: SettingsDep) -> dict[str, Any]:
    """Run a risk scan now (admin and county users)."""
    if user.role not in ("admin", "county"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only admin and county users start a risk scan")
    report = risk.scan(db, clock.now(), risk.params_from(settings))
    return {"created": len(report.created), "updated": len(report.updated), "cells": report.cells}


@router.get("/map")
def risk_map(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    days: Annotated[int, Query(ge=1, le=366, description="unacknowledged alerts of the last days")] = 30,
) -> dict[str, Any]:
    """Stations in your scope with their point (from the grid import), online state, backlog and open
    alerts, and the outline of their points — what the offline map draws (no tile server)."""
    return risk_feed.map_points(db, user, clock.now(), days)
