from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.clock import ManualClock
from cloud.db import Database, open_db
from cloud.settings import Settings, db_setting
from tests.cloud.engines import ENGINES, Databases, make_template
from tests.cloud.factories import T0, Grid, api_client_class, build_grid
from tests.postgres import PostgresServer


@pytest.fixture(scope="session")
def pg_template(postgres: PostgresServer) -> str:
    return make_template(postgres)


@pytest.fixture(scope="module", params=ENGINES)
def db_engine(request: pytest.FixtureRequest) -> str:
    """The database engine a module's tests run on: each cloud test runs on SQLite and on PostgreSQL."""
    return str(request.param)


def _databases(request: pytest.FixtureRequest, engine: str, tmp: Path) -> Databases:
    if engine == "sqlite":
        return Databases(engine, tmp)
    server: PostgresServer = request.getfixturevalue("postgres")
    return Databases(engine, tmp, server, request.getfixturevalue("pg_template"))


@pytest.fixture(scope="module")
def module_dbs(
    request: pytest.FixtureRequest, db_engine: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databases]:
    """Fresh databases for module-scoped datasets."""
    dbs = _databases(request, db_engine, tmp_path_factory.mktemp("dbs"))
    try:
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def new_db(request: pytest.FixtureRequest, db_engine: str, tmp_path: Path) -> Iterator[Databases]:
    """Fresh databases for one test (`new_db.new()` → a path or URL)."""
    dbs = _databases(request, db_engine, tmp_path)
    try:
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def settings(new_db: Databases) -> Settings:
    return Settings(
        **db_setting(new_db.new()),
        broker_url=None,
        scheduler_enabled=False,
        ingest_batch_wait_s=0.01,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = open_db(settings.database)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def grid(db: Database) -> Grid:
    return build_grid(db)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def api(settings: Settings, clock: ManualClock, grid: Grid) -> Iterator[Any]:
    """A TestClient (lifespan running, no broker, no scheduler) over the factory grid, ManualClock at T0."""
    from cloud.app import create_app

    with api_client_class()(create_app(settings, clock=clock)) as client:
        yield client
