"""The worker supervisor against failing drivers over real ptys (issue 9 item 4): a gold reader whose
record needs more than 256 profile chunks is refused with a protocol error (skipped like any unreadable
record, the worker lives on); a driver raising an exception outside `drivers.errors` marks the instrument
`error` with the reason — locally and in the status the cloud receives — and is retried until it works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.gold_serial import GoldSimulator
from tests.gateway.acker import Acker
from tests.gateway.conftest import RunningService, write_station
from tests.helpers import Mosquitto, wait_for

KIT = "imidacloprid-v1"
FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "response_s": 0.5, "retries": 1}


@pytest.fixture
def gold() -> Iterator[GoldSimulator]:
    sim = GoldSimulator(serial="GR-7301", seed=11)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def test_record_with_too_many_chunks_is_skipped_and_the_worker_survives(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker, gold: GoldSimulator
) -> None:
    for i in range(3):
        gold.measure(KIT, 1, f"G-{i + 1}", "菠菜", 0.0)
    gold.firmware.chunk_points = 3  # 1,024 points → 342 chunks: not addressable with a one-byte index
    cfg = write_station(
        tmp_path,
        mosquitto.port,
        [{"name": "gold-1", "driver": "gold-serial", "port": gold.link_path, "timeouts": FAST}],
        acquisition={"skip_unreadable_after": 2},
    )
    with RunningService(cfg) as svc:
        assert svc.outbox is not None
        box = svc.outbox
        worker = svc.workers[0]
        wait_for(lambda: len(box.skipped_records()) == 2, 20, f"records 1-2 not skipped: {worker.state}")
        reasons = [r for *_k, r in box.skipped_records()]
        assert all("342 chunks" in r and "ProtocolError" in r for r in reasons), reasons
        wait_for(
            lambda: worker.state.state == "unavailable" and "342 chunks" in (worker.state.last_error or ""),
            10,
            f"the newest record's failure is not reported: {worker.state}",
        )
        assert worker.alive, "the worker thread died"
        reported = svc.status().instruments[0]
        assert reported.state == "unavailable"
        assert reported.last_error is not None
        assert "342 chunks" in reported.last_error
        # the reader goes back to 256-point chunks: the newest record is read, nothing stopped for good
        gold.firmware.chunk_points = 256
        wait_for(lambda: len(acker.seqs()) == 1, 20, f"record 3 never delivered: {worker.state}")
        assert next(iter(acker.received.values()))["sample"]["id"] == "G-3"
        assert worker.state.state == "ok"


def test_any_exception_from_a_driver_marks_it_error_and_is_retried(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker, gold: GoldSimulator
) -> None:
    gold.measure(KIT, 1, "G-1", "菠菜", 0.0)
    gold.measure(KIT, 2, "G-2", "韭菜", 0.0)
    bug = tmp_path / "bug"
    bug.write_text("on")
    inst = {
        "name": "buggy-1",
        "driver": "plugin",
        "factory": "tests.gateway.buggy_driver:make",
        "params": {"port": gold.link_path, "bug_flag": str(bug)},
        "timeouts": FAST,
    }
    cfg = write_station(tmp_path, mosquitto.port, [inst])
    with RunningService(cfg) as svc:
        worker = svc.workers[0]
        wait_for(lambda: worker.state.state == "error", 15, f"instrument not marked error: {worker.state}")
        assert worker.state.last_error == "程序错误（RuntimeError: driver bug while reading record 1）"
        identifies = gold.stats.by_command.get("IDENTIFY", 0)
        wait_for(
            lambda: gold.stats.by_command.get("IDENTIFY", 0) >= identifies + 2,
            15,
            "the supervisor did not retry the failing instrument",
        )
        assert worker.alive, "the worker thread died of the driver's exception"

        def cloud_sees_error() -> bool:
            with acker.lock:
                return any(
                    i["name"] == "buggy-1"
                    and i["state"] == "error"
                    and "RuntimeError" in (i["last_error"] or "")
                    for s in acker.statuses
                    for i in s.get("instruments", [])
                )

        wait_for(cloud_sees_error, 15, "the cloud's status never showed the instrument in error")
        bug.unlink()  # the bug goes away: the retry reads both records and the instrument is ok again
        wait_for(lambda: len(acker.seqs()) == 2, 20, f"records not delivered after the fix: {worker.state}")
        wait_for(lambda: worker.state.state == "ok", 10, "instrument not ok after the fix")
    assert not acker.bad
