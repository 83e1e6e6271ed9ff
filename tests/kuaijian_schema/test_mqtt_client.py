"""The one MQTT client setup: one broker-URL parser and one client factory used by the gateway link, the
cloud's links and the fleet simulator (no other module builds a paho client or parses a broker URL), and
TCP_NODELAY on the clients it makes (issue 16): the gateway link and the cloud's ingest link, connected to
a real Mosquitto, have Nagle's algorithm off on their sockets; the generated broker configuration turns it
off on the broker's side."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from cloud.ingest_worker import MqttLink
from cloud.mosquitto import render_conf
from cloud.settings import Settings
from kuaijian_schema.mqtt_client import BrokerUrl, parse_broker_url
from tests.gateway.conftest import RunningService, fast_instrument, write_station
from tests.helpers import Mosquitto, wait_for


def _nodelay(sock: Any) -> int:
    assert isinstance(sock, socket.socket), f"no connected socket: {sock!r}"
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_cloud_link_socket_has_nodelay(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link = MqttLink(Settings(db_path=tmp_path / "c.db", broker_url=mosquitto.url), name="publisher")
    link.start()
    try:
        wait_for(link.connected.is_set, 10, "cloud link did not connect")
        assert _nodelay(link.client.socket()) == 1
    finally:
        link.stop()


def test_gateway_link_socket_has_nodelay(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(total=1)])
    with RunningService(cfg) as service:
        link = service.link
        assert link is not None
        wait_for(lambda: link.connected, 10, "gateway link did not connect")
        assert _nodelay(link._client.socket() if link._client else None) == 1


def test_generated_broker_config_sets_nodelay() -> None:
    lines = render_conf(Path("/etc/mosquitto/kuaijian/dynamic-security.json")).splitlines()
    assert "set_tcp_nodelay true" in lines


ROOT = Path(__file__).resolve().parents[2]


def test_broker_urls() -> None:
    assert parse_broker_url("mqtts://broker.example") == BrokerUrl("mqtts", "broker.example", 8883)
    assert parse_broker_url("mqtt://127.0.0.1:1999") == BrokerUrl("mqtt", "127.0.0.1", 1999)
    url = parse_broker_url("mqtt://gw%2D1:p%40ss@[::1]:1884")
    assert (url.host, url.port, url.username, url.password, url.tls) == ("::1", 1884, "gw-1", "p@ss", False)
    assert url.endpoint == "mqtt://::1:1884"  # never the credentials
    for bad in ("http://127.0.0.1", "tcp://127.0.0.1:1883", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(ValueError, match="url"):
            parse_broker_url(bad)


def test_only_the_factory_builds_clients_and_parses_urls() -> None:
    """Gateway, cloud and fleet share kuaijian_schema.mqtt_client; a second setup anywhere fails here."""
    offenders = []
    for package in ("gateway", "cloud", "kuaijian", "kuaijian_schema"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "mqtt_client.py":
                continue
            text = path.read_text(encoding="utf-8")
            for pattern in (
                r"mqtt\.Client\(",
                r"\.tls_set\(",
                r"\.username_pw_set\(",
                r"urlparse\(|urlsplit\(",
            ):
                if re.search(pattern, text) and not (pattern.startswith("url") and "broker" not in text):
                    offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not offenders, offenders
