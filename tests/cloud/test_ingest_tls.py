"""Ingest over TLS: the cloud connects to an mqtts:// broker that verifies nothing but a CA-signed server
certificate and refuses anonymous clients; a signed result published over TLS is stored and acked."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from cloud.app import create_app
from cloud.clock import ManualClock
from cloud.db import Database
from cloud.settings import Settings
from kuaijian_schema import Ack
from tests.cloud.factories import Grid, api_client_class, batch_payload
from tests.cloud.mqtt_client import Recorder
from tests.helpers import Mosquitto, make_test_pki, tls_mosquitto_conf, wait_for

A1 = "370214101203-01"


def test_ingest_over_tls_with_password(
    tmp_path: Path, settings: Settings, clock: ManualClock, grid: Grid, db: Database
) -> None:
    make_test_pki(tmp_path)
    pwfile = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pwfile), "ingest", "s3cret-ingest"], check=True, timeout=30
    )
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), A1, "s3cret-station"], check=True, timeout=30)
    broker = Mosquitto(workdir=tmp_path, extra_conf=tls_mosquitto_conf(tmp_path, pwfile))
    broker.start()
    ca = str(tmp_path / "ca.pem")
    cfg = settings.model_copy(
        update={
            "broker_url": f"mqtts://127.0.0.1:{broker.port}",
            "mqtt_ca_file": Path(ca),
            "mqtt_username": "ingest",
            "mqtt_password": "s3cret-ingest",
        }
    )
    station = Recorder(broker.port, "gw-a1", A1, "s3cret-station", ca_file=ca)
    try:
        with api_client_class()(create_app(cfg, clock=clock)) as client:
            services: Any = client.app.state.services
            wait_for(lambda: services.link.connected.is_set(), 15, "cloud ingest did not connect over TLS")
            station.start()
            station.subscribe(f"kj/v1/{A1}/ack")
            result = grid.result(A1)
            station.publish(f"kj/v1/{A1}/result", batch_payload([result]))
            raw = wait_for(lambda: station.received(f"kj/v1/{A1}/ack"), 10, "no ack over TLS")
            ack = Ack.model_validate_json(raw[0])
            assert [str(i) for i in ack.ids] == [result["id"]]
            assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    finally:
        station.stop()
        broker.stop()
