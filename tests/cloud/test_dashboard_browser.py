"""The dashboard in headless Chromium: a result published by a gateway appears on the page.

Real pieces end to end: Mosquitto broker, the cloud app under uvicorn with MQTT ingest, a signed result
published on kj/v1/{station}/result with the station's enrolled key, the browser's EventSource feed.
Also checks the zh/en switch (and that the choice is remembered across reloads)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cloud import accounts
from cloud.accounts import Policy
from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.db import open_db
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, build_grid
from tests.cloud.test_dashboard import running_app
from tests.helpers import Mosquitto

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STATION = "370214101203-01"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs Debian chromium + chromedriver"
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1700",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def page_wait(driver: webdriver.Chrome, timeout: float = 20.0) -> WebDriverWait[webdriver.Chrome]:
    """A wait for the live pages: an element the page redrew between finding it and reading it (a list
    refreshed, a row replaced by a push) makes the condition poll again instead of failing the test."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )


def _publish(broker: Mosquitto, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-gateway", protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_published_result_appears_live_and_language_switches(
    browser: webdriver.Chrome, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    settings = Settings(
        db_path=tmp_path / "cloud.db",
        broker_url=mosquitto.url,
        scheduler_enabled=False,
        ingest_batch_wait_s=0.01,
    )
    db = open_db(settings.db_path)
    try:
        grid: Grid = build_grid(db)
        accounts.add_user(db, None, "chen", "admin", None, "mima-chen-1", T0, Policy.from_settings(settings))
    finally:
        db.close()
    app = create_app(settings, clock=ManualClock(T0 + timedelta(hours=1)))
    wait = page_wait(browser)
    with running_app(app) as base:
        browser.get(f"{base}/dashboard/")
        # Chinese by default, login box first
        wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
        assert _text(browser, "#login h2") == "登录"
        browser.find_element(By.ID, "login-user").send_keys("chen")
        browser.find_element(By.ID, "login-password").send_keys("mima-chen-1")
        browser.find_element(By.ID, "login-submit").click()
        wait.until(lambda d: d.find_element(By.ID, "main").is_displayed())
        wait.until(lambda d: "on" in d.find_element(By.ID, "live-state").get_attribute("class").split())
        assert str(browser.execute_script("return localStorage.getItem('kj.token')")).startswith("kjc_")
        assert _text(browser, "#kpi-tests") == "0"

        doc = grid.result(STATION, verdict="positive", analyte="毒死蜱", measured_at=T0.isoformat())
        payload = json.dumps(doc, ensure_ascii=False).encode()
        _publish(mosquitto, f"kj/v1/{STATION}/result", payload)

        item = f'#feed li[data-result-id="{doc["id"]}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, item))
        assert "毒死蜱" in _text(browser, item)
        assert _text(browser, f"{item} .verdict") == "阳性"
        # the figures refresh after the event: one test, one positive, one open case
        wait.until(lambda d: _text(d, "#kpi-tests") == "1" and _text(d, "#kpi-positives") == "1")
        wait.until(lambda d: _text(d, "#kpi-cases") == "1")
        assert browser.find_elements(By.CSS_SELECTOR, "#cases-table tbody tr")
        # drill-down: county → town shows the town's villages
        browser.find_element(By.CSS_SELECTOR, '#grid-table tr[data-node="370214"]').click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#grid-table tr[data-node="370214101"]'))
        browser.find_element(By.CSS_SELECTOR, '#grid-table tr[data-node="370214101"]').click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#grid-table tr[data-node="370214101203"]'))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, item))  # feed reloaded for the town
        assert "棘洪滩街道" in _text(browser, "#crumbs")
        # a gold result turned suspect by the line-shape check (gold/2.0): its QC flag in words and
        # how sure the verdict is (ratio 0.4 noise sds from a decision boundary → low)
        shaped = grid.result(
            STATION,
            verdict="suspect",
            analyte="吡虫啉",
            measured_at=T0.isoformat(),
            qc=["test_shape"],
            values={
                "ratio": 0.52,
                "control_signal": 3.1,
                "test_signal": 1.6,
                "test_snr": 25.3,
                "control_snr": 80.0,
                "ratio_sd": 0.02,
                "margin_sd": 0.4,
            },
            algorithm="gold/2.0",
        )
        _publish(mosquitto, f"kj/v1/{STATION}/result", json.dumps(shaped, ensure_ascii=False).encode())
        shaped_item = f'#feed li[data-result-id="{shaped["id"]}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, shaped_item))
        assert _text(browser, f"{shaped_item} .sure") == "判定把握 低"
        assert _text(browser, f"{shaped_item} .qc") == "检测线形状异常（疑似灰尘/污点），需复检"
        assert not browser.find_elements(By.CSS_SELECTOR, f"{item} .sure")  # no figure: no badge
        browser.save_screenshot(str(tmp_path / "kuaijian_dashboard_zh.png"))

        # zh → en
        assert _text(browser, "h2[data-i18n=live_title]") == "实时检测结果"
        browser.find_element(By.ID, "lang-toggle").click()
        wait.until(lambda d: _text(d, "h2[data-i18n=live_title]") == "Live results")
        assert _text(browser, f"{item} .verdict") == "positive"
        assert _text(browser, f"{shaped_item} .sure") == "certainty low"
        assert _text(browser, f"{shaped_item} .qc") == "test line not line-shaped (dust speck?), retest"
        assert _text(browser, ".kpi-label[data-i18n=kpi_rate]") == "Positive rate"
        assert browser.execute_script("return document.documentElement.lang") == "en"
        browser.save_screenshot(str(tmp_path / "kuaijian_dashboard.png"))
        # remembered across reloads (localStorage), token too
        browser.refresh()
        wait.until(lambda d: d.find_element(By.ID, "main").is_displayed())
        wait.until(lambda d: _text(d, "h2[data-i18n=live_title]") == "Live results")
        browser.find_element(By.ID, "lang-toggle").click()
        wait.until(lambda d: _text(d, "h2[data-i18n=live_title]") == "实时检测结果")
        logs: list[dict[str, Any]] = browser.get_log("browser")
        severe = [entry for entry in logs if entry.get("level") == "SEVERE"]
        assert not severe, severe


@dataclass
class OfflineCloud:
    """The cloud app under uvicorn without a broker, over a database with the test grid and users."""

    base: str
    grid: Grid
    settings: Settings
    wait: WebDriverWait  # type: ignore[type-arg]


@pytest.fixture
def offline_cloud(browser: webdriver.Chrome, tmp_path: Path) -> Iterator[OfflineCloud]:
    settings = Settings(db_path=tmp_path / "cloud.db", broker_url=None, scheduler_enabled=False)
    db = open_db(settings.db_path)
    try:
        grid: Grid = build_grid(db)
    finally:
        db.close()
    app = create_app(settings, clock=ManualClock(T0 + timedelta(hours=1)))
    with running_app(app) as base:
        yield OfflineCloud(base, grid, settings, page_wait(browser))


def test_token_link_logs_in_and_leaves_the_address_bar(
    browser: webdriver.Chrome, offline_cloud: OfflineCloud
) -> None:
    """`kuaijian demo` prints /dashboard/#token=…: one click logs in; the token leaves the URL at once."""
    base, grid, wait = offline_cloud.base, offline_cloud.grid, offline_cloud.wait
    browser.get(f"{base}/dashboard/#token={grid.tokens['county']}")
    wait.until(lambda d: d.find_element(By.ID, "main").is_displayed())
    assert not browser.find_element(By.ID, "login").is_displayed()
    assert browser.current_url == f"{base}/dashboard/"
    assert browser.execute_script("return localStorage.getItem('kj.token')") == grid.tokens["county"]
    wait.until(lambda d: _text(d, "#who") != "")


def _ranked(driver: webdriver.Chrome) -> list[str]:
    """The ranked node codes, read in one script call: the table is re-rendered while the test reads it, so
    element handles found a moment earlier can be stale."""
    codes: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#ranking-table tbody tr[data-node]'))"
        ".map(e => e.getAttribute('data-node'))"
    )
    return codes


