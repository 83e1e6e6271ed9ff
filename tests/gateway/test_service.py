"""The gateway end to end against a real Mosquitto broker and a test acker standing in for the cloud."""

from __future__ import annotations

import itertools
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from threadpoolctl import threadpool_info, threadpool_limits

from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.wire import StationConfig, topic
from tests.gateway.acker import Acker
from tests.gateway.conftest import KEY_BYTES, STATION, RunningService, drained, fast_instrument, write_station
from tests.gateway.fast_source import is_positive
from tests.helpers import Mosquitto, free_port, wait_for


def _check_complete(acker: Acker, total: int) -> None:
    assert not acker.bad, acker.bad[:5]
    got = acker.received
    assert set(got) == set(range(1, total + 1)), "seqs must be exactly 1..N"
    samples = sorted(r["sample"]["id"] for r in got.values())
    assert len(set(samples)) == total, "each record delivered under exactly one seq"


def test_delivers_everything_signed_and_acked(tmp_path: Path, mosquitto: Mosquitto, acker: Acker) -> None:
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(total=150, rate=3000.0)])
    with RunningService(cfg) as svc:
        wait_for(lambda: drained(svc, 150), 20, "outbox did not drain")
        assert svc.outbox is not None
        st = svc.outbox.stats()
        assert (st.enqueued_total, st.acked_total, st.last_seq, st.depth) == (150, 150, 150, 0)
        _check_complete(acker, 150)
        r = acker.received[10]
        assert r["verdict"] == "positive"
        assert r["algorithm"] == "gold/2.2"
        assert r["config_version"] == "builtin"
        assert acker.received[11]["verdict"] == "negative"
        wait_for(lambda: any(s.get("state") == "online" for s in acker.statuses), 5, "no birth status")
        online = [s for s in acker.statuses if s["state"] == "online"][-1]
        assert online["instruments"][0]["state"] == "ok"
        assert online["free_disk_bytes"] > 0
    wait_for(lambda: acker.statuses[-1]["state"] == "offline", 5, "no offline status at stop")


def test_blas_runs_one_thread_in_the_gateway(tmp_path: Path) -> None:
    # The workers interpret a few hundred records per call; OpenBLAS's own threads only spin on the cores
    # the link and the broker need (the gold line scan measured 20-40x slower with them on 2 busy cores).
    threadpool_limits(limits=2, user_api="blas")
    cfg = write_station(tmp_path, free_port(), [fast_instrument(total=5, rate=1000.0)])
    with RunningService(cfg) as svc:
        assert svc.outbox is not None
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas, "numpy's BLAS is not visible to threadpoolctl"
        assert {p["num_threads"] for p in blas} == {1}


def test_offline_start_then_positives_drain_first(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path, port=free_port())
    # 1. No broker at all: the gateway starts, measures and stores everything offline.
    inst = fast_instrument(total=200, rate=5000.0)
    offline = write_station(tmp_path, broker.port, [inst])
    with RunningService(offline) as svc:
        assert svc.outbox is not None
        box = svc.outbox
        wait_for(lambda: box.stats().enqueued_total == 200, 10, "offline acquisition stalled")
        assert svc.link is not None
        assert not svc.link.connected
    # 2. The network comes back (broker + cloud first), then the gateway restarts and drains.
    broker.start()
    acker = Acker(broker.port, STATION, KEY_BYTES)
    acker.start()
    try:
        wait_for(acker.connected.is_set, 10, "acker did not connect")
        online = write_station(tmp_path, broker.port, [inst], link={"batch_max": 10})
        with RunningService(online) as svc:
            wait_for(lambda: drained(svc, 200), 20, "outbox did not drain after the outage")
        _check_complete(acker, 200)
        positives = {s for s, r in acker.received.items() if r["verdict"] == "positive"}
        assert positives == {s for s, r in acker.received.items() if is_positive(int(r["sample"]["id"][-6:]))}
        assert len(positives) == 20
        assert set(acker.delivery_order[:20]) == positives, "positives must drain first"
        assert acker.batches > 0, "a backlog is sent in batches"
    finally:
        acker.stop()
        broker.stop()


