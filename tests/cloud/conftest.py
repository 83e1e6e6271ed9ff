from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from cloud.clock import ManualClock
from cloud.db import open_db
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, api_client_class, build_grid


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        db_path=tmp_path / "cloud.db",
        broker_url=None,
        scheduler_enabled=False,
        ingest_batch_wait_s=0.01,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[sqlite_utils.Database]:
    database = open_db(settings.db_path)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def grid(db: sqlite_utils.Database) -> Grid:
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