def test_rankings_panel_follows_the_drill_down(
    browser: webdriver.Chrome, offline_cloud: OfflineCloud
) -> None:
    """County officers rank their towns (and, inside a town, its villages) on the dashboard."""
    base, grid, wait = offline_cloud.base, offline_cloud.grid, offline_cloud.wait
    browser.get(f"{base}/dashboard/#token={grid.tokens['county']}")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ranking-table tbody tr[data-node]"))
    assert set(_ranked(browser)) == {"370214101", "370214102"}
    assert browser.find_element(By.ID, "rank-level").get_attribute("value") == "town"
    assert "W" in _text(browser, "#rank-period-label")  # an ISO week by default
    # a month instead of a week
    browser.find_element(By.CSS_SELECTOR, '#rank-period option[value="month"]').click()
    wait.until(lambda d: "W" not in _text(d, "#rank-period-label"))
    # drilling into a town ranks its villages
    browser.find_element(By.CSS_SELECTOR, '#grid-table tr[data-node="370214101"]').click()
    wait.until(lambda d: d.find_element(By.ID, "rank-level").get_attribute("value") == "village")
    wait.until(lambda d: (rows := _ranked(d)) and all(r.startswith("370214101") for r in rows))
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


_RECORD_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.effectiveDirective + ' ' + e.blockedURI);
});
"""


def test_dashboard_runs_under_its_csp_without_violations(
    browser: webdriver.Chrome, offline_cloud: OfflineCloud
) -> None:
    """The whole dashboard works under the strict policy (no violation reported), and the policy is really
    enforced: an inline event handler injected into the page does not run."""
    base, grid, wait = offline_cloud.base, offline_cloud.grid, offline_cloud.wait
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _RECORD_CSP})
    browser.get(f"{base}/dashboard/#token={grid.tokens['county']}")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ranking-table tbody tr[data-node]"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-daily svg"))
    wait.until(lambda d: "on" in d.find_element(By.ID, "live-state").get_attribute("class").split())
    assert browser.execute_script("return window.__csp") == []
    # positive control: what an XSS would inject is blocked, and reported
    browser.execute_script(
        "document.body.insertAdjacentHTML('beforeend', '<img src=\"data:,\" onerror=\"window.__pwned=1\">'"
        ' + \'<img src="data:,x" onload="window.__pwned=1">\')'
    )
    wait.until(lambda d: d.execute_script("return window.__csp.length") > 0)
    assert browser.execute_script("return window.__pwned") is None
    assert all(v.startswith("script-src") for v in browser.execute_script("return window.__csp"))


def test_case_is_assigned_answered_and_closed_from_the_dashboard(
    browser: webdriver.Chrome, offline_cloud: OfflineCloud
) -> None:
    """A town officer opens a case, assigns it (交办), records feedback (反馈) and closes it (办结)."""
    from selenium.webdriver.support.ui import Select

    from cloud.ingest import Inbound, process_batch

    base, grid, wait = offline_cloud.base, offline_cloud.grid, offline_cloud.wait
    db = open_db(offline_cloud.settings.db_path)
    try:
        doc = grid.result(STATION, verdict="positive", analyte="毒死蜱", measured_at=T0.isoformat())
        received = T0 + timedelta(hours=1)
        process_batch(
            db,
            [Inbound(f"kj/v1/{STATION}/result", json.dumps(doc).encode(), received)],
            offline_cloud.settings,
        )
        case_id = db.execute("SELECT id FROM cases").fetchone()[0]
    finally:
        db.close()
    browser.get(f"{base}/dashboard/#token={grid.tokens['town_a']}")
    row = f'#cases-table tr[data-case="{case_id}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    browser.find_element(By.CSS_SELECTOR, row).click()
    wait.until(lambda d: d.find_element(By.ID, "case-panel").is_displayed())
    assert browser.find_elements(By.CSS_SELECTOR, '#case-actions li[data-action="report"]')

    def act(action: str, **fields: str) -> None:
        Select(browser.find_element(By.ID, "case-action")).select_by_value(action)
        for field_id, value in fields.items():
            box = browser.find_element(By.ID, field_id)
            if box.tag_name == "select":
                Select(box).select_by_value(value)
            else:
                box.send_keys(value)
        before = len(browser.find_elements(By.CSS_SELECTOR, "#case-actions li"))
        browser.find_element(By.ID, "case-submit").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#case-actions li")) > before)

    act("assign", **{"case-assignee": "station_a", "case-note": "today"})  # a user, not free text
    assert "station_a" in _text(browser, '#case-actions li[data-action="assign"]')
    assert "未登记" in _text(browser, "#case-sample")  # the seeded result names no registration
    assert browser.find_elements(By.CSS_SELECTOR, "#case-lines li")  # the measured lines with values
    # closing before any feedback is refused by the API and the reason is shown
    Select(browser.find_element(By.ID, "case-action")).select_by_value("close")
    browser.find_element(By.ID, "case-submit").click()
    wait.until(lambda d: "须先记录反馈" in _text(d, "#case-error"))  # the error's code, translated
    act("feedback", **{"case-feedback": "product_destroyed"})
    act("close")
    wait.until(lambda d: not d.find_element(By.ID, "case-form").is_displayed())
    assert [
        e.get_attribute("data-action") for e in browser.find_elements(By.CSS_SELECTOR, "#case-actions li")
    ] == [
        "report",
        "assign",
        "feedback",
        "close",
    ]
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))  # no longer an open case
