"""The link over TLS (mqtts://, CA-verified broker certificate) with username/password authentication,
against a real Mosquitto that refuses anonymous clients; and over MQTT 3.1.1."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.gateway.acker import Acker
from tests.gateway.conftest import KEY_BYTES, STATION, RunningService, drained, fast_instrument, write_station
from tests.helpers import Mosquitto, free_port, make_test_pki, tls_mosquitto_conf, wait_for


def test_tls_with_username_password(tmp_path: Path) -> None:
    make_test_pki(tmp_path)
    pwfile = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pwfile), STATION, "s3cret-station"], check=True, timeout=30
    )
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "ingest", "s3cret-ingest"], check=True, timeout=30)
    broker = Mosquitto(
        workdir=tmp_path,
        port=free_port(),
        extra_conf=tls_mosquitto_conf(tmp_path, pwfile),
    )
    broker.start()
    acker = Acker(
        broker.port,
        STATION,
        KEY_BYTES,
        ca_file=str(tmp_path / "ca.pem"),
        username="ingest",
        password="s3cret-ingest",
    )
    acker.start()
    try:
        wait_for(acker.connected.is_set, 10, "acker did not connect over TLS")
        (tmp_path / "mqtt.pw").write_text("s3cret-station\n")
        cfg = write_station(tmp_path, broker.port, [fast_instrument(total=30, rate=3000.0)])
        text = cfg.read_text().replace(
            f'url = "mqtt://127.0.0.1:{broker.port}"',
            f'url = "mqtts://127.0.0.1:{broker.port}"\nusername = "{STATION}"\npassword_file = "mqtt.pw"\n'
            'ca_file = "ca.pem"',
        )
        cfg.write_text(text)
        with RunningService(cfg) as svc:
            wait_for(lambda: drained(svc, 30), 20, "no delivery over TLS with credentials")
        assert acker.seqs() == set(range(1, 31))
        assert not acker.bad
    finally:
        acker.stop()
        broker.stop()


def test_mqtt_311(tmp_path: Path, mosquitto: Mosquitto, acker: Acker) -> None:
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(total=25, rate=3000.0)])
    cfg.write_text(cfg.read_text().replace("[mqtt]\n", '[mqtt]\nprotocol = "3.1.1"\n'))
    with RunningService(cfg) as svc:
        wait_for(lambda: drained(svc, 25), 20, "no delivery over MQTT 3.1.1")
    assert acker.seqs() == set(range(1, 26))
