"""Notification channels and the audit of what was sent: GET/POST /api/notify/channels,
PATCH/DELETE /api/notify/channels/{id}, GET /api/notify/log.

Does not: send (cloud.notify.sender runs in the background services).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from cloud.api.deps import ClockDep, CurrentUserDep, DbDep
from cloud.api.pagination import PageDep
from cloud.notify import store

router = APIRouter(prefix="/api/notify", tags=["notifications"])
ChannelId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class ChannelIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    kind: Literal["webhook", "wecom", "dingtalk", "sms"]
    url: str = Field(min_length=8, max_length=2000)
    secret: str | None = Field(default=None, max_length=512)
    phones: list[str] = Field(default_factory=list, max_length=50)
    events: list[str] | None = Field(default=None, max_length=20)
    min_severity: Literal["medium", "high"] = "medium"
    node: str | None = Field(default=None, max_length=64, description="unit (default: your own node)")
    personal: bool = Field(default=False, description="a channel for you alone instead of your unit")


class ChannelPatch(BaseModel):
    enabled: bool | None = None
    events: list[str] | None = Field(default=None, max_length=20)


@router.get("/channels")
def channels(db: DbDep, user: CurrentUserDep) -> dict[str, Any]:
    items = store.list_channels(db, user)
    return {"total": len(items), "items": items}


@router.post("/channels", status_code=201)
def add_channel(db: DbDep, user: CurrentUserDep, clock: ClockDep, body: ChannelIn) -> dict[str, Any]:
    return store.add_channel(db, user, clock.now(), **body.model_dump())


@router.patch("/channels/{channel_id}")
def update_channel(
    db: DbDep, user: CurrentUserDep, channel_id: ChannelId, body: ChannelPatch
) -> dict[str, Any]:
    return store.update_channel(db, user, channel_id, enabled=body.enabled, events=body.events)


@router.delete("/channels/{channel_id}", status_code=204)
def delete_channel(db: DbDep, user: CurrentUserDep, clock: ClockDep, channel_id: ChannelId) -> None:
    store.delete_channel(db, user, channel_id, clock.now())


@router.get("/log")
def sent_log(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    status: Literal["pending", "sent", "expired"] | None = None,
) -> dict[str, Any]:
    """What was sent (or is waiting) on your channels, newest first."""
    total, items = store.sent_log(db, user, status=status, limit=page.limit, offset=page.offset)
    return {"total": total, "limit": page.limit, "offset": page.offset, "items": items}
