"""GET /api/results (filters + pagination), GET /api/results/{id}; scoped to the caller's subtree."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from cloud import queries
from cloud.api.deps import CurrentUserDep, DbDep
from cloud.api.models import Page, ResultDetail, ResultOut, Verdict
from cloud.api.pagination import PageDep

router = APIRouter(prefix="/api/results", tags=["results"])

Text = Annotated[str | None, Query(max_length=64)]


@router.get("")
def list_results(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    q: Annotated[
        str | None,
        Query(max_length=64, description="search: sample id, product, producer, station, analyte name"),
    ] = None,
    station: Text = None,
    node: Annotated[str | None, Query(max_length=64, description="grid node code: its whole subtree")] = None,
    analyte: Text = None,
    product: Text = None,
    verdict: Verdict | None = None,
    since: Annotated[AwareDatetime | None, Query(description="measured_at ≥ since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="measured_at < until")] = None,
) -> Page[ResultOut]:
    found = queries.list_results(
        db,
        user,
        q=q,
        station=station,
        node=node,
        analyte=analyte,
        product=product,
        verdict=verdict,
        since=since,
        until=until,
        limit=page.limit,
        offset=page.offset,
    )
    items: list[Any] = found.items
    return Page[ResultOut](total=found.total, limit=page.limit, offset=page.offset, items=items)


@router.get("/{result_id}")
def get_result(db: DbDep, user: CurrentUserDep, result_id: str) -> ResultDetail:
    return ResultDetail.model_validate(queries.get_result(db, user, result_id))
