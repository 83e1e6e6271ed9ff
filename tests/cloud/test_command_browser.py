"""The command view (指挥视图) in headless Chromium at 1280 and 390 px as a county officer: the planted risk
alert in the feed (and acknowledged from it), the offline map with the risky town's stations ringed, the
priority list led by the risky pair, a task set through the form appearing with its progress, and the
assessment ranking — all without horizontal overflow on a phone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from cloud import risk
from cloud.app import create_app
from cloud.auth import create_user
from cloud.clock import ManualClock
from cloud.db import open_db
from cloud.settings import Settings
from tests.cloud.test_dashboard import running_app
from tests.cloud.test_dashboard_browser import browser, page_wait, pytestmark  # noqa: F401 - fixture and marks
from tests.cloud.test_risk import RISE_TOWN, RISE_WEEK, _utc, build_season


@pytest.mark.parametrize("width", [1280, 390])
def test_command_view_as_county_officer(browser: webdriver.Chrome, tmp_path: Path, width: int) -> None:  # noqa: F811
    season = build_season(tmp_path / "cloud.db")
    now = _utc(RISE_WEEK + timedelta(days=6), 4 * 3600)
    db = open_db(season.db_path)
    try:
        for i, (station, _town) in enumerate(sorted(season.stations.items())):
            db.execute(
                "UPDATE grid_nodes SET lat = ?, lon = ? WHERE code = ?",
                [36.2 + (i // 4) * 0.05, 120.3 + (i % 4) * 0.05, station],
            )
        risk.scan(db, now)
        token = create_user(db, "county-officer", "county", "370214", now)
    finally:
        db.close()
    settings = Settings(db_path=season.db_path, broker_url=None, scheduler_enabled=False)
    chrome = browser
    chrome.set_window_size(width, 1600)
    wait = page_wait(chrome)
    with running_app(create_app(settings, clock=ManualClock(now))) as base:
        chrome.get(f"{base}/dashboard/command.html")
        wait.until(lambda d: d.find_element(By.ID, "need-login").is_displayed())
        chrome.execute_script("localStorage.setItem('kj.token', arguments[0])", token)
        chrome.get(f"{base}/dashboard/command.html")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#risk-table tbody tr"))
        rows = chrome.find_elements(By.CSS_SELECTOR, "#risk-table tbody tr")
        rise = [r for r in rows if "阳性率上升" in r.text and "韭菜" in r.text]
        assert rise, [r.text for r in rows]
        # The map: every station drawn; the risky town's four stations ringed in red.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map svg g.station")) == 16)
        ringed = chrome.execute_script(
            "return Array.from(document.querySelectorAll('#map g.station')).filter("
            "g => g.querySelector('circle[stroke=\"#c62828\"]')).map(g => g.getAttribute('data-station'))"
        )
        assert sorted(ringed) == sorted(s for s, t in season.stations.items() if t == RISE_TOWN)
        assert chrome.find_elements(By.CSS_SELECTOR, "#map svg polygon")
        # Where to test next: the planted pair first.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prio-table tbody tr"))
        first = chrome.find_element(By.CSS_SELECTOR, "#prio-table tbody tr").text
        assert "克百威" in first
        assert "韭菜" in first
        # Ranking rows for the four towns.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rank-table tbody tr")) == 4)
        assert "任务完成率" in chrome.find_element(By.ID, "rank-formula").text
        # Set a task through the form.
        chrome.find_element(By.ID, "task-node").send_keys(RISE_TOWN)
        chrome.find_element(By.ID, "task-title").send_keys("韭菜克百威专项")
        target = chrome.find_element(By.ID, "task-target")
        target.clear()
        target.send_keys("30")
        chrome.find_element(By.ID, "task-products").send_keys("韭菜")
        chrome.find_element(By.ID, "task-analytes").send_keys("carbofuran")  # the code the kits use
        chrome.execute_script("document.querySelector('#task-form button').scrollIntoView()")
        chrome.find_element(By.CSS_SELECTOR, "#task-form button").click()
        wait.until(lambda d: "韭菜克百威专项" in d.find_element(By.ID, "task-list").text)
        assert "完成 0 / 30" in chrome.find_element(By.ID, "task-list").text
        # Acknowledge the alert from the feed.
        rise[0].find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: "已签收 county-officer" in d.find_element(By.ID, "risk-table").text)
        # Add a 企业微信 robot channel for the county.
        chrome.find_element(By.ID, "chan-name").send_keys("区监管群")
        chrome.find_element(By.ID, "chan-url").send_keys(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
        )
        chrome.execute_script("document.querySelector('#chan-form button').scrollIntoView()")
        chrome.find_element(By.CSS_SELECTOR, "#chan-form button").click()
        wait.until(lambda d: "区监管群" in d.find_element(By.ID, "chan-table").text)
        assert "企业微信" in chrome.find_element(By.ID, "chan-table").text
        assert chrome.find_element(By.ID, "error").text == ""
        overflow = chrome.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"page wider than the {width} px window by {overflow} px"
        chrome.save_screenshot(str(tmp_path / f"command-{width}.png"))
