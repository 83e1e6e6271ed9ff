"""Issue 9 item 1, end to end on the production set-up (Mosquitto with the generated access control, the cloud's
ingest, a real gateway): a client holding only a station's MQTT password — not its HMAC key — publishes
results with the ids/seqs of the gateway's pending results and bad signatures. The cloud dead-letters them and
its ack names them with the hash of what it received; the gateway gets that ack and suppresses nothing: every
pending result is then delivered and stored, none lands in the gateway's rejected table."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.clock import SystemClock
from cloud.db import connect
from cloud.ingest_worker import IngestWorker
from cloud.mosquitto import gateway_client_id
from tests.cloud.secured import A1, SecuredBroker, secured_broker
from tests.gateway.conftest import RunningService, fast_instrument, write_station
from tests.helpers import wait_for

N = 12


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredBroker]:
    with secured_broker(tmp_path) as broker:
        yield broker


def _station_toml(tmp_path: Path, secured: SecuredBroker) -> Path:
    gw = tmp_path / "gw"
    gw.mkdir()
    path = write_station(gw, secured.broker.port, [fast_instrument(total=N, rate=1000.0)])
    text = path.read_text(encoding="utf-8").replace(
        'key = "', f'key = "{secured.keys[A1].hex()}"\n# was: key = "', 1
    )
    text = text.replace("[mqtt]\n", f'[mqtt]\nusername = "{A1}"\npassword = "{secured.passwords[A1]}"\n', 1)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _cloud_count(db: Path, sql: str) -> int:
    conn = connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _forge(secured: SecuredBroker) -> None:
    """Publish N bad-signature results with seqs 1..N as the station (its password, its client id, its
    persistent session), and leave at once: the cloud's ack then waits in the session for the gateway."""
    up, gone = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gateway_client_id(A1), protocol=mqtt.MQTTv5)
    client.username_pw_set(A1, secured.passwords[A1])
    client.on_connect = lambda *_a: up.set()
    client.on_disconnect = lambda *_a: gone.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", secured.broker.port, clean_start=False, properties=props)
    client.loop_start()
    try:
        wait_for(up.is_set, 10, "the forging client did not connect")
        forged: list[dict[str, Any]] = [
            {"id": str(uuid.uuid4()), "seq": seq, "station": A1, "sig": "0" * 64} for seq in range(1, N + 1)
        ]
        # one message, and gone as soon as the broker has it: the cloud's ack (after its commit) finds the
        # session offline and is queued for the gateway
        client.publish(f"kj/v1/{A1}/result", json.dumps({"results": forged}), qos=1).wait_for_publish(10)
        client.disconnect()
        wait_for(gone.is_set, 10, "the forging client did not disconnect")
    finally:
        client.loop_stop()


def test_station_password_without_key_suppresses_nothing(tmp_path: Path, secured: SecuredBroker) -> None:
    cfg = _station_toml(tmp_path, secured)
    # 1. the gateway measures and sends while no cloud listens: N results stay pending in its outbox
    with RunningService(cfg) as gw:
        box, link = gw.outbox, gw.link
        assert box is not None
        assert link is not None
        wait_for(lambda: box.stats().enqueued_total == N and link.sent_results >= N, 20, "results not sent")
    # 2. the cloud comes up; the forger publishes results named like the pending ones, badly signed
    worker = IngestWorker(secured.ingest_settings(tmp_path), SystemClock())
    worker.start()
    try:
        wait_for(worker.link.connected.is_set, 10, "ingest did not connect")
        _forge(secured)
        dead = "SELECT COUNT(*) FROM dead_letters WHERE reason = 'bad signature'"
        wait_for(lambda: _cloud_count(secured.db, dead) == N, 20, "the forged results were not dead-lettered")
        # 3. the gateway comes back: it receives the cloud's ack for the forgeries, then delivers its own
        with RunningService(cfg) as gw:
            box, link = gw.outbox, gw.link
            assert box is not None
            assert link is not None
            wait_for(
                lambda: box.stats().depth == 0 or box.rejected_rows() != [],
                30,
                "pending results were neither delivered nor rejected",
            )
            wait_for(lambda: box.stats().depth == 0, 30, "pending results were not all delivered")
            assert box.rejected_rows() == [], "a forged rejection suppressed a pending result"
            assert link.ignored_rejections == N, "the forged rejections never reached the gateway"
        assert _cloud_count(secured.db, "SELECT COUNT(*) FROM results") == N
    finally:
        worker.stop()
