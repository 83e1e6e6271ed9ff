"""Socket settings every MQTT client of the project gets (gateway link, cloud ingest/publisher, fleet).

Does: `set_tcp_nodelay(client)` makes a paho client turn Nagle's algorithm off (TCP_NODELAY) on each socket it
opens — before its CONNECT is sent, on every reconnect, plain or TLS. Small MQTT packets (PUBACK, an application
ack) otherwise wait for the peer's delayed ACK: measured ~43 ms on every ack round trip (issue 16).
The broker side needs the same (`set_tcp_nodelay true` in the generated Mosquitto configuration).

Does not: create, connect or configure clients otherwise (ids, credentials, TLS, sessions are each caller's).
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt


def nodelay_socket(sock: Any) -> None:
    """TCP_NODELAY on `sock` when it is a TCP socket (or a TLS socket over one); other sockets are left as they are."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_tcp_nodelay(client: mqtt.Client) -> mqtt.Client:
    """Install the hook that sets TCP_NODELAY on every socket `client` opens; returns `client`."""
    client.on_socket_open = lambda _client, _userdata, sock: nodelay_socket(sock)
    return client