def test_broker_restart_during_measurement_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    total = 600
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(total=total, rate=150.0)])
    with RunningService(cfg) as svc:
        assert svc.outbox is not None
        box = svc.outbox
        wait_for(lambda: box.stats().acked_total >= 50, 10, "nothing acked before the outage")
        mosquitto.stop()  # no persistence: the broker forgets sessions and in-flight messages
        during = box.stats().enqueued_total
        wait_for(lambda: box.stats().enqueued_total >= during + 100, 10, "measurement stopped offline")
        mosquitto.start()
        wait_for(lambda: drained(svc, total), 40, "outbox did not drain after the restart")
        st = box.stats()
        assert st.acked_total == st.enqueued_total == total, "every result acked exactly once in accounting"
    _check_complete(acker, total)


def test_broker_that_drops_gets_resends_until_acked(tmp_path: Path, mosquitto: Mosquitto) -> None:
    acker = Acker(mosquitto.port, STATION, KEY_BYTES, drop_first=True)
    acker.start()
    try:
        wait_for(acker.connected.is_set, 10, "acker did not connect")
        cfg = write_station(
            tmp_path, mosquitto.port, [fast_instrument(total=40, rate=2000.0)], link={"ack_timeout_s": 0.5}
        )
        with RunningService(cfg) as svc:
            wait_for(lambda: drained(svc, 40), 20, "results were not re-sent until acked")
        _check_complete(acker, 40)
        assert all(acker.deliveries[s] >= 2 for s in range(1, 41)), "each result must have been re-sent"
    finally:
        acker.stop()


def test_rejected_results_are_kept_with_reason(tmp_path: Path, mosquitto: Mosquitto, acker: Acker) -> None:
    acker.reject = {3: "unknown instrument", 7: "bad sample"}
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(total=10, rate=2000.0)])
    with RunningService(cfg) as svc:
        wait_for(lambda: drained(svc, 10), 20, "outbox did not drain")
        assert svc.outbox is not None
        rows = {r.seq: r.reason for r in svc.outbox.rejected_rows()}
        assert rows == {3: "unknown instrument", 7: "bad sample"}
        st = svc.outbox.stats()
        assert (st.acked_total, st.rejected_total) == (8, 2)
        first_ids = {seq: acker.received[seq]["id"] for seq in (3, 7)}
        # the cause is fixed in the cloud (e.g. the station enrolled): requeue while the gateway runs
        acker.reject = {}
        assert svc.outbox.requeue_rejected([7]) == [7]
        wait_for(lambda: acker.deliveries[7] >= 2 and svc.outbox.stats().depth == 0, 10, "seq 7 not re-sent")
        assert svc.outbox.requeue_rejected() == [3]
        wait_for(lambda: acker.deliveries[3] >= 2 and svc.outbox.stats().depth == 0, 10, "seq 3 not re-sent")
        assert svc.outbox.rejected_rows() == []
        st = svc.outbox.stats()
        assert (st.acked_total, st.rejected_total) == (10, 0)
        assert acker.bad == [], "re-sent unchanged: same id, seq and valid signature"
        assert {seq: acker.received[seq]["id"] for seq in (3, 7)} == first_ids


