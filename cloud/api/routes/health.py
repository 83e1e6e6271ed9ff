"""Liveness and identity: GET /api/health (no auth), GET /api/me.

`/api/health` answers anyone with its status and clock; the result count is added only for a caller with a
valid bearer token, counted in that caller's grid scope (an anonymous prober learns nothing about volumes).

Does not: check the broker or the database beyond one query.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from cloud import queries
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep, OptionalUserDep

router = APIRouter(prefix="/api", tags=["health"])


class Health(BaseModel):
    status: str
    now: str
    results: int | None = None


class Me(BaseModel):
    name: str
    role: str
    node_code: str | None


@router.get("/health", response_model_exclude_none=True)
def health(db: DbDep, clock: ClockDep, user: OptionalUserDep) -> Health:
    if user is None:
        return Health(status="ok", now=clock.now().isoformat())
    return Health(status="ok", now=clock.now().isoformat(), results=queries.count_results(db, user))


@router.get("/me")
def me(user: CurrentUserDep) -> Me:
    return Me(name=user.name, role=user.role, node_code=user.node_code)
