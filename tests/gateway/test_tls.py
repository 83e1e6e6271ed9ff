"""The link over TLS (mqtts://, CA-verified broker certificate) with username/password authentication,
against a real Mosquitto that refuses anonymous clients; and over MQTT 3.1.1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.gateway.acker import Acker
from tests.gateway.conftest import KEY_BYTES, STATION, RunningService, drained, fast_instrument, write_station
from tests.helpers import Mosquitto, free_port, wait_for


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _pki(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kj-test-ca",
        cwd=d,
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d,
    )  # fmt: skip


def test_tls_with_username_password(tmp_path: Path) -> None:
    _pki(tmp_path)
    pwfile = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pwfile), STATION, "s3cret-station"], check=True, timeout=30
    )
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "ingest", "s3cret-ingest"], check=True, timeout=30)
    broker = Mosquitto(
        workdir=tmp_path,
        port=free_port(),
        extra_conf="\n".join(
            [
                f"cafile {tmp_path / 'ca.pem'}",
                f"certfile {tmp_path / 'server.pem'}",
                f"keyfile {tmp_path / 'server.key'}",
                f"password_file {pwfile}",
                "allow_anonymous false",
                # As root, mosquitto drops to user "mosquitto", which cannot read pytest's private tmp dir.
                "user root" if os.geteuid() == 0 else "",
            ]
        ),
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
