"""The dashboard's producer, sample and case-review views in headless Chromium at phone width (390 px).

Seeded through the real ingest path (signed registrations and results in one batch): a cooperative's
positive sample (with its raw signal) holds its batch and opens a case; an individual's negative sample is
released with a certificate; a keypad sample id with no registration stays visible as 未登记."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from cloud.db import open_db
from cloud.ingest import Inbound, process_batch
from cloud.producers import uscc_check
from tests.cloud.factories import T0
from tests.cloud.test_dashboard_browser import OfflineCloud, _text, browser, offline_cloud, pytestmark
from tests.cloud.test_samples import _producers, _reg

__all__ = ["browser", "offline_cloud", "pytestmark"]  # fixtures and marks shared with the dashboard tests

A1 = "370214101203-01"


def _attrs(driver: webdriver.Chrome, css: str, attr: str) -> list[str | None]:
    """`attr` of every element matching `css`, read in one script (rows re-render while the page refreshes)."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.getAttribute(arguments[1]))"
    )
    return list(driver.execute_script(script, css, attr))


def _raw_profile() -> dict[str, object]:
    x = np.arange(200, dtype="<f4")
    profile = 0.9 - 0.3 * np.exp(-(((x - 60) / 4) ** 2)) - 0.05 * np.exp(-(((x - 140) / 4) ** 2))
    data = np.ascontiguousarray(profile, dtype="<f4")
    return {"dtype": "<f4", "shape": [200], "data": base64.b64encode(zlib.compress(data.tobytes())).decode()}


def _seed(cloud: OfflineCloud) -> tuple[int, str]:
    """Returns (case id, certificate number)."""
    grid = cloud.grid
    db = open_db(cloud.settings.db_path)
    try:
        refs = _producers(db)
        coop, person = refs["青岛南万蔬菜专业合作社"], refs["李桂兰"]
        docs = [
            _reg(grid, A1, "26110301", coop, batch="韭菜-东片1号-1103"),
            grid.result(
                A1,
                sample={"id": "26110301", "product": "韭菜"},
                verdict="positive",
                analyte="腐霉利",
                values={"ratio": 0.31},
                raw=_raw_profile(),
            ),
            _reg(grid, A1, "26110302", person, product="草莓", batch="草莓-大棚3号-1103"),
            grid.result(A1, sample={"id": "26110302", "product": "草莓"}, verdict="negative"),
            grid.result(A1, sample={"id": "KEYPAD-9", "product": "芹菜"}, verdict="negative"),
        ]
        payload = json.dumps({"results": docs}, ensure_ascii=False).encode()
        process_batch(db, [Inbound(f"kj/v1/{A1}/result", payload, T0 + timedelta(minutes=5))], cloud.settings)
        case_id = int(db.execute("SELECT id FROM cases").fetchone()[0])
        number = str(db.execute("SELECT number FROM certificates").fetchone()[0])
    finally:
        db.close()
    return case_id, number


