"""Config push: POST /api/configs (a station or a node subtree), GET /api/configs (history)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from cloud import configs, queries
from cloud.api.deps import ClockDep, CurrentUserDep, DbDep
from cloud.api.models import ConfigOut, ConfigPushIn, ConfigPushOut, Page
from cloud.api.pagination import PageDep

router = APIRouter(prefix="/api/configs", tags=["configs"])


@router.post("", status_code=201)
def push(
    request: Request, db: DbDep, user: CurrentUserDep, clock: ClockDep, body: ConfigPushIn
) -> ConfigPushOut:
    """Store a new config version for the target's stations and publish it retained on kj/v1/{station}/config.

    Without a reachable broker the config stays pending and the scheduler publishes it later.
    """
    now = clock.now()
    result = configs.push_config(db, user, body.target, body.gold_kits, body.enzyme_profiles, now)
    services = getattr(request.app.state, "services", None)
    publisher = None if services is None else services.publisher
    published = 0
    if publisher is not None:
        published = configs.publish_pending(db, publisher, now)
    return ConfigPushOut(
        version=result.version,
        issued_at=result.issued_at.isoformat(),
        target=result.target,
        stations=list(result.stations),
        published=published,
    )


@router.get("")
def list_configs(
    db: DbDep,
    user: CurrentUserDep,
    page: PageDep,
    station: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[ConfigOut]:
    found = queries.list_configs(db, user, station=station, limit=page.limit, offset=page.offset)
    items: list[Any] = found.items
    return Page[ConfigOut](total=found.total, limit=page.limit, offset=page.offset, items=items)
