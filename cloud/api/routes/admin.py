"""Admin only: GET /api/dead-letters (rejected payloads with their reason)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from cloud import queries
from cloud.api.deps import AdminDep, DbDep
from cloud.api.models import DeadLetterOut, Page
from cloud.api.pagination import PageDep

router = APIRouter(prefix="/api", tags=["admin"])


@router.get("/dead-letters")
def list_dead_letters(
    db: DbDep,
    _admin: AdminDep,
    page: PageDep,
    station: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=200, description="substring of the reason")] = None,
) -> Page[DeadLetterOut]:
    found = queries.list_dead_letters(
        db, station=station, reason=reason, limit=page.limit, offset=page.offset
    )
    items: list[Any] = found.items
    return Page[DeadLetterOut](total=found.total, limit=page.limit, offset=page.offset, items=items)
