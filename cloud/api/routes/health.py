"""Liveness and identity: GET /api/health (no auth), GET /api/me."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from cloud.api.deps import ClockDep, CurrentUserDep, DbDep

router = APIRouter(prefix="/api", tags=["health"])


class Health(BaseModel):
    status: str
    now: str
    results: int


class Me(BaseModel):
    name: str
    role: str
    node_code: str | None


@router.get("/health")
def health(db: DbDep, clock: ClockDep) -> Health:
    row = db.execute("SELECT COUNT(*) FROM results").fetchone()
    return Health(status="ok", now=clock.now().isoformat(), results=int(row[0]))


@router.get("/me")
def me(user: CurrentUserDep) -> Me:
    return Me(name=user.name, role=user.role, node_code=user.node_code)
