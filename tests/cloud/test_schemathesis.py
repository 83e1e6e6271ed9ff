"""Property-based API test: schemathesis generates requests from the app's own OpenAPI spec and every
operation (all routers, not only reports/dashboard) must answer without a server error (5xx).

Runs in-process over ASGI as an admin against a database holding the generated report dataset; the SSE
endpoint (/api/live, an endless stream) is excluded. Bounded by hypothesis settings (few examples per
operation, derandomized so a failure reproduces)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from cloud.app import create_app
from cloud.auth import create_user
from cloud.clock import ManualClock
from cloud.db import open_db
from cloud.settings import Settings, db_setting
from tests.cloud.engines import Databases
from tests.cloud.test_reports import NOW, build_dataset

pytestmark = pytest.mark.filterwarnings("ignore:.*httpx.*:DeprecationWarning")

TOKEN: dict[str, str] = {}
# The app factory does no work, so the app (and its spec) can exist at import; the fixture below points
# it at a freshly generated database under tmp_path before any request starts its lifespan (which opens
# and migrates the database). The spec is taken from the app object, not fetched over ASGI: a fetch would
# start the lifespan at import, on the placeholder path, and leave that file in the working directory.
APP = create_app(
    Settings(
        db_path=Path("not-yet-configured.db"), broker_url=None, scheduler_enabled=False, ingest_enabled=False
    ),
    clock=ManualClock(NOW),
)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*")
    # The coverage phase (boundary and schema-violating values for every parameter) stays on; only its
    # probing of undeclared HTTP methods (405s, cheap for FastAPI) is skipped to keep the run short.
    CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
        {"phases": {"coverage": {"unexpected-methods": []}}}
    )
    _loaded = schemathesis.openapi.from_dict(APP.openapi(), config=CONFIG)
    _loaded.app = APP  # cases are called over ASGI
    schema = _loaded.exclude(path="/api/live")


@pytest.fixture(scope="module", autouse=True)
def generated_database(module_dbs: Databases) -> Iterator[None]:
    target = module_dbs.new()
    build_dataset(target, seed=11, n_results=200)
    db = open_db(target)
    try:
        TOKEN["admin"] = create_user(db, "fuzz-admin", "admin", None, NOW)
    finally:
        db.close()
    original = APP.state.settings
    APP.state.settings = original.model_copy(update=db_setting(target))
    try:
        yield
    finally:
        APP.state.settings = original


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN['admin']}"})
    case.validate_response(response, checks=[not_a_server_error])
