"""A persistent ingest session (`ingest_client_id`): results published while the ingest worker is down are
queued by the broker and stored when it comes back, instead of waiting for the gateways' re-sends."""

from __future__ import annotations

import pytest
import sqlite_utils

from cloud.clock import SystemClock
from cloud.ingest import IngestWorker
from cloud.settings import Settings
from kuaijian_schema import Ack
from tests.cloud.factories import Grid, batch_payload
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto, wait_for

A1 = "370214101203-01"


def _worker(settings: Settings) -> IngestWorker:
    worker = IngestWorker(settings, SystemClock())
    worker.start()
    wait_for(worker.link.connected.is_set, 10, "ingest did not connect and subscribe")
    return worker


@pytest.mark.parametrize(
    ("protocol", "group"), [("5", ""), ("5", "kj-ingest"), ("3.1.1", "")], ids=["v5", "v5-shared", "v311"]
)
def test_results_sent_while_ingest_is_down_are_queued_and_stored(
    settings: Settings, grid: Grid, db: sqlite_utils.Database, mosquitto: Mosquitto, protocol: str, group: str
) -> None:
    cfg = settings.model_copy(
        update={
            "broker_url": mosquitto.url,
            "mqtt_protocol": protocol,
            "ingest_shared_group": group,
            "ingest_client_id": "kj-ingest-test-1",
        }
    )
    _worker(cfg).stop()  # the broker now holds the worker's session and subscription
    station = Recorder(mosquitto.port, "gw-a1").start()
    try:
        station.subscribe(f"kj/v1/{A1}/ack")
        results = [grid.result(A1) for _ in range(3)]
        station.publish(f"kj/v1/{A1}/result", batch_payload(results))
        worker = _worker(cfg)  # same client id: the queued message is delivered
        try:
            raw = wait_for(
                lambda: station.received(f"kj/v1/{A1}/ack"), 10, "queued results were not ingested"
            )
        finally:
            worker.stop()
        assert {str(i) for i in Ack.model_validate_json(raw[0]).ids} == {r["id"] for r in results}
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3
    finally:
        station.stop()
