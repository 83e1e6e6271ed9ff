"""Cases: GET /api/cases, GET /api/cases/{id} (with the audit trail), POST /api/cases/{id}/actions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from cloud import cases, queries
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep, SettingsDep
from cloud.api.models import CaseActionIn, CaseDetail, CaseOut, Page
from cloud.api.pagination import PageDep
from cloud.grid import node_by_id

router = APIRouter(prefix="/api/cases", tags=["cases"])

CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="case id")]


def _detail(db: DbDep, case: dict[str, Any], actions: list[dict[str, Any]]) -> CaseDetail:
    node = node_by_id(db, int(case["node_id"]))
    node_code = None if node is None else node.code
    sample, lines = cases.case_sample(db, case)
    return CaseDetail.model_validate(
        {
            **case,
            "node_code": node_code,
            "actions": actions,
            "sample": sample,
            "results": lines,
            "assignees": cases.assignable(db, case),
        }
    )


@router.get("")
def list_cases(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    page: PageDep,
    status: Literal["open", "assigned", "feedback", "closed"] | None = None,
    node: Annotated[
        str | None, Query(max_length=64, description="grid node code: cases of its stations")
    ] = None,
    station: Annotated[str | None, Query(max_length=64)] = None,
    level: Literal["station", "village", "town", "county"] | None = None,
    overdue: Annotated[bool, Query(description="only unclosed cases past their deadline")] = False,
    mine: Annotated[bool, Query(description="my cases: only those assigned to me")] = False,
    unclosed: Annotated[bool, Query(description="every status but closed")] = False,
    q: Annotated[
        str | None,
        Query(max_length=64, description="search: case number, station, product, assignee, analyte name"),
    ] = None,
) -> Page[CaseOut]:
    now = clock.now()
    found = queries.list_cases(
        db,
        user,
        status=status,
        node=node,
        station=station,
        level=level,
        overdue_at=now if overdue else None,
        assignee=user.name if mine else None,
        unclosed=unclosed,
        q=q,
        limit=page.limit,
        offset=page.offset,
    )
    items: list[Any] = [
        {**c, "overdue": c["status"] != "closed" and datetime.fromisoformat(c["deadline"]) < now}
        for c in found.items
    ]
    return Page[CaseOut](total=found.total, limit=page.limit, offset=page.offset, items=items)


@router.get("/{case_id}")
def get_case(db: DbDep, user: CurrentUserDep, case_id: CaseId) -> CaseDetail:
    case, actions = cases.get_case(db, user, case_id)
    return _detail(db, case, actions)


@router.post("/{case_id}/actions")
def act(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    case_id: CaseId,
    body: CaseActionIn,
) -> CaseDetail:
    """assign (交办, to a user) / remind (催办) / feedback (反馈) / escalate (上报, one level up now) / close (办结,
    by a level above the station, after feedback) / note. 404 outside your scope, 403 above your node."""
    cases.act(
        db,
        user,
        case_id,
        body.action,
        clock.now(),
        note=body.note,
        assignee=body.assignee,
        feedback=body.feedback,
        data=body.data,
        settings=settings,
    )
    case, actions = cases.get_case(db, user, case_id)
    return _detail(db, case, actions)
