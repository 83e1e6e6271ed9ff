"""Enrolment through the CLI, then a real Mosquitto loading the generated access control (Dynamic Security
plugin), started the way a service is: as root it drops to the `mosquitto` user and must still read the files.

A station may publish only on its own result/status topics and subscribe only to its own ack/config; it
cannot join the cloud's shared subscription, and it cannot take over another client's connection by
connecting with that client's id."""

from __future__ import annotations

import base64
import grp
import json
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.clock import SystemClock
from cloud.db import open_db
from cloud.ingest_worker import IngestWorker
from cloud.mosquitto import fd_limit, gateway_client_id, mosquitto_hash
from kuaijian_schema import Ack
from tests.cloud.factories import signed_result
from tests.cloud.mqtt_client import Recorder
from tests.cloud.secured import A1, A2, A3, B1, IS_ROOT, VILLAGES, SecuredBroker, secured_broker
from tests.helpers import wait_for


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredBroker]:
    with secured_broker(tmp_path) as broker:
        yield broker


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ hash uses mosquitto_passwd's format: check it against a file the real tool wrote."""
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "s3cret"], check=True, capture_output=True)
    line = pw.read_text().strip()
    _, _, iterations, salt, _ = line.split(":", 1)[1].split("$")
    assert mosquitto_hash("s3cret", base64.b64decode(salt), int(iterations)) == line.split(":", 1)[1]


def test_generated_files_private_and_readable_by_the_broker(secured: SecuredBroker) -> None:
    for name in ("dynamic-security.json", "kuaijian.conf"):
        st = (secured.auth_dir / name).stat()
        assert st.st_mode & stat.S_IRWXO == 0, f"{name} is readable by others"
        if IS_ROOT:
            assert stat.S_IMODE(st.st_mode) == 0o640
            assert st.st_gid == grp.getgrnam("mosquitto").gr_gid
        else:
            assert stat.S_IMODE(st.st_mode) == 0o600
    doc = json.loads((secured.auth_dir / "dynamic-security.json").read_text())
    assert {c["username"] for c in doc["clients"]} == {"kj-ingest", *VILLAGES}
    log = (secured.broker.workdir / "mosquitto.log").read_text()
    assert "Error" not in log, log
    # it loaded them: a station logs in (the plugin would refuse everyone if it could not read its file)
    secured.station(A1).stop()


def test_enrolled_station_limited_to_own_topics(secured: SecuredBroker) -> None:
    clients: list[Recorder] = []
    try:
        ingest = Recorder(secured.broker.port, "ingest", "kj-ingest", "ingest-pw").start()
        clients.append(ingest)
        assert not ingest.subscribe("$share/kj-ingest/kj/v1/+/result")[0].is_failure
        assert not ingest.subscribe("kj/v1/+/status")[0].is_failure
        a1 = secured.station(A1)
        clients.append(a1)

        # own topics: allowed
        assert not a1.publish(f"kj/v1/{A1}/result", b'{"own": 1}').is_failure
        assert not a1.publish(f"kj/v1/{A1}/status", b'{"own": 2}').is_failure
        assert not a1.subscribe(f"kj/v1/{A1}/ack")[0].is_failure
        assert not a1.subscribe(f"kj/v1/{A1}/config")[0].is_failure
        wait_for(lambda: ingest.received(f"kj/v1/{A1}/result"), 10, "ingest did not get A1's own result")

        # another station's topics: refused (MQTT 5 reason 0x87 "Not authorized")
        assert a1.publish(f"kj/v1/{B1}/result", b'{"forged": 1}').is_failure
        assert a1.publish(f"kj/v1/{B1}/status", b'{"forged": 2}').is_failure
        assert a1.publish(f"kj/v1/{A1}/ack", b"{}").is_failure  # only the cloud writes acks
        assert a1.publish(f"kj/v1/{A1}/config", b"{}").is_failure
        # subscriptions beyond its own ack/config are refused in the SUBACK itself
        for topic in (f"kj/v1/{B1}/ack", "kj/v1/+/result", f"kj/v1/{A1}/result", "kj/v1/#", "#"):
            assert a1.subscribe(topic)[0].is_failure, topic
        assert not ingest.publish(f"kj/v1/{B1}/ack", b'{"for": "B1"}').is_failure
        assert not ingest.publish(f"kj/v1/{A1}/ack", b'{"ids": []}').is_failure
        # the cloud can write A1's ack, and A1 gets it — and, delivered in order before it, nothing of B1's
        wait_for(lambda: a1.received(f"kj/v1/{A1}/ack"), 10, "A1 did not receive its ack")
        assert a1.received(f"kj/v1/{B1}/ack") == []
        assert not a1.publish(f"kj/v1/{A1}/result", b'{"own": 3}').is_failure
        wait_for(
            lambda: len(ingest.received(f"kj/v1/{A1}/result")) == 2, 10, "ingest did not get A1's 2nd result"
        )
        assert a1.received(f"kj/v1/{A1}/result") == []  # a station cannot read results, not even its own

        wrong = Recorder(secured.broker.port, gateway_client_id(A1), A1, "not-the-password")
        clients.append(wrong.start(expect_ok=False))
        assert wrong.connect_rc is not None
        assert wrong.connect_rc.is_failure
        anon = Recorder(secured.broker.port, "anon").start(expect_ok=False)
        clients.append(anon)
        assert anon.connect_rc is not None
        assert anon.connect_rc.is_failure
    finally:
        for c in clients:
            c.stop()


