"""An analyzer cleared or replaced (same serial) while the gateway is down (issue 9 item 13): the new memory
already holds MORE records than the gateway's cursor, so "counter below the cursor" does not see it. On
restart the gateway re-reads the record at its cursor, finds a different record (time, sample id, signal
checksum) and reads the new memory from its first record — nothing of it is lost — and logs, records and
reports the event. Both analyzer families, each with its simulator over its real transport."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_sim.enzyme_modbus import EnzymeSimulator
from firmware_sim.gold_serial import GoldSimulator
from kuaijian_schema.specs import GB_T_5009_199
from tests.gateway.acker import Acker
from tests.gateway.conftest import RunningService, write_station
from tests.helpers import Mosquitto, wait_for

FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "response_s": 0.5, "retries": 1}
KIT = "imidacloprid-v1"


def _samples(acker: Acker, prefix: str) -> set[str]:
    with acker.lock:
        return {r["sample"]["id"] for r in acker.received.values() if r["sample"]["id"].startswith(prefix)}


def _run_twice(
    tmp_path: Path,
    acker: Acker,
    caplog: pytest.LogCaptureFixture,
    first: Callable[[], dict[str, object]],
    second: Callable[[], dict[str, object]],
    old: set[str],
    new: set[str],
    key: str,
) -> None:
    """Gateway with the first memory until all of `old` arrived; stopped; the analyzer swapped; started
    again until all of `new` arrived. Checks the event was logged, recorded and reported."""
    caplog.set_level(logging.WARNING, logger="gateway.worker")
    cfg = write_station(tmp_path, acker.port, [first()])
    with RunningService(cfg) as svc:
        wait_for(
            lambda: _samples(acker, "A-") == old, 30, f"first memory not delivered: {_samples(acker, 'A-')}"
        )
        assert svc.outbox is not None
        before = svc.outbox.cursors()[key]
    cfg = write_station(tmp_path, acker.port, [second()])
    with RunningService(cfg) as svc:
        box = svc.outbox
        assert box is not None
        try:
            wait_for(lambda: _samples(acker, "B-") == new, 30, "records of the new memory not delivered")
        except AssertionError:
            got = sorted(_samples(acker, "B-"))
            pytest.fail(f"records of the new memory lost: got {got}, want {sorted(new)}; {box.cursors()}")
        [reset] = box.memory_resets()
        assert (reset.instrument, reset.old_epoch, reset.new_epoch) == (key, before.epoch, before.epoch + 1)
        assert reset.old_last_record == before.last_record
        assert "is not the record read before" in reset.reason
        event = svc.workers[0].state.last_event
        assert event is not None
        assert "memory cleared or analyzer replaced" in event
        assert svc.status().instruments[0].last_event == event
        assert any("memory cleared or analyzer replaced" in r.getMessage() for r in caplog.records)

        def cloud_told() -> bool:
            with acker.lock:
                return any(
                    i.get("last_event") == event for s in acker.statuses for i in s.get("instruments", [])
                )

        wait_for(cloud_told, 15, "the status the cloud receives does not report the event")
    assert not acker.bad


def test_gold_reader_replaced_while_the_gateway_was_down(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker, caplog: pytest.LogCaptureFixture
) -> None:
    link = str(tmp_path / "usb-Kuaijian_KJ-G8_GR-7401")
    sims: list[GoldSimulator] = []

    def reader(seed: int, prefix: str, n: int) -> Callable[[], dict[str, object]]:
        def start() -> dict[str, object]:
            for s in sims:
                s.stop()
            sim = GoldSimulator(serial="GR-7401", seed=seed, link_path=link)
            for i in range(n):
                sim.measure(KIT, 1 + i % 8, f"{prefix}-{i + 1}", "菠菜", 0.0)
            sim.start()
            sims.append(sim)
            return {"name": "gold-1", "driver": "gold-serial", "port": link, "timeouts": FAST}

        return start

    try:
        _run_twice(
            tmp_path,
            acker,
            caplog,
            reader(1, "A", 6),
            reader(2, "B", 9),  # more records than the cursor (6): the counter did not go back
            {f"A-{i}" for i in range(1, 7)},
            {f"B-{i}" for i in range(1, 10)},
            "gold-serial:GR-7401",
        )
    finally:
        for s in sims:
            s.stop()


def test_enzyme_analyzer_replaced_while_the_gateway_was_down(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker, caplog: pytest.LogCaptureFixture
) -> None:
    sims: list[EnzymeSimulator] = []

    def analyzer(seed: int, prefix: str, runs: int) -> Callable[[], dict[str, object]]:
        def start() -> dict[str, object]:
            for s in sims:
                s.stop()
            sim = EnzymeSimulator(serial="EN-7401", channels=3, profile=GB_T_5009_199, seed=seed)
            sims.append(sim)
            for r in range(runs):
                ids = ["", f"{prefix}-{r + 1}a", f"{prefix}-{r + 1}b"]
                sim.measure(ids, ["", "白菜", "芹菜"], [0.0, 5.0, 5.0])
            host, port = sim.start_tcp()
            return {
                "name": "enzyme-1",
                "driver": "enzyme-modbus",
                "host": host,
                "port": port,
                "timeouts": FAST,
            }

        return start

    try:
        _run_twice(
            tmp_path,
            acker,
            caplog,
            analyzer(1, "A", 3),
            analyzer(2, "B", 5),
            {f"A-{r}{c}" for r in range(1, 4) for c in "ab"},
            {f"B-{r}{c}" for r in range(1, 6) for c in "ab"},
            "enzyme-modbus:EN-7401",
        )
    finally:
        for s in sims:
            s.stop()
