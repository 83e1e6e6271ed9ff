"""Issue 12 end to end, on real components: Mosquitto, the cloud (uvicorn, MQTT ingest), a station gateway
with its local registration page, a simulated colloidal-gold reader on a pty, and headless Chromium.

A county's producer list reaches the station over the retained config topic. The broker then goes down;
the technician registers two samples on the gateway's page (Chromium) and the gold reader measures them —
one positive, one negative — all kept in the gateway's outbox. When the broker is back everything arrives
once: the positive holds its batch and opens ONE case naming the producer (checked in the dashboard); the
negative batch gets a certificate whose QR code, decoded from the rendered image by an independent reader
(zxing-cpp), opens a verification page that says the batch may go to market."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import zxingcpp
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from cloud.app import create_app
from cloud.db import open_db
from cloud.settings import Settings
from firmware_sim.gold_serial import GoldSimulator
from kuaijian_schema.kits import DEMO_KITS
from tests.cloud.factories import bearer, build_grid
from tests.cloud.test_dashboard import running_app
from tests.cloud.test_dashboard_browser import browser, pytestmark
from tests.cloud.test_producers import CSV_TEXT
from tests.gateway.conftest import RunningService, write_station
from tests.helpers import Mosquitto, wait_for

__all__ = ["browser", "pytestmark"]  # the Chromium fixture and marks of the dashboard tests

A1 = "370214101203-01"
COOP = "青岛南万蔬菜专业合作社"
PERSON = "李桂兰"

# Draws an image (same origin) on a canvas and returns its grey pixels; runs via WebDriver, not as page script.
_RASTERISE = """
const [url, size, done] = arguments;
const img = new Image();
img.onload = () => {
  const c = document.createElement('canvas'); c.width = size; c.height = size;
  const g = c.getContext('2d'); g.fillStyle = '#fff'; g.fillRect(0, 0, size, size);
  g.drawImage(img, 0, 0, size, size);
  const px = g.getImageData(0, 0, size, size).data; const grey = [];
  for (let i = 0; i < px.length; i += 4) grey.push(px[i]);
  done(grey);
};
img.onerror = () => done(null);
img.src = url;
"""


@pytest.fixture
def gold() -> Iterator[GoldSimulator]:
    sim = GoldSimulator(serial="GR-E2E1", seed=11)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def _register(driver: webdriver.Chrome, wait: WebDriverWait, base: str, form: dict[str, str]) -> str:  # type: ignore[type-arg]
    """Fill the station page's form as a technician would; returns the code shown on the label."""
    driver.get(f"{base}/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "select[name=producer] option"))
    Select(driver.find_element(By.NAME, "producer")).select_by_value(form.pop("producer"))
    for name, value in form.items():
        box = driver.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: d.find_elements(By.ID, "code"))
    assert "待上传" in driver.find_element(By.TAG_NAME, "body").text  # queued: the broker is down
    return str(driver.find_element(By.ID, "code").text)


