"""A small paho-mqtt 2 test client that records what it receives and the outcome of its publishes."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.helpers import wait_for


class Recorder:
    def __init__(
        self,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        *,
        ca_file: str | None = None,
    ) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if ca_file is not None:
            self.client.tls_set(ca_certs=ca_file)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.port = port
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []
        self.connect_rc: ReasonCode | None = None
        self.suback: dict[int, list[ReasonCode]] = {}
        self.puback: dict[int, ReasonCode] = {}
        self.disconnects = 0  # connections lost after a successful connect (e.g. taken over)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connect_rc = rc

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: ReasonCode, _p: Any) -> None:
        if self.connect_rc is not None and not self.connect_rc.is_failure:
            self.disconnects += 1

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        self.suback[mid] = rcs

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self.puback[mid] = rc

    def start(self, expect_ok: bool = True) -> Recorder:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        wait_for(lambda: self.connect_rc is not None, 10, "no CONNACK")
        if expect_ok:
            assert self.connect_rc is not None
            assert not self.connect_rc.is_failure, f"connect refused: {self.connect_rc}"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        wait_for(lambda: mid in self.suback, 10, f"no SUBACK for {topic}")
        return self.suback[mid]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_for(lambda: info.mid in self.puback, 10, f"no PUBACK on {topic}")
        return self.puback[info.mid]

    def received(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]
