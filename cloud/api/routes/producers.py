"""Producers (生产主体): GET /api/producers, GET /api/producers/{ref}, POST /api/producers (one, JSON),
POST /api/producers/import (CSV or .xlsx as the raw request body; a per-row error report).

A change pushes a fresh retained config (with the village's producer list) to the stations of the village.

Does not: validation or storage (cloud.producers), or publishing (cloud.configs).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from cloud import configs, producers
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep
from cloud.api.pagination import PageDep

router = APIRouter(prefix="/api/producers", tags=["producers"])


class ProducerIn(BaseModel):
    kind: str = Field(description="企业 | 合作社 | 家庭农场 | 种养大户 | 个人")
    name: str = Field(max_length=128)
    code: str = Field(max_length=32, description="统一社会信用代码, or ID number for 个人")
    village: str = Field(max_length=32, description="village grid code")
    contact: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=32)
    products: list[str] = Field(default_factory=list, max_length=100)
    plots: list[str] = Field(default_factory=list, max_length=100)


class RowErrorOut(BaseModel):
    row: int
    error: str


class ImportOut(BaseModel):
    created: int
    updated: int
    errors: list[RowErrorOut]
    stations_pushed: list[str]


def _publish(
    request: Request, db: DbDep, village_ids: tuple[int, ...], actor: str, clock: ClockDep
) -> list[str]:
    now = clock.now()
    stations = configs.push_producers(db, village_ids, actor, now)
    services = getattr(request.app.state, "services", None)
    publisher = None if services is None else services.publisher
    if publisher is not None and stations:
        configs.publish_pending(db, publisher, now)
    return stations


@router.get("")
def list_producers(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    village: Annotated[str | None, Query(max_length=32, description="village grid code")] = None,
    q: Annotated[str | None, Query(max_length=64, description="name or code contains")] = None,
) -> dict[str, Any]:
    total, items = producers.list_producers(
        db, user, village=village, q=q, limit=page.limit, offset=page.offset
    )
    return {"total": total, "limit": page.limit, "offset": page.offset, "items": items}


@router.get("/{ref}")
def get_producer(db: DbDep, user: CurrentUserDep, ref: str) -> dict[str, Any]:
    return producers.get_producer(db, user, ref)


@router.post("", status_code=201)
def create(
    request: Request, db: DbDep, user: CurrentUserDep, clock: ClockDep, body: ProducerIn
) -> dict[str, Any]:
    """Create or update (by code) one producer. 422 for a malformed code, 404 for a village outside your scope."""
    item = producers.ProducerIn(
        **{**body.model_dump(), "products": tuple(body.products), "plots": tuple(body.plots)}
    )
    pid, village_id, _ = producers.upsert(db, user, item, clock.now())
    _publish(request, db, (village_id,), user.name, clock)
    return producers.get_producer(db, user, producers.ref_of(pid))


@router.post("/import")
async def import_file(
    request: Request,
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    filename: Annotated[
        str, Query(max_length=256, description="name of the uploaded file (.csv or .xlsx)")
    ] = "producers.csv",
) -> ImportOut:
    """Import producers from a CSV or .xlsx request body: valid rows are stored, each bad row is reported."""
    data = await request.body()
    rows = producers.parse_table(data, filename)
    report = producers.import_rows(db, user, rows, clock.now())
    stations = _publish(request, db, report.villages, user.name, clock)
    return ImportOut(
        created=report.created,
        updated=report.updated,
        errors=[RowErrorOut(row=e.row, error=e.error) for e in report.errors],
        stations_pushed=stations,
    )