@pytest.mark.timeout(300)
def test_offline_registration_positive_holds_batch_negative_gets_verifiable_certificate(
    browser: webdriver.Chrome, mosquitto: Mosquitto, gold: GoldSimulator, tmp_path: Path
) -> None:
    settings = Settings(
        db_path=tmp_path / "cloud.db",
        broker_url=mosquitto.url,
        scheduler_enabled=False,
        ingest_batch_wait_s=0.01,
    )
    db = open_db(settings.db_path)
    try:
        grid = build_grid(db)
    finally:
        db.close()
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    kit = DEMO_KITS["imidacloprid-v1"]
    assert kit.lines[0].calibration is not None
    with running_app(create_app(settings)) as cloud, httpx.Client(base_url=cloud, timeout=10) as http:
        town = bearer(grid.tokens["town_a"])
        imported = http.post(
            "/api/producers/import", params={"filename": "p.csv"}, content=CSV_TEXT.encode(), headers=town
        )
        assert imported.status_code == 200, imported.text
        assert A1 in imported.json()["stations_pushed"]

        station_dir = tmp_path / "station"
        station_dir.mkdir()
        cfg = write_station(
            station_dir,
            mosquitto.port,
            [{"name": "gold-1", "driver": "gold-serial", "port": gold.link_path}],
            acquisition={"poll_interval_s": 0.05, "include_raw": True},
            web={"enabled": True, "host": "127.0.0.1", "port": 0},
            station=A1,
            key=grid.key(A1).hex(),
        )
        with RunningService(cfg) as gw:
            desk, outbox, web = gw.samples, gw.outbox, gw.web
            assert desk is not None
            assert outbox is not None
            assert web is not None
            wait_for(
                lambda: {p.name for p in desk.producers()} == {COOP, PERSON},
                30,
                "the village's producer list did not reach the station on the retained config topic",
            )
            mosquitto.stop()  # the station is offline from here on

            page = f"http://127.0.0.1:{web.port}"
            ref = {p.name: p.ref for p in desk.producers()}
            held_code = _register(browser, wait, page, {
                "producer": ref[COOP],
                "product": "韭菜", "batch": "韭菜-东片1号-1201", "plot": "东片1号", "quantity_kg": "500",
                "sampler": "张三",
            })  # fmt: skip
            ok_code = _register(browser, wait, page, {
                "producer": ref[PERSON],
                "product": "草莓", "batch": "草莓-大棚3号-1201", "quantity_kg": "80", "sampler": "张三",
            })  # fmt: skip
            gold.measure(kit.name, 1, held_code, "韭菜", kit.lines[0].calibration.c * 6)
            gold.measure(kit.name, 2, ok_code, "草莓", 0.0)
            wait_for(
                lambda: outbox.stats().enqueued_total >= 4,
                30,
                "two registrations and two measurements should be queued in the outbox",
            )
            assert outbox.stats().depth == 4  # nothing left the station while the broker was down
            assert http.get("/api/samples", headers=town).json()["total"] == 0

            mosquitto.start()  # back on the same port: the gateway delivers, the cloud acks
            wait_for(
                lambda: outbox.stats().depth == 0, 90, "the outbox did not drain after the broker came back"
            )

            def decided() -> dict[str, Any]:
                items = http.get("/api/samples", headers=town).json()["items"]
                return {i["code"]: i for i in items if i["status"] != "pending"}

            samples = wait_for(
                lambda: len(decided()) == 2 and decided(), 30, "both batches should be decided"
            )

    # arrived once: one registration and one result per sample, one case for the positive sample
    db = open_db(settings.db_path)
    try:
        for code in (held_code, ok_code):
            assert db.execute("SELECT COUNT(*) FROM samples WHERE code = ?", [code]).fetchone()[0] == 1
            assert db.execute("SELECT COUNT(*) FROM results WHERE sample_id = ?", [code]).fetchone()[0] == 1
        cases = db.execute(
            "SELECT c.id FROM cases c JOIN results r ON r.id = c.result_id WHERE r.sample_id = ?", [held_code]
        ).fetchall()
        assert len(cases) == 1
        assert db.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 1
        verdicts = dict(db.execute("SELECT sample_id, verdict FROM results").fetchall())
    finally:
        db.close()
    assert verdicts == {held_code: "positive", ok_code: "negative"}
    assert samples[held_code]["status"] == "held"
    assert samples[held_code]["producer_name"] == COOP
    assert samples[held_code]["certificate"] is None
    assert samples[ok_code]["status"] == "released"
    number = samples[ok_code]["certificate"]
    assert number

    # the dashboard (restarted over the same database, no broker needed) shows the case naming the producer,
    # and the certificate's QR code leads a buyer's phone to a page that verifies
    offline = Settings(db_path=settings.db_path, broker_url=None, scheduler_enabled=False)
    with running_app(create_app(offline)) as cloud:
        browser.get(f"{cloud}/dashboard/#token={grid.tokens['town_a']}")
        row = f'#cases-table tr[data-case="{cases[0][0]}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        browser.find_element(By.CSS_SELECTOR, row).click()
        wait.until(lambda d: COOP in d.find_element(By.ID, "case-sample").text)
        assert held_code in browser.find_element(By.ID, "case-sample").text
        assert browser.find_elements(By.CSS_SELECTOR, "#case-signals polyline")  # the strip's raw profile

        size = 400
        grey = browser.execute_async_script(_RASTERISE, f"{cloud}/verify/{number}/qr.svg", size)
        assert grey is not None, "the QR image did not load"
        image = np.array(grey, dtype=np.uint8).reshape(size, size)
        found = zxingcpp.read_barcodes(image)
        assert [b.format for b in found] == [zxingcpp.BarcodeFormat.QRCode]
        url = found[0].text
        assert url == f"{cloud}/verify/{number}"
        browser.get(url)
        wait.until(lambda d: d.find_elements(By.ID, "state"))
        assert "核验通过" in browser.find_element(By.ID, "state").text
        assert PERSON in browser.find_element(By.ID, "producer").text
        assert browser.find_element(By.ID, "product").text == "草莓"
        public = json.loads(httpx.get(f"{cloud}/verify/{number}.json", timeout=10).text)
        assert public["valid"] is True
        assert "13800000012" not in json.dumps(public, ensure_ascii=False)  # no phone number for buyers
