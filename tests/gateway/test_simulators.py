"""The gateway against the simulated analyzers over real transports: a colloidal-gold reader on a pty
and an enzyme-inhibition analyzer over Modbus TCP, delivered through Mosquitto to the test acker.
Unplugging the gold reader marks it unavailable without stopping the enzyme analyzer; records measured
while it was unplugged are read after it comes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.enzyme_modbus import EnzymeSimulator
from firmware_sim.gold_serial import GoldSimulator
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import GB_T_5009_199
from tests.gateway.acker import Acker
from tests.gateway.conftest import RunningService, write_station
from tests.helpers import Mosquitto, wait_for


@pytest.fixture
def gold() -> Iterator[GoldSimulator]:
    sim = GoldSimulator(serial="GR-7001", seed=3)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def enzyme() -> Iterator[EnzymeSimulator]:
    sim = EnzymeSimulator(serial="EN-7001", channels=4, profile=GB_T_5009_199, seed=5)
    try:
        yield sim
    finally:
        sim.stop()


def _verdicts(acker: Acker, method: str) -> list[tuple[str, int, str]]:
    with acker.lock:
        return sorted(
            (r["sample"]["id"], r["channel"], r["verdict"])
            for r in acker.received.values()
            if r["method"] == method
        )


def test_gold_and_enzyme_simulators_end_to_end(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker, gold: GoldSimulator, enzyme: EnzymeSimulator
) -> None:
    host, port = enzyme.start_tcp()
    fast = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "response_s": 0.5, "retries": 1}
    cfg = write_station(
        tmp_path,
        mosquitto.port,
        [
            {"name": "gold-1", "driver": "gold-serial", "port": gold.link_path, "timeouts": fast},
            {"name": "enzyme-1", "driver": "enzyme-modbus", "host": host, "port": port, "timeouts": fast},
        ],
    )
    kit = DEMO_KITS["imidacloprid-v1"]
    cal = kit.lines[0].calibration
    assert cal is not None
    gold.measure(kit.name, 1, "G-1", "菠菜", 0.0)
    gold.measure(kit.name, 2, "G-2", "韭菜", cal.c * 6)
    enzyme.measure(["", "E-1", "E-2", "E-3"], ["", "白菜", "芹菜", "黄瓜"], [0.0, 85.0, 5.0, 5.0])
    with RunningService(cfg) as svc:
        wait_for(lambda: len(acker.seqs()) == 5, 30, f"expected 5 results, got {len(acker.seqs())}")
        assert _verdicts(acker, "gold") == [("G-1", 1, "negative"), ("G-2", 2, "positive")]
        assert _verdicts(acker, "enzyme") == [
            ("E-1", 1, "positive"),
            ("E-2", 2, "negative"),
            ("E-3", 3, "negative"),
        ]
        e1 = next(r for r in acker.received.values() if r["sample"]["id"] == "E-1")
        assert e1["values"]["inhibition_pct"] == pytest.approx(85.0, abs=8.0)
        assert e1["instrument"] == {"serial": "EN-7001", "model": "KJ-E12", "driver": "enzyme-modbus"}

        # Pull the gold reader's cable: it becomes unavailable, the enzyme analyzer keeps delivering.
        gold.unplug()
        worker = next(w for w in svc.workers if w.name == "gold-1")
        wait_for(lambda: worker.state.state == "unavailable", 15, "unplugged reader not marked unavailable")
        enzyme.measure(["", "E-4", "E-5", "E-6"], ["", "白菜", "芹菜", "黄瓜"], [0.0, 5.0, 5.0, 5.0])
        wait_for(lambda: len(acker.seqs()) == 8, 15, "enzyme analyzer stalled while the reader was unplugged")
        gold.measure(kit.name, 3, "G-3", "菠菜", 0.0)  # measured while the gateway cannot see it
        gold.replug()
        wait_for(lambda: len(acker.seqs()) == 9, 30, "record measured while unplugged was not read")
        assert worker.state.state == "ok"
        assert svc.outbox is not None
        wait_for(lambda: svc.outbox is not None and svc.outbox.stats().depth == 0, 10, "outbox not drained")
    assert not acker.bad
    assert sorted(acker.seqs()) == list(range(1, 10))


@pytest.mark.parametrize("max_drift", [5.0, 0.0], ids=["sync", "disabled"])
def test_reader_clock_is_set_when_it_drifts(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker, max_drift: float
) -> None:
    """A reader whose clock is an hour off is set to UTC on connect, so its results carry true times."""
    from datetime import UTC, datetime

    sim = GoldSimulator(serial="GR-7002", seed=4, clock_offset_s=3600.0)
    sim.start()
    try:
        fast = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "response_s": 0.5, "retries": 1}
        cfg = write_station(
            tmp_path,
            mosquitto.port,
            [{"name": "gold-1", "driver": "gold-serial", "port": sim.link_path, "timeouts": fast}],
            acquisition={"max_clock_drift_s": max_drift},
        )
        with RunningService(cfg) as svc:
            worker = svc.workers[0]
            wait_for(lambda: worker.state.state == "ok", 15, "reader not connected")
            sim.measure("imidacloprid-v1", 1, "G-CLK", "菠菜", 0.0)
            wait_for(lambda: len(acker.seqs()) == 1, 15, "result not delivered")
            measured = datetime.fromisoformat(next(iter(acker.received.values()))["measured_at"])
            offset = (measured - datetime.now(UTC)).total_seconds()
            if max_drift:
                assert abs(offset) < 10, f"result time still off by {offset:.0f} s after the clock sync"
                assert abs((sim.store.device_now() - datetime.now(UTC)).total_seconds()) < 5
            else:
                assert offset > 3000, "with max_clock_drift_s = 0 the reader's clock is left alone"
    finally:
        sim.stop()


def test_analyzer_refusing_clock_commands_is_still_read(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    from tests.gateway.conftest import drained, fast_instrument

    inst = fast_instrument(total=5, rate=1000.0) | {
        "factory": "tests.gateway.fast_source:make_clock_refusing"
    }
    cfg = write_station(tmp_path, mosquitto.port, [inst], acquisition={"max_clock_drift_s": 1.0})
    with RunningService(cfg) as svc:
        wait_for(lambda: drained(svc, 5), 15, "results of a clock-refusing analyzer were not delivered")
        assert svc.workers[0].state.state == "ok"
