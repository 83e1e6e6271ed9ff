"""Stations: GET /api/stations (online / last seen / backlog), GET /api/stations/{id}, GET /api/seq-gaps."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from cloud import queries
from cloud.api.deps import CurrentUserDep, DbDep
from cloud.api.models import GapOut, Page, StationDetail, StationOut
from cloud.api.pagination import PageDep

router = APIRouter(prefix="/api", tags=["stations"])


@router.get("/stations")
def list_stations(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    node: Annotated[str | None, Query(max_length=64, description="grid node code: its whole subtree")] = None,
    online: bool | None = None,
) -> Page[StationOut]:
    found = queries.list_stations(db, user, node=node, online=online, limit=page.limit, offset=page.offset)
    items: list[Any] = found.items
    return Page[StationOut](total=found.total, limit=page.limit, offset=page.offset, items=items)


@router.get("/stations/{station}")
def get_station(db: DbDep, user: CurrentUserDep, station: str) -> StationDetail:
    return StationDetail.model_validate(queries.get_station(db, user, station))


@router.get("/seq-gaps")
def list_seq_gaps(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    station: Annotated[str | None, Query(max_length=64)] = None,
    open_only: bool = False,
) -> Page[GapOut]:
    found = queries.list_gaps(
        db, user, station=station, open_only=open_only, limit=page.limit, offset=page.offset
    )
    items: list[Any] = found.items
    return Page[GapOut](total=found.total, limit=page.limit, offset=page.offset, items=items)