def test_station_cannot_join_the_ingest_shared_subscription(secured: SecuredBroker, tmp_path: Path) -> None:
    """Three other stations try to join the cloud's shared group: refused, they receive nothing, and the real
    ingest stores and acks every one of A1's results (with the ACL file, members like these took a share of
    the stream and Mosquitto dropped it)."""
    worker = IngestWorker(secured.ingest_settings(tmp_path), SystemClock())
    clients: list[Recorder] = []
    worker.start()
    try:
        wait_for(worker.link.connected.is_set, 10, "ingest worker did not connect")
        thieves = [secured.station(s) for s in (A2, A3, B1)]
        clients += thieves
        for thief in thieves:
            assert thief.subscribe("$share/kj-ingest/kj/v1/+/result")[0].is_failure
            assert thief.subscribe("$share/kj-ingest/kj/v1/#")[0].is_failure
        a1 = secured.station(A1)
        clients.append(a1)
        assert not a1.subscribe(f"kj/v1/{A1}/ack")[0].is_failure
        sent = [signed_result(A1, secured.keys[A1], seq=n) for n in range(1, 51)]
        for r in sent:
            assert not a1.publish(f"kj/v1/{A1}/result", json.dumps(r).encode()).is_failure

        def acked() -> set[str]:
            return {str(i) for p in a1.received(f"kj/v1/{A1}/ack") for i in Ack.model_validate_json(p).ids}

        wait_for(lambda: acked() >= {r["id"] for r in sent}, 30, "not every result was acked by the ingest")
        db = open_db(secured.db)
        try:
            assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 50
        finally:
            db.close()
        assert all(t.messages == [] for t in thieves)
    finally:
        for c in clients:
            c.stop()
        worker.stop()


def test_client_id_takeover_refused(secured: SecuredBroker) -> None:
    """A station connecting with the cloud's or another gateway's client id is refused at CONNECT, and the
    clients it impersonates stay connected."""
    clients: list[Recorder] = []
    try:
        ingest = Recorder(secured.broker.port, "kj-ingest-1", "kj-ingest", "ingest-pw").start()
        b1 = secured.station(B1)
        clients += [ingest, b1]
        assert not b1.subscribe(f"kj/v1/{B1}/ack")[0].is_failure
        for stolen in ("kj-ingest-1", gateway_client_id(B1), "kj-cloud-ingest"):
            thief = secured.station(A1, stolen, expect_ok=False)
            thief.stop()  # at once: paho would otherwise keep retrying
            assert thief.connect_rc is not None
            assert thief.connect_rc.is_failure, f"A1 connected as {stolen}"
        # the victims were never disconnected, and still talk to each other
        assert not ingest.publish(f"kj/v1/{B1}/ack", b'{"after": "attack"}').is_failure
        wait_for(lambda: b1.received(f"kj/v1/{B1}/ack"), 10, "B1 did not receive the ack after the attack")
        assert (ingest.disconnects, b1.disconnects) == (0, 0)
        # A1 with its own client id is fine
        clients.append(secured.station(A1))
    finally:
        for c in clients:
            c.stop()


def test_generated_broker_limits_fit_the_stations(secured: SecuredBroker) -> None:
    """Issue 16: the generated systemd drop-in raises the broker's descriptor limit above one per station."""
    text = (secured.auth_dir / "mosquitto-limits.conf").read_text()
    assert "[Service]" in text
    limit = int(re.search(r"^LimitNOFILE=(\d+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert limit >= 65536
    assert fd_limit(5000) >= 2 * 5000
    assert stat.S_IMODE((secured.auth_dir / "mosquitto-limits.conf").stat().st_mode) & 0o007 == 0
