"""Instrument faults and events on the dashboard: an instrument in state `error` (with its reason) and an
instrument's `last_event` (its analyzer's memory found cleared or replaced) arrive in a station's retained
status; the overview's station tile carries them and the page marks the tile and lists the reasons, Chinese
first. Statuses go through the real ingest (`process_batch`) into real SQLite; the page runs in Chromium."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.db import open_db
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, build_grid
from tests.cloud.test_dashboard import running_app
from tests.cloud.test_dashboard_browser import CHROMEDRIVER, CHROMIUM, browser, page_wait  # noqa: F401 - fixture
from tests.cloud.test_reports import api_client

STATION = "370214101203-01"
REASON = "OverflowError: int too big to convert"
EVENT = (
    "仪器记录已清空或更换 (memory cleared or analyzer replaced): record counter went back from 47 to 12; "
    "reading its 12 record(s) from the first (epoch 1)"
)


def _status(at_s: int, *, troubled: bool) -> Inbound:
    instruments: list[dict[str, Any]] = [
        {"name": "gold-1", "serial": "G-0001", "model": "GR-1", "driver": "gold-serial", "state": "ok"},
        {"name": "enzyme-1", "serial": "E-0007", "driver": "enzyme-modbus", "state": "ok"},
        # unavailable (e.g. unplugged) is the tile's ordinary business, not an instrument fault
        {
            "name": "gold-2",
            "driver": "gold-serial",
            "state": "unavailable",
            "last_error": "Timeout: no answer",
        },
    ]
    if troubled:
        instruments[0].update(state="error", last_error=REASON)
        instruments[1].update(last_event=EVENT)
    doc = {
        "station": STATION,
        "state": "online",
        "at": (T0 + timedelta(seconds=at_s)).isoformat(),
        "instruments": instruments,
        "outbox_depth": 0,
    }
    return Inbound(f"kj/v1/{STATION}/status", json.dumps(doc, ensure_ascii=False).encode(), T0)


@pytest.fixture
def cloud(tmp_path: Path) -> tuple[Settings, Grid]:
    settings = Settings(db_path=tmp_path / "cloud.db", broker_url=None, scheduler_enabled=False)
    db = open_db(settings.db_path)
    try:
        grid = build_grid(db)
        outcome = process_batch(db, [_status(0, troubled=True)], settings)
        assert outcome.statuses == 1
    finally:
        db.close()
    return settings, grid


def _tiles(tc: Any, token: str) -> dict[str, Any]:
    resp = tc.get("/api/dashboard/overview", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    return {t["id"]: t for t in resp.json()["stations"]}


def test_overview_tile_carries_instrument_fault_and_event(cloud: tuple[Settings, Grid]) -> None:
    settings, grid = cloud
    with api_client(create_app(settings, clock=ManualClock(T0 + timedelta(minutes=1)))) as tc:
        tiles = _tiles(tc, grid.tokens["county"])
        assert tiles[STATION]["instruments"] == [
            {
                "name": "gold-1",
                "serial": "G-0001",
                "state": "error",
                "last_error": REASON,
                "last_event": None,
            },
            {"name": "enzyme-1", "serial": "E-0007", "state": "ok", "last_error": None, "last_event": EVENT},
        ]
        assert all(t["instruments"] == [] for sid, t in tiles.items() if sid != STATION)
    # the next status without them clears them
    db = open_db(settings.db_path)
    try:
        process_batch(db, [_status(30, troubled=False)], settings)
    finally:
        db.close()
    with api_client(create_app(settings, clock=ManualClock(T0 + timedelta(minutes=1)))) as tc:
        assert _tiles(tc, grid.tokens["county"])[STATION]["instruments"] == []


@pytest.mark.browser
@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs Debian chromium + chromedriver"
)
def test_station_tile_marks_the_fault_and_the_page_lists_reasons(
    browser: webdriver.Chrome,  # noqa: F811 - the fixture
    cloud: tuple[Settings, Grid],
) -> None:
    settings, grid = cloud
    wait = page_wait(browser)
    with running_app(create_app(settings, clock=ManualClock(T0 + timedelta(minutes=1)))) as base:
        browser.get(f"{base}/dashboard/#token={grid.tokens['county']}")
        tile = f'.tile[data-station="{STATION}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{tile} .alert"))
        assert browser.find_element(By.CSS_SELECTOR, f"{tile} .alert").text == "仪器故障"
        assert "fault" in str(browser.find_element(By.CSS_SELECTOR, tile).get_attribute("class")).split()
        assert len(browser.find_elements(By.CSS_SELECTOR, ".tile .alert")) == 1, "only the troubled station"
        fault = f'.inst-alerts li.fault[data-station="{STATION}"][data-instrument="gold-1"]'
        event = f'.inst-alerts li.event[data-station="{STATION}"][data-instrument="enzyme-1"]'
        assert browser.find_element(By.CSS_SELECTOR, ".inst-alerts h3").text == "仪器告警"
        assert browser.find_element(By.CSS_SELECTOR, f"{fault} .kind").text == "仪器故障"
        assert "G-0001" in browser.find_element(By.CSS_SELECTOR, f"{fault} .who").text
        assert browser.find_element(By.CSS_SELECTOR, f"{fault} .why").text == REASON
        assert browser.find_element(By.CSS_SELECTOR, f"{event} .kind").text == "仪器记录已清空或更换"
        assert browser.find_element(By.CSS_SELECTOR, f"{event} .why").text == EVENT
        assert not browser.find_elements(By.CSS_SELECTOR, '.inst-alerts li[data-instrument="gold-2"]')
        browser.save_screenshot(str(Path(settings.db_path).parent / "instrument_alerts_zh.png"))
        # English second
        browser.find_element(By.ID, "lang-toggle").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{tile} .alert").text == "instrument fault")
        assert browser.find_element(By.CSS_SELECTOR, ".inst-alerts h3").text == "Instrument alerts"
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
