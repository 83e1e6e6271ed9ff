"""The dashboard's Chinese renders with real glyphs in headless Chromium (the bootstrap installs a CJK
font), shown by pixels: see tests/cloud/tofu.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.settings import Settings
from tests.cloud.factories import T0
from tests.cloud.test_dashboard import running_app
from tests.cloud.test_dashboard_browser import browser, pytestmark  # noqa: F401 - fixture and marks
from tests.cloud.tofu import assert_draws_chinese


def test_login_page_draws_chinese_glyphs(browser: webdriver.Chrome, tmp_path: Path) -> None:  # noqa: F811
    settings = Settings(db_path=tmp_path / "cloud.db", broker_url=None, scheduler_enabled=False)
    app = create_app(settings, clock=ManualClock(T0 + timedelta(hours=1)))
    with running_app(app) as base:
        browser.get(f"{base}/dashboard/")
        heading = browser.find_element(By.CSS_SELECTOR, "#login h2")
        assert heading.text == "登录"
        assert_draws_chinese(browser, heading, "快速检测")
        assert_draws_chinese(browser, browser.find_element(By.CSS_SELECTOR, "header h1 span"), "农产品")
        browser.save_screenshot(str(tmp_path / "login_zh.png"))
