"""Sampling tasks: GET /api/tasks, POST /api/tasks, POST /api/tasks/generate (from the risk view),
POST /api/tasks/{id}/cancel. A change re-issues the retained config of the stations concerned, so their
pages show the new task list.

Does not: count progress itself (cloud.tasks does).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from cloud import configs, tasks
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep, SettingsDep
from cloud.auth import User

router = APIRouter(prefix="/api/tasks", tags=["tasks"])


class TaskIn(BaseModel):
    node: str = Field(min_length=1, max_length=64, description="town, village or station code")
    title: str = Field(min_length=1, max_length=200)
    start: date
    due: date
    target: int = Field(ge=1, le=tasks.MAX_TARGET, description="samples to register and measure")
    products: list[str] = Field(default_factory=list, max_length=50)
    analytes: list[str] = Field(default_factory=list, max_length=50)
    note: str | None = Field(default=None, max_length=500)


class GenerateIn(BaseModel):
    start: date
    due: date
    per_place: int = Field(ge=1, le=tasks.MAX_TARGET)
    places: int = Field(default=5, ge=1, le=100)
    cells_per_place: int = Field(default=3, ge=1, le=10)
    days: int = Field(default=90, ge=1, le=3660)


def _push(db: Any, user: User, task: dict[str, Any], now: Any) -> None:
    configs.push_tasks(db, int(task["node_id"]), str(task["node_path"]), user.name, now)


@router.get("")
def list_tasks(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    settings: SettingsDep,
    node: Annotated[str | None, Query(max_length=64)] = None,
    state: Literal["planned", "active", "done", "overdue", "cancelled"] | None = None,
) -> dict[str, Any]:
    """Tasks on your units and those set for you from above, with progress."""
    items = tasks.list_tasks(db, user, clock.now(), settings.tz, node=node, state=state)
    return {"total": len(items), "items": items}


@router.post("", status_code=201)
def create_task(
    db: DbDep, user: CurrentUserDep, clock: ClockDep, settings: SettingsDep, body: TaskIn
) -> dict[str, Any]:
    now = clock.now()
    task = tasks.create_task(db, user, now, **body.model_dump())
    _push(db, user, task, now)
    return tasks.get_task(db, user, int(task["id"]), now, settings.tz)


@router.post("/generate", status_code=201)
def generate(
    db: DbDep, user: CurrentUserDep, clock: ClockDep, settings: SettingsDep, body: GenerateIn
) -> dict[str, Any]:
    """One task per high-risk place from the risk view (see cloud.tasks.generate_from_risk)."""
    now = clock.now()
    created = tasks.generate_from_risk(db, user, now, **body.model_dump())
    for task in created:
        _push(db, user, task, now)
    return {"total": len(created), "items": created}


@router.post("/{task_id}/cancel")
def cancel(
    db: DbDep,
    user: CurrentUserDep,
    clock: ClockDep,
    task_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> dict[str, Any]:
    now = clock.now()
    task = tasks.cancel_task(db, user, task_id, now)
    _push(db, user, task, now)
    return task