def test_config_push_is_applied_atomically_and_stamped(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker, caplog: pytest.LogCaptureFixture
) -> None:
    spec = DEMO_KITS["imidacloprid-v1"]
    # A strict lot: everything becomes positive (cutoff above any blank ratio).
    strict = spec.model_copy(update={"lines": (spec.lines[0].model_copy(update={"cutoff": 50.0}),)})
    cfg_doc = StationConfig(version="lot-42", issued_at=datetime.now(UTC), gold_kits=(strict,))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish(topic(STATION, "config"), cfg_doc.model_dump_json(), qos=1, retain=True).wait_for_publish(5)
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(t0=0.0, total=0)])
    try:
        with RunningService(cfg) as svc:
            wait_for(lambda: svc.specs.get().version == "lot-42", 10, "config push not applied")
            assert svc.outbox is not None
            assert svc.outbox.current_config() is not None
            assert svc.outbox.stats().config_version == "lot-42"
            # A broken push, retained, to a gateway that is connected: it arrives, is ignored, and the
            # config in force stays (a non-retained publish before the connect would never arrive).
            caplog.set_level(logging.WARNING, logger="gateway.link")
            pub.publish(topic(STATION, "config"), b"{not json", qos=1, retain=True).wait_for_publish(5)
            wait_for(
                lambda: any("ignored message on" in r.getMessage() for r in caplog.records),
                10,
                "the broken config push never reached the gateway",
            )
            assert svc.specs.get().version == "lot-42"
            assert svc.outbox.stats().config_version == "lot-42"
    finally:
        pub.disconnect()
        pub.loop_stop()
    # Restart offline: the stored config is in force without the broker.
    cfg = write_station(tmp_path, free_port(), [fast_instrument(total=20, rate=2000.0, serial="FAST-2")])
    with RunningService(cfg) as svc:
        assert svc.specs.get().version == "lot-42"
        assert svc.outbox is not None
        box = svc.outbox
        wait_for(lambda: box.stats().enqueued_total == 20, 10, "acquisition stalled")
        docs = [json.loads(p) for p in box.payloads([s for s, _ in box.due_order(100)]).values()]
        assert len(docs) == 20
        assert all(d["config_version"] == "lot-42" for d in docs)
        assert all(d["verdict"] == "positive" for d in docs)


def test_failing_instrument_is_retried_and_does_not_stop_others(tmp_path: Path) -> None:
    bad = fast_instrument("bad", serial="FAST-BAD", fail_opens=3, total=5, rate=1000.0)
    good = fast_instrument("good", serial="FAST-GOOD", total=30, rate=1000.0)
    cfg = write_station(tmp_path, free_port(), [bad, good])
    with RunningService(cfg) as svc:
        assert svc.outbox is not None
        box = svc.outbox
        worker = next(w for w in svc.workers if w.name == "bad")
        # the failure is seen (not merely "starting": the worker really tried and failed) …
        wait_for(lambda: worker.state.state == "unavailable", 10, "failing instrument not marked unavailable")
        assert "port busy" in (worker.state.last_error or "")
        wait_for(lambda: box.cursors().get("plugin:FAST-GOOD") is not None, 10, "good instrument not read")
        # … retried until its port opens (the fourth attempt), while the other kept delivering
        wait_for(lambda: box.stats().enqueued_total == 35, 15, "bad instrument never recovered")
        assert {w.name: w.state.state for w in svc.workers} == {"bad": "ok", "good": "ok"}


def test_unreadable_record_is_skipped_and_recorded(tmp_path: Path) -> None:
    inst = fast_instrument(total=30, rate=3000.0, unreadable=[5])
    cfg = write_station(tmp_path, free_port(), [inst], acquisition={"skip_unreadable_after": 3})
    with RunningService(cfg) as svc:
        assert svc.outbox is not None
        box = svc.outbox
        wait_for(
            lambda: box.stats().enqueued_total == 29, 10, "acquisition stuck behind an unreadable record"
        )
        assert box.skipped_records() == [
            (
                "plugin:FAST-0001",
                0,
                5,
                "unreadable after 3 attempts: ProtocolError: record 5 is not in memory",
            )
        ]
        assert box.stats().skipped_total == 1
        assert box.cursors()["plugin:FAST-0001"].last_record == 30
        worker = svc.workers[0]
        assert worker.state.last_error is not None
        assert "record 5 skipped" in worker.state.last_error


