"""The ingest's persistent session: results published while the ingest worker is down are queued by the broker
and stored when it comes back (its client id is stable even without `ingest_client_id`); a session left by a
stopped worker is ended, and so is one left by a worker that crashed (its heartbeat fell silent) — but never a
live worker's; connection state changes are logged, an unreachable broker without flooding the log."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.clock import SystemClock
from cloud.db import Database
from cloud.ingest_sessions import INGEST_DEAD_AFTER
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


def _every_result_acked(station: Recorder, grid: Grid, failure: str) -> None:
    """Publish 20 results, one per message (each routed to a member of the shared group on its own), and wait
    until every one is acked."""
    station.subscribe(f"kj/v1/{A1}/ack")
    results = [grid.result(A1) for _ in range(20)]
    for r in results:
        station.publish(f"kj/v1/{A1}/result", json.dumps(r).encode())

    def acked() -> set[str]:
        return {str(i) for p in station.received(f"kj/v1/{A1}/ack") for i in Ack.model_validate_json(p).ids}

    wait_for(lambda: acked() == {r["id"] for r in results}, 10, failure)


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
        _every_result_acked(station, grid, "results went to the stale session")
    finally:
        station.stop()
        worker.stop()


def test_session_of_a_crashed_worker_is_ended(
    settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A worker killed with SIGKILL never records that it stopped: its persistent session would stay in the
    shared group and take a share of the results for the session expiry (a week). A running worker sees its
    heartbeat fall silent, ends that session and forgets it, and every result is acked at once."""
    cfg = settings.model_copy(update={"broker_url": mosquitto.url, "ingest_heartbeat_s": 0.1})
    log = tmp_path / "crashed.log"
    with log.open("wb") as out:
        crashed = subprocess.Popen(
            [sys.executable, "-m", "kuaijian.cli", "cloud", "ingest", "--db", cfg.database,
             "--broker", str(cfg.broker_url), "--client-id", "kj-ingest-crashed"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "KJ_CLOUD_INGEST_HEARTBEAT_S": "0.1"},
        )  # fmt: skip
    worker: IngestWorker | None = None
    station = Recorder(mosquitto.port, "gw-a1").start()
    try:
        # the crashed worker must have subscribed (joined the shared group) first: a status round trip shows it
        status = {"station": A1, "state": "online", "at": "2026-11-02T08:00:00+00:00"}

        def subscribed() -> bool:
            station.publish(f"kj/v1/{A1}/status", json.dumps(status).encode())  # lost until it subscribes
            return bool(db.scalar("SELECT online FROM stations WHERE id = ?", [A1]) == 1)

        wait_for(
            subscribed, 30, f"the first ingest worker never stored a status:\n{log.read_text()}", interval=0.5
        )
        crashed.send_signal(signal.SIGKILL)
        crashed.wait(10)
        assert (
            db.scalar("SELECT stopped_at FROM ingest_sessions WHERE client_id = 'kj-ingest-crashed'") is None
        )
        worker = _worker(cfg)
        wait_for(
            lambda: (
                db.scalar("SELECT COUNT(*) FROM ingest_sessions WHERE client_id = 'kj-ingest-crashed'") == 0
            ),
            30,
            "the crashed worker's session was not ended",
        )
        assert worker.sessions.heartbeats > INGEST_DEAD_AFTER, "judged before its own heartbeats were healthy"
        _every_result_acked(station, grid, "results went to the crashed worker's session")
    finally:
        station.stop()
        if worker is not None:
            worker.stop()
        if crashed.poll() is None:
            crashed.kill()
            crashed.wait(10)


def test_live_workers_never_end_each_others_sessions(
    settings: Settings, db: Database, mosquitto: Mosquitto
) -> None:
    """Two workers beating side by side: each judges the other for many heartbeats and finds it alive — no
    session is ended, no connection taken over, both rows stay."""
    cfg = settings.model_copy(update={"broker_url": mosquitto.url, "ingest_heartbeat_s": 0.05})
    first = _worker(cfg.model_copy(update={"ingest_client_id": "kj-ingest-a"}))
    second = _worker(cfg.model_copy(update={"ingest_client_id": "kj-ingest-b"}))
    try:
        beats = 4 * (INGEST_DEAD_AFTER + 1)  # each has judged the other several times
        wait_for(
            lambda: min(first.sessions.heartbeats, second.sessions.heartbeats) >= beats,
            30,
            "the workers did not beat",
        )
        rows = db.execute("SELECT client_id, stopped_at FROM ingest_sessions ORDER BY client_id").fetchall()
        assert [tuple(r) for r in rows] == [("kj-ingest-a", None), ("kj-ingest-b", None)]
        assert first.link.session == second.link.session == 1, "a live worker's connection was taken over"
    finally:
        first.stop()
        second.stop()


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
