"""Reports and exports are written in the configured time zone (`cloud.timezone`): the weekly report's
positives, its local week and its generation time; never UTC under a local header."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import Grid, api_client_class, bearer

A1 = "370214101203-01"
MEASURED = datetime(2026, 11, 8, 20, 30, tzinfo=UTC)  # Sunday 20:30 UTC = Monday 04:30 in China


@pytest.mark.parametrize(
    ("zone", "week", "shown"),
    [
        ("Asia/Shanghai", "2026-W46", "2026-11-09 04:30:00"),  # already Monday of the next week in China
        ("Europe/Berlin", "2026-W45", "2026-11-08 21:30:00"),  # still Sunday in Berlin
    ],
)
def test_weekly_report_lists_positives_in_the_grid_time_zone(
    settings: Settings, grid: Grid, db: Database, zone: str, week: str, shown: str
) -> None:
    result = grid.result(A1, verdict="positive", analyte="carbofuran", measured_at=MEASURED.isoformat())
    process_batch(db, [Inbound(f"kj/v1/{A1}/result", json.dumps(result).encode(), MEASURED)], settings)
    cfg = settings.model_copy(update={"timezone": zone})
    with api_client_class()(create_app(cfg, clock=ManualClock(datetime(2026, 11, 20, tzinfo=UTC)))) as api:
        admin = bearer(grid.tokens["admin"])
        doc: Any = api.get("/api/reports/weekly", params={"week": week}, headers=admin).json()
        assert [p["id"] for p in doc["positives"]] == [result["id"]]
        assert doc["timezone"] == zone
        page = api.get("/api/reports/weekly", params={"week": week, "format": "html"}, headers=admin).text
    assert shown in page
    assert "UTC" not in page
    assert f"时间（{zone}）" in page
    assert "克百威" in page  # the analyte by its Chinese name
