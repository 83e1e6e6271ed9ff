"""The one MQTT client setup of the project (gateway link, cloud ingest/publisher, fleet) and its URL parser.

Does: `parse_broker_url(url)` — the one broker-URL parser: ``mqtt://[user[:password]@]host[:1883]`` or
``mqtts://…[:8883]`` (TLS) → `BrokerUrl`; `make_client(…)` — the one paho client factory: protocol 5 or
3.1.1, client id, session (clean or persistent), manual acks, credentials, TLS files, and TCP_NODELAY.
`set_tcp_nodelay(client)` makes a paho client turn Nagle's algorithm off on each socket it opens — before
its CONNECT is sent, on every reconnect, plain or TLS. Small MQTT packets (PUBACK, an application ack)
otherwise wait for the peer's delayed ACK: measured ~43 ms on every ack round trip (issue 16). The broker
side needs the same (`set_tcp_nodelay true` in the generated Mosquitto configuration).

Does not: connect, subscribe or set callbacks (each caller's: what a link does with its client differs).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

Protocol = Literal["5", "3.1.1"]


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed broker URL. `endpoint` (scheme://host:port) is what logs show: never the credentials."""

    scheme: Literal["mqtt", "mqtts"]
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://…`` (TLS, 8883); ValueError else."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"url scheme must be mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url has no host: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url has a bad port: {url!r}") from exc
    tls = parts.scheme == "mqtts"
    return BrokerUrl(
        scheme="mqtts" if tls else "mqtt",
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """TLS of a client: the CA to verify the broker with (None: the system store), optional client cert."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def make_client(
    *,
    client_id: str,
    protocol: Protocol = "5",
    clean_session: bool = True,
    manual_ack: bool = False,
    reconnect_on_failure: bool = True,
    username: str | None = None,
    password: str | None = None,
    tls: TlsFiles | None = None,
) -> mqtt.Client:
    """A paho client (callback API 2) set up the one way every part of the project uses.

    `clean_session` applies to MQTT 3.1.1 (for 5, pass `clean_start` to connect). `tls` not None turns TLS
    on (server certificate verified); raises `ssl.SSLError` / `OSError` / `ValueError` for unusable files.
    """
    if protocol == "5":
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
            reconnect_on_failure=reconnect_on_failure,
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
            manual_ack=manual_ack,
            reconnect_on_failure=reconnect_on_failure,
        )
    if username is not None or password is not None:
        client.username_pw_set(username or "", password)
    if tls is not None:
        client.tls_set(
            ca_certs=None if tls.ca_file is None else str(tls.ca_file),
            certfile=None if tls.cert_file is None else str(tls.cert_file),
            keyfile=None if tls.key_file is None else str(tls.key_file),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return set_tcp_nodelay(client)


def nodelay_socket(sock: Any) -> None:
    """TCP_NODELAY on `sock` when it is a TCP socket (or a TLS socket over one); other sockets are left as they are."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_tcp_nodelay(client: mqtt.Client) -> mqtt.Client:
    """Install the hook that sets TCP_NODELAY on every socket `client` opens; returns `client`."""
    client.on_socket_open = lambda _client, _userdata, sock: nodelay_socket(sock)
    return client
