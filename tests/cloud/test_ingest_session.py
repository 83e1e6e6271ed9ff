"""The ingest's persistent session: results published while the ingest worker is down are queued by the broker
and stored when it comes back (its client id is stable even without `ingest_client_id`); a session left by a
stopped worker is ended; connection state changes are logged, an unreachable broker without flooding the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cloud.clock import SystemClock
from cloud.db import Database
from cloud.ingest_worker import IngestWorker, MqttLink
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
    settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto, protocol: str, group: str
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


def test_default_client_id_is_stable_across_restarts(
    settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto
) -> None:
    """Issue 9 item 14: without --client-id the ingest still resumes its own session after a restart (its id
    is derived from the configuration), so results sent while it was down are not lost to the broker."""
    cfg = settings.model_copy(update={"broker_url": mosquitto.url})
    first = _worker(cfg)
    client_id = first.link.client_id
    first.stop()
    station = Recorder(mosquitto.port, "gw-a1").start()
    try:
        station.subscribe(f"kj/v1/{A1}/ack")
        results = [grid.result(A1) for _ in range(3)]
        station.publish(f"kj/v1/{A1}/result", batch_payload(results))
        worker = _worker(cfg)
        try:
            assert worker.link.client_id == client_id
            wait_for(lambda: station.received(f"kj/v1/{A1}/ack"), 10, "results sent while down were lost")
        finally:
            worker.stop()
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3
    finally:
        station.stop()


def test_session_left_by_an_earlier_client_id_is_ended(
    settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto
) -> None:
    """Issue 9 item 14: the cloud ran as kj-ingest-1 and now runs without --client-id. The old persistent
    session would stay in the shared group and take a share of the results it can never ack; the new worker
    ends it on start, and every result is acked at once."""
    cfg = settings.model_copy(update={"broker_url": mosquitto.url})
    _worker(cfg.model_copy(update={"ingest_client_id": "kj-ingest-1"})).stop()
    worker = _worker(cfg)
    station = Recorder(mosquitto.port, "gw-a1").start()
    try:
        wait_for(
            lambda: (
                db.execute("SELECT COUNT(*) FROM ingest_sessions WHERE client_id = 'kj-ingest-1'").fetchone()[
                    0
                ]
                == 0
            ),
            10,
            "the old session was not ended",
        )
        station.subscribe(f"kj/v1/{A1}/ack")
        results = [grid.result(A1) for _ in range(20)]
        for r in results:  # one per message: each is routed to a member of the shared group on its own
            station.publish(f"kj/v1/{A1}/result", json.dumps(r).encode())

        def acked() -> set[str]:
            return {
                str(i) for p in station.received(f"kj/v1/{A1}/ack") for i in Ack.model_validate_json(p).ids
            }

        wait_for(lambda: acked() == {r["id"] for r in results}, 10, "results went to the stale session")
    finally:
        station.stop()
        worker.stop()


def test_connection_state_changes_are_logged_and_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9 item 16 (cloud): an unreachable broker is logged once, not once per retry; connecting and
    losing the connection are logged too."""
    broker = Mosquitto(workdir=tmp_path)  # not started yet: its port refuses connections
    link = MqttLink(Settings(db_path=tmp_path / "c.db", broker_url=broker.url), name="publisher")
    caplog.set_level(logging.INFO, logger="cloud.ingest")

    def lines(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    link.start()
    try:
        wait_for(lambda: link.conn_log.failures >= 3, 30, "the link did not retry")
        assert len(lines("cannot connect")) == 1, lines("cannot connect")
        broker.start()
        try:
            wait_for(link.connected.is_set, 30, "the link did not connect once the broker was up")
            wait_for(lambda: lines("failed attempt(s)"), 5, "the connect was not logged")
        finally:
            broker.stop()
        wait_for(lambda: lines("lost"), 10, "the lost connection was not logged")
    finally:
        link.stop()
