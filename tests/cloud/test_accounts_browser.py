"""Must-show of accounts and the Chinese UI, in headless Chromium at 1280 px and at 390 px (a phone):
a town officer and a station technician each log in with their password, see only their own area, and handle
a case end to end between them (the town assigns 交办 → the station records feedback 反馈 → the town closes
办结). Screenshots are taken along the way and shown to draw Chinese glyphs (tests/cloud/tofu.py); every
visible text node of the Chinese UI is checked for untranslated text (an I18N key, an analyte code, an
English word). Also: a wrong password ×5 locks the account, shown in Chinese."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from cloud import accounts
from cloud.accounts import Policy
from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.db import open_db
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from kuaijian_schema.labels import ANALYTES
from tests.cloud.factories import T0, build_grid
from tests.cloud.test_dashboard import running_app
from tests.cloud.test_dashboard_browser import browser, page_wait, pytestmark  # noqa: F401 - fixture and marks
from tests.cloud.tofu import assert_draws_chinese

TOWN_A_STATION = "370214101203-01"
TOWN_B_STATION = "370214102001-01"
PEOPLE = {  # name: (role, node, password)
    "zhangwei": ("town", "370214101", "zhen-mima-101"),
    "lina": ("station", TOWN_A_STATION, "zhan-mima-203"),
}
# data, not UI wording: user names, product names of the factory, the letters of the metabolite codes
ALLOWED_WORDS = {"zhangwei", "lina", "English", "CSV", "Excel"}

_VISIBLE_TEXT = """
const out = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const text = n.textContent.trim();
  const host = n.parentElement;
  if (!text || !host || host.closest('script,style,svg title')) continue;
  const box = host.getBoundingClientRect();
  const style = getComputedStyle(host);
  if (box.width === 0 || box.height === 0 || style.visibility === 'hidden' || style.display === 'none') continue;
  if (!host.offsetParent && style.position !== 'fixed') continue;
  out.push(text);
}
return out;
"""


def untranslated(driver: webdriver.Chrome) -> list[str]:
    """Visible text nodes of the Chinese UI that hold an I18N key, a wire code or an English word."""
    keys: set[str] = set(driver.execute_script("return Object.keys(window.kuaijianI18n.zh)"))
    codes = {c for c in ANALYTES if c.isascii() and len(c) > 4}
    bad = []
    for text in driver.execute_script(_VISIBLE_TEXT):
        words = re.findall(r"[A-Za-z][A-Za-z_.-]*[A-Za-z]", text)
        if text in keys or re.fullmatch(r"[a-z]+(?:_[a-z0-9]+)+", text):
            bad.append(text)
        elif any(code in text for code in codes):
            bad.append(text)
        elif any(len(w) >= 4 and w not in ALLOWED_WORDS for w in words):
            bad.append(text)
    return bad


def _text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


@pytest.fixture
def cloud(tmp_path: Path) -> Any:
    settings = Settings(db_path=tmp_path / "cloud.db", broker_url=None, scheduler_enabled=False)
    db = open_db(settings.db_path)
    try:
        grid = build_grid(db)
        policy = Policy.from_settings(settings)
        for name, (role, node, password) in PEOPLE.items():
            accounts.add_user(db, None, name, role, node, password, T0, policy)
        # a positive enzyme result in each town: each opens a case at its station
        batch = [
            Inbound(
                f"kj/v1/{station}/result",
                json.dumps(
                    grid.result(
                        station,
                        verdict="positive",
                        method="enzyme",
                        analyte="cholinesterase-inhibitors",
                        values={"inhibition_pct": 71.5, "delta_a_sample": 0.05, "delta_a_control": 0.18},
                        qc=["below_calibration"],
                    )
                ).encode(),
                T0,
            )
            for station in (TOWN_A_STATION, TOWN_B_STATION)
        ]
        process_batch(db, batch, settings)
        cases = dict(db.execute("SELECT station, id FROM cases").fetchall())
    finally:
        db.close()
    app = create_app(settings, clock=ManualClock(T0 + timedelta(hours=1)))
    with running_app(app) as base:
        yield base, cases


def _login(driver: webdriver.Chrome, wait: WebDriverWait, base: str, name: str) -> None:  # type: ignore[type-arg]
    driver.get(f"{base}/dashboard/")
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.ID, "login-user").send_keys(name)
    driver.find_element(By.ID, "login-password").send_keys(PEOPLE[name][2])
    driver.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: d.find_element(By.ID, "main").is_displayed())
    wait.until(lambda d: _text(d, "#who") == name)


def _logout(driver: webdriver.Chrome, wait: WebDriverWait) -> None:  # type: ignore[type-arg]
    driver.find_element(By.ID, "logout").click()
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    assert driver.execute_script("return localStorage.getItem('kj.token')") is None


def _open_case(driver: webdriver.Chrome, wait: WebDriverWait, case_id: int) -> None:  # type: ignore[type-arg]
    row = f'#cases-table tr[data-case="{case_id}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    driver.find_element(By.CSS_SELECTOR, row).click()
    wait.until(lambda d: d.find_element(By.ID, "case-panel").is_displayed())
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#case-actions li"))


def _act(driver: webdriver.Chrome, wait: WebDriverWait, action: str, **fields: str) -> None:  # type: ignore[type-arg]
    Select(driver.find_element(By.ID, "case-action")).select_by_value(action)
    for field_id, value in fields.items():
        Select(driver.find_element(By.ID, field_id)).select_by_value(value)
    before = len(driver.find_elements(By.CSS_SELECTOR, "#case-actions li"))
    driver.find_element(By.ID, "case-submit").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#case-actions li")) > before)


def _check_page(driver: webdriver.Chrome, shot: Path) -> None:
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways"
    )
    bad = untranslated(driver)
    assert not bad, f"untranslated text in the Chinese UI: {bad}"
    driver.save_screenshot(str(shot))
    assert_draws_chinese(driver, driver.find_element(By.CSS_SELECTOR, "h2[data-i18n=cases_title]"), "待处置")


@pytest.mark.parametrize("width", [1280, 390])
def test_town_officer_and_station_technician_handle_a_case_in_chinese(
    browser: webdriver.Chrome,  # noqa: F811
    cloud: Any,
    width: int,
    tmp_path: Path,
) -> None:
    base, cases = cloud
    browser.set_window_size(width, 900 if width > 500 else 844)
    wait = page_wait(browser)
    mine, other = cases[TOWN_A_STATION], cases[TOWN_B_STATION]

    # the town officer: own town only — its villages in the drill-down, its case, not the other town's
    _login(browser, wait, base, "zhangwei")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid-table tr[data-node]"))
    nodes = {
        e.get_attribute("data-node")
        for e in browser.find_elements(By.CSS_SELECTOR, "#grid-table tr[data-node]")
    }
    assert nodes
    assert all(str(n).startswith("370214101") for n in nodes)
    _open_case(browser, wait, mine)
    assert not browser.find_elements(By.CSS_SELECTOR, f'#cases-table tr[data-case="{other}"]')
    assert "有机磷和氨基甲酸酯类农药" in _text(browser, "#case-summary")
    assert "低于标定范围" in _text(browser, "#case-lines")  # the QC flag by its Chinese name
    # opened at T0 (UTC) and shown in China time (+8 h), whatever the browser's zone
    local_open = (T0 + timedelta(hours=8)).strftime("%H:%M")
    row_text = _text(browser, f'#cases-table tr[data-case="{mine}"]')
    assert local_open in row_text, (local_open, row_text)
    _act(browser, wait, "assign", **{"case-assignee": "lina"})
    _check_page(browser, tmp_path / f"town_{width}.png")
    _logout(browser, wait)

    # the station technician: its station only; records the feedback
    _login(browser, wait, base, "lina")
    _open_case(browser, wait, mine)
    assert not browser.find_elements(By.CSS_SELECTOR, f'#cases-table tr[data-case="{other}"]')
    tiles = {
        e.get_attribute("data-station") for e in browser.find_elements(By.CSS_SELECTOR, "#station-map .tile")
    }
    assert tiles == {TOWN_A_STATION}
    _act(browser, wait, "feedback", **{"case-feedback": "product_destroyed"})
    # the station that reported the case cannot close it: the refusal is shown in Chinese, from its code
    Select(browser.find_element(By.ID, "case-action")).select_by_value("close")
    browser.find_element(By.ID, "case-submit").click()
    wait.until(lambda d: "上报的一级不能办结本案" in _text(d, "#case-error"))
    _check_page(browser, tmp_path / f"station_{width}.png")
    _logout(browser, wait)

    # back to the town: close
    _login(browser, wait, base, "zhangwei")
    _open_case(browser, wait, mine)
    _act(browser, wait, "close")
    actions = [
        e.get_attribute("data-action") for e in browser.find_elements(By.CSS_SELECTOR, "#case-actions li")
    ]
    assert actions == ["report", "assign", "feedback", "close"]
    timeline = _text(browser, "#case-actions")
    assert "lina" in timeline
    assert "产品已销毁" in timeline
    _check_page(browser, tmp_path / f"town_closed_{width}.png")
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    # the refused close (403) is logged by Chromium as a failed request; nothing else may be
    assert all("403" in str(e.get("message")) for e in severe), severe


def test_wrong_password_five_times_locks_and_says_so_in_chinese(
    browser: webdriver.Chrome,  # noqa: F811
    cloud: Any,
) -> None:
    base, _ = cloud
    wait = page_wait(browser)
    browser.get(f"{base}/dashboard/")
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    for attempt in range(5):
        browser.find_element(By.ID, "login-user").clear()
        browser.find_element(By.ID, "login-user").send_keys("lina")
        browser.find_element(By.ID, "login-password").send_keys(f"wrong-{attempt}")
        browser.find_element(By.ID, "login-submit").click()
        expected = "账号已暂时锁定" if attempt == 4 else "用户名或密码错误"
        wait.until(lambda d, e=expected: e in _text(d, "#login-error"))
        browser.execute_script("document.getElementById('login-error').textContent = ''")
    # now even the right password is refused
    browser.find_element(By.ID, "login-password").send_keys(PEOPLE["lina"][2])
    browser.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: "账号已暂时锁定" in _text(d, "#login-error"))
    assert not browser.find_element(By.ID, "main").is_displayed()
    assert not untranslated(browser)
