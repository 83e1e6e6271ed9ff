"""Ingest through a real Mosquitto: redelivery → one row and an ack each time, rejected payloads listed in
the ack, status → station online, config push → retained on the station's config topic, and two
ingest workers sharing one MQTT 5 shared subscription."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cloud.app import create_app
from cloud.clock import ManualClock, SystemClock
from cloud.db import Database
from cloud.ingest_worker import IngestWorker
from cloud.settings import Settings
from kuaijian_schema import Ack, StationConfig
from tests.cloud.factories import T0, Grid, api_client_class, batch_payload, bearer
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto, wait_for

A1 = "370214101203-01"
B1 = "370214102001-01"


@pytest.fixture
def station(mosquitto: Mosquitto) -> Iterator[Recorder]:
    client = Recorder(mosquitto.port, "gw-a1").start()
    client.subscribe(f"kj/v1/{A1}/ack")
    client.subscribe(f"kj/v1/{A1}/config")
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture
def live_api(settings: Settings, clock: ManualClock, grid: Grid, mosquitto: Mosquitto) -> Iterator[Any]:
    cfg = settings.model_copy(update={"broker_url": mosquitto.url})
    with api_client_class()(create_app(cfg, clock=clock)) as client:
        services = client.app.state.services
        wait_for(lambda: services.link.connected.is_set(), 10, "cloud ingest did not connect")
        # the subscriptions are made in on_connect; prove they are active with a status round trip
        yield client


def _acks(station: Recorder) -> list[Ack]:
    return [Ack.model_validate_json(p) for p in station.received(f"kj/v1/{A1}/ack")]


def _rows(db: Database) -> int:
    return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])


def test_redelivery_one_row_acked_each_time(
    live_api: Any, station: Recorder, grid: Grid, db: Database
) -> None:
    results = [grid.result(A1) for _ in range(5)]
    payload = batch_payload(results)
    for n in range(1, 4):
        assert not station.publish(f"kj/v1/{A1}/result", payload).is_failure
        wait_for(lambda: len(_acks(station)) >= n, 10, f"ack #{n} not received")  # noqa: B023 - called now
    acked = [{str(i) for i in a.ids} for a in _acks(station)]
    assert acked == [{r["id"] for r in results}] * 3
    assert _acks(station)[0].seqs == (1, 2, 3, 4, 5)
    assert _rows(db) == 5


def test_forged_and_unsigned_rejected_in_ack(
    live_api: Any, station: Recorder, grid: Grid, db: Database
) -> None:
    good = grid.result(A1)
    forged = grid.result(A1)
    forged["values"] = {"ratio": 0.01}
    unsigned = grid.result(A1)
    del unsigned["sig"]
    station.publish(f"kj/v1/{A1}/result", batch_payload([good, forged, unsigned]))
    station.publish(f"kj/v1/{A1}/result", b"\x00\x01 definitely not json")
    ack = wait_for(lambda: _acks(station), 10, "no ack")[0]
    assert [str(i) for i in ack.ids] == [good["id"]]
    assert {(r.id, r.reason) for r in ack.rejected} == {
        (forged["id"], "bad signature"),
        (unsigned["id"], "unsigned"),
    }
    wait_for(lambda: db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 3, 10, "3 dead letters")
    assert _rows(db) == 1
    admin = bearer(grid.tokens["admin"])
    reasons = {d["reason"] for d in live_api.get("/api/dead-letters", headers=admin).json()["items"]}
    assert "bad signature" in reasons
    assert any(r.startswith("payload is not UTF-8 JSON") for r in reasons)


def test_status_and_config_push(live_api: Any, station: Recorder, grid: Grid, clock: ManualClock) -> None:
    status = {
        "station": A1,
        "state": "online",
        "at": T0.isoformat(),
        "outbox_depth": 7,
        "oldest_unsent_age_s": 3.5,
    }
    station.publish(f"kj/v1/{A1}/status", json.dumps(status).encode(), retain=True)
    town = bearer(grid.tokens["town_a"])

    def online() -> Any:
        body = live_api.get(f"/api/stations/{A1}", headers=town).json()
        return body if body["online"] else None

    body = wait_for(online, 10, "station did not come online")
    assert body["backlog"] == 7
    assert body["oldest_unsent_age_s"] == 3.5
    assert body["status"]["outbox_depth"] == 7

    kit = {
        "name": "imidacloprid-v2",
        "length": 200,
        "control_position": 150,
        "lines": [{"analyte": "imidacloprid", "position": 80, "cutoff": 0.5}],
    }
    r = live_api.post("/api/configs", json={"target": "370214101203", "gold_kits": [kit]}, headers=town)
    assert r.status_code == 201, r.text
    assert r.json()["published"] == 2  # both stations of that village
    cfg = StationConfig.model_validate_json(
        wait_for(lambda: station.received(f"kj/v1/{A1}/config"), 10, "no config")[0]
    )
    assert cfg.version == "1"
    assert cfg.gold_kits[0].name == "imidacloprid-v2"
    hist = live_api.get("/api/configs", params={"station": A1}, headers=town).json()
    assert hist["items"][0]["published_at"] == clock.now().isoformat()


def test_two_workers_share_the_subscription(
    settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto, station: Recorder
) -> None:
    cfg = settings.model_copy(update={"broker_url": mosquitto.url})
    # each worker its own client id (one id for two workers would make them take the session from each other)
    workers = [
        IngestWorker(cfg.model_copy(update={"ingest_client_id": f"kj-ingest-{n}"}), SystemClock())
        for n in (1, 2)
    ]
    for w in workers:
        w.start()
    try:
        for w in workers:
            wait_for(w.link.connected.is_set, 10, "worker did not connect")
        probe = grid.result(A1)  # subscriptions are made right after CONNACK: wait until one answers
        station.publish(f"kj/v1/{A1}/result", json.dumps(probe).encode())
        wait_for(lambda: _acks(station), 10, "no ack from any worker")
        sent = [grid.result(A1) for _ in range(40)]
        for r in sent:
            station.publish(f"kj/v1/{A1}/result", json.dumps(r).encode())

        def acked_ids() -> list[str]:
            return [str(i) for a in _acks(station) for i in a.ids]

        wait_for(lambda: set(acked_ids()) >= {r["id"] for r in sent}, 15, "not every result was acked")
        assert _rows(db) == 41
        assert len(acked_ids()) == 41  # each message went to exactly one worker: no id acked twice
        assert all(w.committed_batches > 0 for w in workers), [w.committed_batches for w in workers]
    finally:
        for w in workers:
            w.stop()


def test_ingest_survives_a_broker_restart(
    settings: Settings, grid: Grid, db: Database, mosquitto: Mosquitto
) -> None:
    cfg = settings.model_copy(update={"broker_url": mosquitto.url})
    worker = IngestWorker(cfg, SystemClock())
    worker.start()
    try:
        wait_for(worker.link.connected.is_set, 10, "worker did not connect")
        mosquitto.stop()
        wait_for(lambda: not worker.link.connected.is_set(), 10, "worker did not notice the outage")
        mosquitto.start()
        wait_for(worker.link.connected.is_set, 20, "worker did not reconnect and resubscribe")
        gw = Recorder(mosquitto.port, "gw-after-restart").start()
        try:
            gw.subscribe(f"kj/v1/{A1}/ack")
            r = grid.result(A1)
            gw.publish(f"kj/v1/{A1}/result", json.dumps(r).encode())
            ack = wait_for(lambda: gw.received(f"kj/v1/{A1}/ack"), 10, "no ack after the restart")
            assert [str(i) for i in Ack.model_validate_json(ack[0]).ids] == [r["id"]]
        finally:
            gw.stop()
    finally:
        worker.stop()
    assert _rows(db) == 1
