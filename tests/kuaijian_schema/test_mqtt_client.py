"""TCP_NODELAY on the MQTT clients the project makes (issue 16): the gateway link and the cloud's ingest
link, connected to a real Mosquitto, have Nagle's algorithm off on their sockets; the generated broker
configuration turns it off on the broker's side."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from cloud.ingest_worker import MqttLink
from cloud.mosquitto import render_conf
from cloud.settings import Settings
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
