"""A small test "cloud acker": subscribes to a station's result topic on a real broker, verifies every
signature, records what arrived and publishes application acks — standing in for the real cloud.

Knobs: `drop_first` ignores the first delivery of every result (no ack), `ack_enabled` pauses acking,
`reject` names result seqs to reject with a reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from kuaijian_schema.wire import Result, payload_sha256, split_result_payload, topic, verify_payload


class Acker:
    def __init__(
        self,
        port: int,
        station: str,
        key: bytes,
        *,
        drop_first: bool = False,
        ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.station = station
        self.key = key
        self.drop_first = drop_first
        self.ack_enabled = True
        self.reject: dict[int, str] = {}
        self.lock = threading.Lock()
        self.received: dict[int, dict[str, Any]] = {}  # seq → result (first valid copy)
        self.deliveries: Counter[int] = Counter()  # seq → times delivered
        self.delivery_order: list[int] = []  # seqs in arrival order (with repeats)
        self.arrivals: dict[int, list[float]] = {}  # seq → time.monotonic() of each delivery
        self.messages = 0
        self.batches = 0
        self.bad: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"acker-{station}", protocol=mqtt.MQTTv5
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=ca_file)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.port = port

    def start(self) -> None:
        self.client.connect_async("127.0.0.1", self.port, 30)
        self.client.reconnect_delay_set(1, 1)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe([(topic(self.station, "result"), 1), (topic(self.station, "status"), 1)])
        self.connected.set()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/status"):
            with self.lock:
                self.statuses.append(json.loads(msg.payload))
            return
        items = split_result_payload(bytes(msg.payload))
        ids: list[str] = []
        rejected: list[dict[str, Any]] = []
        with self.lock:
            self.messages += 1
            self.batches += len(items) > 1
            for item in items:
                if not verify_payload(item, self.key):
                    self.bad.append(f"bad signature: {item.get('seq')}")
                    continue
                res = Result.model_validate(item)
                self.deliveries[res.seq] += 1
                self.delivery_order.append(res.seq)
                self.arrivals.setdefault(res.seq, []).append(time.monotonic())
                first = self.received.setdefault(res.seq, item)
                if first["id"] != item["id"]:
                    self.bad.append(f"seq {res.seq} reused for ids {first['id']} and {item['id']}")
                if self.drop_first and self.deliveries[res.seq] == 1:
                    continue
                if res.seq in self.reject:
                    rejected.append(
                        {
                            "id": str(res.id),
                            "seq": res.seq,
                            "reason": self.reject[res.seq],
                            "sha256": payload_sha256(item),  # as the cloud does: names this exact content
                        }
                    )
                else:
                    ids.append(str(res.id))
            enabled = self.ack_enabled
        if enabled and (ids or rejected):
            ack = {"ids": ids, "seqs": [], "rejected": rejected}
            client.publish(topic(self.station, "ack"), json.dumps(ack), qos=1)

    def seqs(self) -> set[int]:
        with self.lock:
            return set(self.received)
