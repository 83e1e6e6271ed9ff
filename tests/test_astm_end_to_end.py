"""The ASTM family end to end on real components: a simulated gold reader with ASTM E1381/E1394 output on
a pty → the station gateway (driver "astm-gold", found through the registry) → Mosquitto → the cloud
(uvicorn, MQTT ingest) → the results it stores, with the verdicts the signal model's truth implies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloud.app import create_app
from cloud.db import open_db
from cloud.settings import Settings
from firmware_sim.astm_gold import AstmGoldSimulator
from kuaijian_schema.kits import DEMO_KITS
from tests.cloud.factories import build_grid
from tests.cloud.test_dashboard import running_app
from tests.gateway.conftest import RunningService, write_station
from tests.helpers import Mosquitto, wait_for

A1 = "370214101203-01"


@pytest.fixture
def astm() -> Iterator[AstmGoldSimulator]:
    sim = AstmGoldSimulator(serial="GA-E2E1", seed=5)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
    assert not sim.errors, sim.errors


@pytest.mark.timeout(180)
def test_astm_reader_results_reach_the_cloud(
    mosquitto: Mosquitto, astm: AstmGoldSimulator, tmp_path: Path
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
    kit = DEMO_KITS["imidacloprid-v1"]
    cal = kit.lines[0].calibration
    assert cal is not None
    astm.measure(kit.name, 1, "A-NEG", "韭菜", 0.0, operator="张三")
    astm.measure(kit.name, 2, "A-POS", "豇豆", cal.c * 6, operator="张三")
    station_dir = tmp_path / "station"
    station_dir.mkdir()
    timeouts = {"response_s": 1.0, "retries": 3, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2}
    cfg = write_station(
        station_dir,
        mosquitto.port,
        [{"name": "astm-1", "driver": "astm-gold", "port": astm.link_path, "timeouts": timeouts}],
        station=A1,
        key=grid.key(A1).hex(),
    )
    with running_app(create_app(settings)) as cloud, httpx.Client(base_url=cloud, timeout=10) as http:
        with RunningService(cfg) as gw:
            outbox = gw.outbox
            assert outbox is not None
            wait_for(lambda: outbox.stats().acked_total >= 2, 60, "the two ASTM results were not acked")
            astm.measure(kit.name, 3, "A-NEG-2", "芹菜", 0.0)  # a record measured while the gateway runs
            wait_for(lambda: outbox.stats().acked_total >= 3, 60, "the third ASTM result was not acked")
        assert http.get("/api/health").status_code == 200
    db = open_db(settings.db_path)
    try:
        rows = db.execute(
            "SELECT sample_id, product, verdict, instrument_driver, instrument_serial, instrument_model, operator "
            "FROM results WHERE station = ? ORDER BY seq",
            [A1],
        ).fetchall()
    finally:
        db.close()
    assert rows == [
        ("A-NEG", "韭菜", "negative", "astm-gold", "GA-E2E1", "KJ-G8A", "张三"),
        ("A-POS", "豇豆", "positive", "astm-gold", "GA-E2E1", "KJ-G8A", "张三"),
        ("A-NEG-2", "芹菜", "negative", "astm-gold", "GA-E2E1", "KJ-G8A", None),
    ]
