from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
import pytest

from kuaijian.broker import BrokerStartError, EmbeddedBroker
from tests.helpers import free_port, wait_for


def _client(port: int, cid: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(c.is_connected, 5, f"{cid} did not connect to the embedded broker")
    return c


def test_embedded_broker_delivers_qos1_and_retained() -> None:
    port = free_port()
    with EmbeddedBroker(port=port):
        got: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        pub = _client(port, "pub")
        pub.publish("kj/v1/370214101203-01/status", b"online", qos=1, retain=True).wait_for_publish(5)
        sub = _client(port, "sub")
        sub.on_message = lambda _c, _u, m: got.put((m.topic, m.payload, m.retain))
        subscribed: queue.Queue[bool] = queue.Queue()
        sub.on_subscribe = lambda *_a: subscribed.put(True)
        sub.subscribe([("kj/v1/+/status", 1), ("kj/v1/+/result", 1)])
        subscribed.get(timeout=5)
        assert got.get(timeout=5) == ("kj/v1/370214101203-01/status", b"online", True)
        pub.publish("kj/v1/370214101203-01/result", b"r1", qos=1).wait_for_publish(5)
        assert got.get(timeout=5) == ("kj/v1/370214101203-01/result", b"r1", False)
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()


def test_port_in_use_is_a_clear_error() -> None:
    port = free_port()
    with EmbeddedBroker(port=port), pytest.raises(BrokerStartError, match=str(port)):
        EmbeddedBroker(port=port).start(timeout=5)