def test_producers_samples_and_case_review_at_phone_width(
    browser: webdriver.Chrome, offline_cloud: OfflineCloud, tmp_path: Path
) -> None:
    case_id, number = _seed(offline_cloud)
    base, grid, wait = offline_cloud.base, offline_cloud.grid, offline_cloud.wait
    browser.set_window_size(390, 844)
    browser.get(f"{base}/dashboard/#token={grid.tokens['town_a']}")

    # samples and batches: the held batch, the released one with its certificate link
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#samples-table tr[data-sample="26110301"]'))
    held = browser.find_element(By.CSS_SELECTOR, '#samples-table tr[data-sample="26110301"]')
    assert held.get_attribute("data-status") == "held"
    assert "暂停上市" in held.text
    assert "青岛南万蔬菜专业合作社" in held.text
    released = browser.find_element(By.CSS_SELECTOR, '#samples-table tr[data-sample="26110302"]')
    assert "可上市" in released.text
    link = released.find_element(By.CSS_SELECTOR, "a.cert")
    assert link.text == number
    assert str(link.get_attribute("href")).endswith(f"/verify/{number}")
    Select(browser.find_element(By.ID, "samples-status")).select_by_value("held")
    wait.until(lambda d: _attrs(d, "#samples-table tbody tr", "data-sample") == ["26110301"])
    Select(browser.find_element(By.ID, "samples-status")).select_by_value("unregistered")
    wait.until(lambda d: "KEYPAD-9" in _text(d, "#samples-table tbody"))
    assert "未登记" in _text(browser, "#samples-table tbody")

    # producers: counts per producer, then one producer's held batches and test history
    coop_row = "#producers-table tr[data-producer] td:first-child"
    wait.until(
        lambda d: "青岛南万蔬菜专业合作社" in [e.text for e in d.find_elements(By.CSS_SELECTOR, coop_row)]
    )
    rows = {
        r.find_element(By.CSS_SELECTOR, "td").text: r
        for r in browser.find_elements(By.CSS_SELECTOR, "#producers-table tr[data-producer]")
    }
    assert set(rows) == {"青岛南万蔬菜专业合作社", "李桂兰"}  # town_a's villages only
    coop = rows["青岛南万蔬菜专业合作社"]
    assert [c.text for c in coop.find_elements(By.CSS_SELECTOR, "td.num")] == ["1", "1"]
    assert "held" in str(coop.get_attribute("class")).split()
    coop.click()
    wait.until(lambda d: d.find_element(By.ID, "producer-panel").is_displayed())
    assert "合作社" in _text(browser, "#producer-title")
    assert browser.find_elements(By.CSS_SELECTOR, '#producer-held li[data-sample="26110301"]')
    assert [
        e.get_attribute("data-sample")
        for e in browser.find_elements(By.CSS_SELECTOR, "#producer-history tbody tr")
    ] == ["26110301"]

    # import a producer list from the page: good rows stored, each bad row reported by number, nothing half-stored
    body = "AB12CD34E"
    good = "93370214" + body + uscc_check("93370214" + body)
    sheet = tmp_path / "producers.csv"
    sheet.write_text(
        "类型,名称,代码,村,联系人,品种\n"
        f"合作社,南万草莓专业合作社,{good},370214101203,王芳,草莓\n"
        "企业,坏代码公司,91370214MA3C5XQ12A,370214101203,,芹菜\n",
        encoding="utf-8",
    )
    browser.find_element(By.ID, "producers-file").send_keys(str(sheet))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#producers-import-errors li[data-row="3"]'))
    assert "新建 1" in _text(browser, "#producers-import-summary")
    assert "统一社会信用代码无效" in _text(browser, '#producers-import-errors li[data-row="3"]')
    wait.until(lambda d: "南万草莓专业合作社" in _text(d, "#producers-table"))
    assert "坏代码公司" not in _text(browser, "#producers-table")

    # case review: sample, producer, batch, measured values, the raw-signal plot; assignee picked from users
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#cases-table tr[data-case="{case_id}"]'))
    browser.find_element(By.CSS_SELECTOR, f'#cases-table tr[data-case="{case_id}"]').click()
    wait.until(lambda d: d.find_element(By.ID, "case-panel").is_displayed())
    sample_line = _text(browser, "#case-sample")
    assert "26110301" in sample_line
    assert "青岛南万蔬菜专业合作社" in sample_line
    assert "韭菜-东片1号-1103" in sample_line
    assert "T/C 比值 0.31" in _text(browser, "#case-lines")  # values by their Chinese names
    points = browser.find_element(By.CSS_SELECTOR, "#case-signals polyline").get_attribute("points")
    assert len(str(points).split()) == 200
    browser.find_element(By.ID, "cases-mine").click()  # 'my cases': nothing is assigned to town_a yet
    wait.until(lambda d: _attrs(d, "#cases-table tbody tr", "data-case") == [])
    browser.find_element(By.ID, "cases-mine").click()
    wait.until(lambda d: _attrs(d, "#cases-table tbody tr", "data-case") == [str(case_id)])
    Select(browser.find_element(By.ID, "case-action")).select_by_value("assign")
    options = [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#case-assignee option")
    ]
    assert options == ["county", "town_a", "village_a", "station_a"]  # users on the case's path, county first
    Select(browser.find_element(By.ID, "case-assignee")).select_by_value("town_a")
    browser.find_element(By.ID, "case-submit").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#case-actions li[data-action="assign"]'))

    # my cases: now the one assigned to me
    browser.find_element(By.ID, "cases-mine").click()
    wait.until(lambda d: _attrs(d, "#cases-table tbody tr", "data-case") == [str(case_id)])

    # 390 px: the page itself never scrolls sideways (wide tables scroll inside their card)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.find_element(By.ID, "lang-toggle").click()
    wait.until(lambda d: _text(d, "h2[data-i18n=producers_title]") == "Producers")
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
