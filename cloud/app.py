"""App factory: `create_app(settings, clock=...)` builds the FastAPI app. Nothing happens at import.

The lifespan migrates the database, then (if configured) starts MQTT ingest and the case scheduler,
and stops them on shutdown. Routers are listed in ROUTER_MODULES; each module exposes `router`.

Does not: define routes (cloud.api.routes.*) or business logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, status
from fastapi.responses import JSONResponse

from cloud import logredact
from cloud.api.headers import SecurityHeaders
from cloud.api.limits import BodySizeLimit
from cloud.clock import Clock, SystemClock
from cloud.db import open_db
from cloud.errors import CloudError, Conflict, Forbidden, Invalid, Locked, NotFound, Unauthenticated
from cloud.live import hub_for
from cloud.metrics import CloudMetrics
from cloud.settings import Settings
from kuaijian_schema.version import software_version

log = logging.getLogger(__name__)

ROUTER_MODULES: tuple[str, ...] = (
    "cloud.api.routes.health",
    "cloud.api.routes.auth",
    "cloud.api.routes.results",
    "cloud.api.routes.stations",
    "cloud.api.routes.grid",
    "cloud.api.routes.cases",
    "cloud.api.routes.configs",
    "cloud.api.routes.producers",
    "cloud.api.routes.samples",
    "cloud.api.routes.admin",
    "cloud.api.routes.reports",
    "cloud.api.routes.dashboard",
    "cloud.api.routes.risk",
    "cloud.api.routes.tasks",
    "cloud.api.routes.notify",
    "cloud.api.routes.metrics",
)


def _routers() -> list[APIRouter]:
    routers: list[APIRouter] = []
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.warning("router module %s not present; skipped", name)
            continue
        routers.append(module.router)
    return routers


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the cloud app. `settings` default to the environment (KJ_CLOUD_*); `clock` to UTC wall time."""
    cfg = settings if settings is not None else Settings()
    clk: Clock = clock if clock is not None else SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from cloud.services import Services  # heavy (paho) import only when serving

        cfg: Settings = app.state.settings  # what the routes read too (a test may repoint it before start)
        db = await asyncio.to_thread(open_db, cfg.database)
        db.close()
        services = Services(cfg, clk, on_commit=hub_for(app).notify, metrics=app.state.metrics)
        app.state.services = services
        await asyncio.to_thread(services.start)
        scheduler_task: asyncio.Task[None] | None = None
        notifier_task: asyncio.Task[None] | None = None
        if cfg.scheduler_enabled:
            scheduler_task = asyncio.create_task(services.run_scheduler())
        if cfg.scheduler_enabled and cfg.notify_enabled:
            notifier_task = asyncio.create_task(services.run_notifier())
        try:
            yield
        finally:
            for task in (scheduler_task, notifier_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            hub_for(app).close()
            await asyncio.to_thread(services.stop)

    app = FastAPI(
        title="kuaijian cloud",
        version=software_version(),
        description="快检 cloud: results, grid, stations, cases, configs, reports",
        lifespan=lifespan,
        # Swagger UI / ReDoc pages load their scripts from a third-party CDN and run inline script: not on
        # the origin that holds users' tokens. The schema stays at /openapi.json for any local viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = cfg
    app.state.clock = clk
    app.state.metrics = CloudMetrics(lambda: (app.state.settings.database, clk.now()))
    for router in _routers():
        app.include_router(router)
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_request_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: the 413 answers get the headers too
    logredact.install()  # the live feed takes ?token=: keep tokens out of the access log
    return app


_STATUS: tuple[tuple[type[CloudError], int], ...] = (
    (NotFound, status.HTTP_404_NOT_FOUND),
    (Forbidden, status.HTTP_403_FORBIDDEN),
    (Invalid, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (Conflict, status.HTTP_409_CONFLICT),
    (Locked, status.HTTP_423_LOCKED),  # before its base class
    (Unauthenticated, status.HTTP_401_UNAUTHORIZED),
)


async def _cloud_error(request: Request, exc: Exception) -> JSONResponse:
    """Translate the domain exceptions (cloud.errors) to HTTP status codes; anything else is a 500.

    The body is `{"detail": message, "code": stable code}`: clients translate the code, not the message."""
    for cls, http_status in _STATUS:
        if isinstance(exc, cls):
            headers = {"WWW-Authenticate": "Bearer"} if http_status == status.HTTP_401_UNAUTHORIZED else None
            code = exc.code if isinstance(exc, CloudError) else "error"
            return JSONResponse({"detail": str(exc), "code": code}, status_code=http_status, headers=headers)
    return JSONResponse(
        {"detail": "internal error", "code": "internal"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )
