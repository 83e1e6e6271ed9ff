"""The dashboard on a 390 px phone as a station technician, in headless Chromium, over the real app:
- the live pane keeps a positive in view while a 12-channel enzyme analyzer pours negatives in (pinned), and
  can show only positives/suspects;
- cases: filters, search and paging (25 cases, 20 per page); results: search by an analyte's Chinese name and
  a result's detail;
- station tiles: an offline station's backlog is 未知 (unknown), with the last one it reported and its age;
- the weekly report opens from the header (fetched with the bearer token, shown from a blob), its positives
  in China time;
and the page never scrolls sideways and shows no untranslated text."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from cloud import accounts
from cloud.accounts import Policy
from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.db import connect, open_db
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, build_grid
from tests.cloud.test_accounts_browser import untranslated
from tests.cloud.test_dashboard import running_app
from tests.cloud.test_dashboard_browser import browser, page_wait, pytestmark  # noqa: F401 - fixture and marks

STATION = "370214101203-01"
USER, PASSWORD = "lina", "zhan-mima-203"
NOW = T0 + timedelta(hours=2)


def _text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _ingest(settings: Settings, items: list[dict[str, Any]], at: Any = T0) -> None:
    db = connect(settings.db_path)
    try:
        process_batch(
            db, [Inbound(f"kj/v1/{STATION}/result", json.dumps({"results": items}).encode(), at)], settings
        )
    finally:
        db.close()


@pytest.fixture
def cloud(tmp_path: Path) -> Any:
    settings = Settings(db_path=tmp_path / "cloud.db", broker_url=None, scheduler_enabled=False)
    db = open_db(settings.db_path)
    try:
        grid = build_grid(db)
        accounts.add_user(db, None, USER, "station", STATION, PASSWORD, T0, Policy.from_settings(settings))
        # the station reported 229 results waiting, then went offline (its last will: no figures)
        db.execute(
            "UPDATE stations SET online = 0, backlog = 229, status_at = ?, last_seen = ? WHERE id = ?",
            [T0.isoformat(), T0.isoformat(), STATION],
        )
    finally:
        db.close()
    # 25 positives, each on its own batch of spinach (菠菜01…) with imidacloprid: 25 cases (an open case
    # gathers the positives of the same station, product and analyte); one carbofuran positive on leeks (韭菜)
    items = [
        grid.result(STATION, verdict="positive", sample={"id": f"P-{i:02d}", "product": f"菠菜{i:02d}"})
        for i in range(25)
    ]
    items.append(
        grid.result(
            STATION, verdict="positive", analyte="carbofuran", sample={"id": "K-01", "product": "韭菜"}
        )
    )
    _ingest(settings, items)
    app = create_app(settings, clock=ManualClock(NOW))
    with running_app(app) as base:
        yield base, settings, grid


def test_phone_lists_live_pane_tiles_and_reports(
    browser: webdriver.Chrome,  # noqa: F811
    cloud: Any,
    tmp_path: Path,
) -> None:
    base, settings, grid = cloud
    grid_: Grid = grid
    browser.set_window_size(390, 844)
    wait = page_wait(browser)
    browser.get(f"{base}/dashboard/")
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    browser.find_element(By.ID, "login-user").send_keys(USER)
    browser.find_element(By.ID, "login-password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: _text(d, "#who") == USER)

    # cases: 26 open, 20 a page; the next page holds the rest; search narrows to the leeks' case
    wait.until(lambda d: "共 26 条" in _text(d, "#cases-range"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cases-table tbody tr[data-case]")) == 20
    browser.find_element(By.ID, "cases-next").click()
    wait.until(lambda d: "第 21–26 条" in _text(d, "#cases-range"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cases-table tbody tr[data-case]")) == 6
    browser.find_element(By.ID, "cases-q").send_keys("韭菜\n")
    wait.until(lambda d: "共 1 条" in _text(d, "#cases-range"))
    assert "克百威" in _text(browser, "#cases-table tbody")
    Select(browser.find_element(By.ID, "cases-status")).select_by_value("closed")
    wait.until(lambda d: "共 0 条" in _text(d, "#cases-range"))

    # results: search by the Chinese name of the analyte, open one for its detail
    browser.find_element(By.ID, "results-q").send_keys("克百威\n")
    wait.until(lambda d: "共 1 条" in _text(d, "#results-range"))
    # (the row may be redrawn between finding and clicking it: the wait finds it again)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#results-table tr[data-result]").click() or True)
    wait.until(lambda d: d.find_element(By.ID, "result-panel").is_displayed())
    detail = _text(browser, "#result-fields")
    assert "克百威" in detail
    assert "阳性" in detail
    assert "K-01" in detail
    browser.find_element(By.ID, "result-close-panel").click()  # (its instrument model is data, in Latin)

    # the station tile: offline, so the backlog now is unknown; the last reported one is shown with its age
    tile = f'#station-map .tile[data-station="{STATION}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, tile))
    assert _text(browser, f"{tile} .backlog") == "未知"
    assert "上次 229 · 2 小时前" in _text(browser, f"{tile} .age")

    # the live pane: a positive, then 36 negatives of a 12-channel enzyme analyzer; the positive stays in view
    positive = grid_.result(STATION, verdict="positive", sample={"id": "LIVE-POS", "product": "芹菜"})
    _ingest(settings, [positive], NOW)
    negatives = [
        grid_.result(
            STATION,
            method="enzyme",
            analyte="cholinesterase-inhibitors",
            channel=ch,
            sample={"id": f"E-{run}-{ch}", "product": "小白菜"},
            values={"inhibition_pct": 3.0, "delta_a_sample": 0.17, "delta_a_control": 0.18},
        )
        for run in range(3)
        for ch in range(1, 13)
    ]
    _ingest(settings, negatives, NOW)
    pinned = f'#feed-pinned li[data-result-id="{positive["id"]}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, pinned))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#feed li[data-verdict="negative"]')) >= 36)
    item = browser.find_element(By.CSS_SELECTOR, pinned)
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "feed-pinned"))
    assert item.is_displayed()
    # the positive is the first line of the pane, above the stream, whatever arrived after it
    assert browser.execute_script(
        "const f = document.getElementById('feed'), p = arguments[0];"
        "return p.getBoundingClientRect().bottom <= f.getBoundingClientRect().top + 1;",
        item,
    )
    browser.find_element(By.ID, "feed-only-pos").click()
    assert all(
        not e.is_displayed()
        for e in browser.find_elements(By.CSS_SELECTOR, '#feed li[data-verdict="negative"]')
    )
    assert browser.find_element(
        By.CSS_SELECTOR, f'#feed li[data-result-id="{positive["id"]}"]'
    ).is_displayed()

    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways at 390 px"
    )
    assert not untranslated(browser), untranslated(browser)
    browser.save_screenshot(str(tmp_path / "phone.png"))

    # the weekly report, from the header: a new tab with the report fetched with the bearer token
    tabs = browser.window_handles
    browser.find_element(By.ID, "reports-weekly").click()
    wait.until(lambda d: len(d.window_handles) == len(tabs) + 1)
    browser.switch_to.window(next(h for h in browser.window_handles if h not in tabs))
    # the tab starts blank and then navigates to the blob: an element may go stale in between
    WebDriverWait(
        browser, 20, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: "快检周报" in d.find_element(By.TAG_NAME, "body").text)
    assert browser.current_url.startswith("blob:")
    assert not _text(browser, "body").count("UTC")