def test_resends_back_off_while_the_cloud_does_not_ack(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    acker.ack_enabled = False
    link = {"ack_timeout_s": 0.05, "ack_timeout_max_s": 10.0}
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(total=1, rate=1000.0)], link=link)
    with RunningService(cfg) as svc:
        wait_for(lambda: acker.deliveries[1] >= 5, 10, "result 1 was not re-sent")
        # The gateway may send late (a loaded machine) but never before its deadline: each gap between
        # deliveries is at least the back-off (0.05 s doubling); without back-off every gap is ~0.05 s.
        with acker.lock:
            times = acker.arrivals[1][:5]
        # Arrival times carry the broker's and the test's own delays, which can shorten one gap and lengthen
        # the next, so judge the span: four back-offs (0.05 + 0.1 + 0.2 + 0.4 s) against ~0.2 s without back-off,
        # and the last gap alone.
        gaps = [b - a for a, b in itertools.pairwise(times)]
        span = times[4] - times[0]
        assert span >= 0.5 * sum(0.05 * 2**k for k in range(4)), f"re-sends too close together: {gaps}"
        assert gaps[-1] >= 0.5 * 0.05 * 2**3, f"the 4th back-off was not applied: {gaps}"
        acker.ack_enabled = True
        wait_for(lambda: drained(svc, 1), 10, "not acked once the cloud acks again")


def test_results_published_while_nobody_subscribes_are_resent(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The broker PUBACKs and drops (the cloud's subscriber is away, no persistent session): PUBACK is not
    delivery, so the gateway keeps the rows and sends them again until the application ack."""
    cfg = write_station(
        tmp_path, mosquitto.port, [fast_instrument(total=20, rate=2000.0)], link={"ack_timeout_s": 0.3}
    )
    with RunningService(cfg) as svc:
        assert svc.link is not None
        link = svc.link
        wait_for(lambda: link.sent_results >= 20, 10, "nothing published")
        assert svc.outbox is not None
        assert svc.outbox.stats().depth == 20, "PUBACK must not remove anything"
        acker = Acker(mosquitto.port, STATION, KEY_BYTES)
        acker.start()
        try:
            wait_for(lambda: drained(svc, 20), 15, "dropped results were not re-sent")
            assert acker.seqs() == set(range(1, 21))
        finally:
            acker.stop()


def test_backed_off_results_are_resent_as_soon_as_the_cloud_acks_again(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    """After a cloud outage, the first ack (for a new result) makes the backed-off ones due at once."""
    acker.ack_enabled = False
    link = {"ack_timeout_s": 0.2, "ack_timeout_max_s": 60.0}
    t0 = time.time()
    early = fast_instrument("early", serial="FAST-0001", t0=t0, total=1, rate=1000.0)
    late = fast_instrument("late", serial="FAST-0002", t0=t0 + 3.3, total=1, rate=1000.0)  # after the outage
    cfg = write_station(tmp_path, mosquitto.port, [early, late], link=link)
    with RunningService(cfg) as svc:
        # sends of the early result at ~0, 0.2, 0.6, 1.4, 3.0, then not before ~6.2 s
        wait_for(lambda: acker.deliveries[1] >= 5, 10, "the early result was not re-sent with back-off")
        link = svc.link
        assert link is not None
        with link._lock:
            deadline = link._inflight[1]  # when the back-off would re-send it (monotonic)
            sends = acker.deliveries[1]
        acker.ack_enabled = True  # the cloud is back
        wait_for(lambda: drained(svc, 2), 30, "not everything acked after the cloud came back")
        with acker.lock:
            resent_at = acker.arrivals[1][sends]
        # the re-send followed the cloud's first ack, not the back-off deadline the gateway had set
        assert resent_at < deadline, f"re-sent {resent_at - deadline:.2f}s after its back-off deadline"
        assert acker.seqs() == {1, 2}
