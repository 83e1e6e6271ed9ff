from __future__ import annotations

import json
import queue
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from kuaijian.fleet import FleetError, run_fleet, station_ids, station_key
from kuaijian_schema import Ack, Result, split_result_payload, topic, verify_payload
from kuaijian_schema.wire import parse_topic
from tests.helpers import Mosquitto, wait_for

SECRET = "test-secret"


class Acker:
    """A minimal cloud stand-in: verifies each result's signature and schema, then acks it."""

    def __init__(self, port: int) -> None:
        self.seen: list[Result] = []
        self.bad: list[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="acker", protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client.on_subscribe = lambda *_a: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("kj/v1/+/result", qos=1)
        subscribed.get(timeout=5)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        station, _ = parse_topic(msg.topic)
        ids = []
        for doc in split_result_payload(msg.payload):
            if not verify_payload(doc, station_key(SECRET, station)):
                self.bad.append(doc["id"])
                continue
            res = Result.model_validate(doc)
            self.seen.append(res)
            ids.append(res.id)
        ack = Ack(ids=tuple(ids))
        self.client.publish(topic(station, "ack"), ack.model_dump_json(), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_fleet_publishes_signed_results_and_counts_acks(mosquitto: Mosquitto) -> None:
    acker = Acker(mosquitto.port)
    try:
        ids = station_ids(40)
        report = run_fleet(mosquitto.url, ids, secret=SECRET, rate_per_min=120, duration_s=2.0, drain_s=10)
    finally:
        acker.close()
    assert report.connected == 40
    assert report.published > 40  # ~2 per station per second
    assert acker.bad == []
    assert report.acked == report.published == len(acker.seen)
    assert report.unacked == 0
    assert {"p50", "p95", "p99"} <= set(report.latency_ms)
    # per-station seq is strictly increasing from 1
    by_station: dict[str, list[int]] = {}
    for r in acker.seen:
        by_station.setdefault(r.station, []).append(r.seq)
    for seqs in by_station.values():
        assert sorted(seqs) == list(range(1, len(seqs) + 1))


def test_unacked_results_are_reported(mosquitto: Mosquitto) -> None:
    report = run_fleet(
        mosquitto.url, station_ids(5), secret=SECRET, rate_per_min=600, duration_s=0.5, drain_s=0.2
    )
    assert report.published > 0
    assert report.acked == 0
    assert report.unacked == report.published


def test_bad_arguments() -> None:
    with pytest.raises(FleetError, match="6 digits"):
        station_ids(3, county="12")
    with pytest.raises(FleetError, match="mqtt://"):
        run_fleet("http://x", station_ids(1), secret="s", rate_per_min=1, duration_s=0.1)
    assert len(set(station_ids(2000))) == 2000
    assert json.dumps(station_ids(1)) == '["370214001001-01"]'


def test_connection_refused_is_clear() -> None:
    from tests.helpers import free_port

    with pytest.raises(FleetError, match="cannot connect"):
        run_fleet(
            f"mqtt://127.0.0.1:{free_port()}", station_ids(1), secret="s", rate_per_min=1, duration_s=0.1
        )


def test_fleet_against_the_real_cloud_ingest(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`--enrol-db` enrols the fleet with its derived keys; the real ingest verifies, stores and acks all."""
    from cloud.clock import SystemClock
    from cloud.db import open_db
    from cloud.enrol import enrol_fleet
    from cloud.ingest_worker import IngestWorker
    from cloud.settings import Settings

    db_path = tmp_path / "cloud.db"
    ids = station_ids(30, county="370215")
    enrol_fleet(db_path, ids, [station_key(SECRET, s) for s in ids])
    settings = Settings(
        db_path=db_path, broker_url=mosquitto.url, mqtt_protocol="3.1.1", ingest_shared_group=""
    )
    worker = IngestWorker(settings, SystemClock())
    worker.start()
    try:
        wait_for(worker.link.connected.is_set, 10, "cloud ingest did not connect")
        report = run_fleet(mosquitto.url, ids, secret=SECRET, rate_per_min=120, duration_s=2.0, drain_s=20)
    finally:
        worker.stop()
    assert report.published > 30
    assert report.acked == report.published
    assert report.rejected == 0
    db = open_db(db_path)
    try:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == report.published
        assert db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM seq_gaps").fetchone()[0] == 0
    finally:
        db.close()


def test_fleet_fails_with_the_count_when_stations_cannot_connect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16: a broker that takes only a few connections leaves some of 5 stations unconnected: the fleet
    exits non-zero and says how many."""
    from kuaijian.cli import main

    broker = Mosquitto(workdir=tmp_path, extra_conf="max_connections 3")
    broker.start()
    try:
        code = main(
            [
                "fleet",
                "--broker",
                broker.url,
                "--stations",
                "5",
                "--duration",
                "1",
                "--drain",
                "0.5",
                "--json",
            ]
        )
    finally:
        broker.stop()
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code != 0
    assert report["stations"] == 5
    assert report["never_connected"] > 0
    assert report["connected"] + report["never_connected"] == 5
    assert f"{report['never_connected']} of 5 stations could not connect" in err
