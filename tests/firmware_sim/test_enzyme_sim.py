"""The enzyme Modbus simulator itself: run memory and paging, commands and error state, ground truth,
unplug/replug on the same endpoints, clean shutdown, and `kuaijian sim enzyme`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers.enzyme_map import Status
from drivers.enzyme_modbus import EnzymeModbusAnalyzer, probe_rtu, probe_tcp
from drivers.errors import DeviceNotFound, ModbusExceptionResponse
from drivers.timeouts import Timeouts
from firmware_sim.enzyme_modbus import EnzymeSimulator
from kuaijian_schema.specs import GB_T_5009_199, NY_T_448
from tests.helpers import wait_for

FAST = Timeouts(response_s=0.3, retries=1, reconnect_initial_s=0.02, reconnect_max_s=0.1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[EnzymeSimulator]:
    s = EnzymeSimulator(serial="EN-0500", channels=6, profile=NY_T_448, memory_runs=3, run_duration_s=0.05)
    try:
        yield s
    finally:
        s.stop()


def test_measure_keeps_ground_truth(sim: EnzymeSimulator) -> None:
    n = sim.measure(
        ["a", "b", "c", "d", "e"], ["p"] * 5, inhibition=[0, 10, 30, 55, 80, 95], control_channel=2
    )
    t = sim.truth[n]
    assert t.control_channel == 2
    assert t.sample_ids == ("a", "b", "", "c", "d", "e")
    np.testing.assert_allclose(np.delete(t.model_truth.inhibition, 2), [0, 10, 55, 80, 95])
    page = sim.run(n)
    assert page.absorbance.shape == (6, len(page.times_s))
    assert page.profile == "NY/T 448"
    with pytest.raises(ValueError, match="non-control"):
        sim.measure(["only-one"], ["p"])


def test_memory_rolls_over_and_evicted_runs_are_refused(sim: EnzymeSimulator) -> None:
    for i in range(5):
        sim.measure([f"s{i}"] * 5, ["p"] * 5)
    assert sim.run_counter == 5
    assert sorted(sim.truth) == [3, 4, 5]
    host, port = sim.start_tcp()
    with EnzymeModbusAnalyzer(host=host, port=port, timeouts=FAST) as a:
        st = a.status()
        assert (st.run_counter, st.oldest_run, st.status) == (5, 3, Status.DONE)
        assert a.read_record(3).sample_ids[1] == "s2"
        with pytest.raises(ModbusExceptionResponse, match="ILLEGAL_DATA_VALUE"):
            a.read_record(2)


def test_error_state_and_clear(sim: EnzymeSimulator) -> None:
    host, port = sim.start_tcp()
    with EnzymeModbusAnalyzer(host=host, port=port, timeouts=FAST) as a:
        sim.set_error(17)
        st = a.status()
        assert (st.status, st.error_code) == (Status.ERROR, 17)
        with pytest.raises(ModbusExceptionResponse, match="SLAVE_DEVICE_FAILURE"):
            a.start_run()
        a.clear_error()
        assert a.status().status == Status.IDLE
        a.start_run()
        wait_for(lambda: a.latest_record() == 1, 5, "run started over Modbus did not complete")
        assert a.read_record(1).sample_ids[1] == "S0001-01"


def test_auto_measure(sim: EnzymeSimulator) -> None:
    sim.auto_measure(0.05)
    wait_for(lambda: sim.run_counter >= 2, 5, "auto_measure produced no runs")
    sim.auto_measure(None)
    n = sim.run_counter
    assert n in sim.truth


def test_unplug_replug_same_endpoints_and_clean_stop() -> None:
    sim = EnzymeSimulator(serial="EN-0501", profile=GB_T_5009_199)
    threads_before = set(threading.enumerate())
    host, port = sim.start_tcp()
    path = sim.start_rtu()
    assert probe_tcp(host, port).serial == "EN-0501"
    with pytest.raises(DeviceNotFound):  # another unit id on the line: no answer at all
        probe_tcp(host, port, unit=2, timeouts=FAST)
    sim.unplug()
    sim.replug()
    assert sim.tcp_address == (host, port)
    assert sim.rtu_path == path
    assert probe_tcp(host, port).serial == "EN-0501"
    assert probe_rtu(path).serial == "EN-0501"
    sim.stop()
    sim.stop()  # idempotent
    assert not os.path.exists(path), "pty was not closed"
    leaked = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


def _start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kuaijian.cli", "sim", "enzyme", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return rest


def test_cli_prints_where_it_listens() -> None:
    proc = _start_cli("--port", "0", "--rtu", "--serial", "EN-CLI", "--channels", "8", "--preload", "2")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("enzyme analyzer EN-CLI (KJ-E12, 8 channels")
        tcp = lines[1].split("modbus-tcp listening on ")[1].strip()
        rtu = lines[2].split("modbus-rtu listening on ")[1].split()[0]
        assert lines[3].strip() == "runs in memory: 2"
        host, _, port = tcp.rpartition(":")
        assert host == "127.0.0.1"
        assert probe_tcp(host, int(port)).channels == 8
        assert probe_rtu(rtu).serial == "EN-CLI"
        with EnzymeModbusAnalyzer(host=host, port=int(port), timeouts=FAST) as a:
            assert a.latest_record() == 2
            assert a.read_record(2).sample_ids[1] == "EN-CLI-P0002-01"
    finally:
        rest = _stop(proc)
    assert proc.returncode == 0
    assert rest.strip().endswith("stopped")


def test_cli_json_endpoints() -> None:
    proc = _start_cli("--port", "0", "--json", "--profile", "ny")
    try:
        assert proc.stdout is not None
        doc = json.loads(proc.stdout.readline())
        assert doc["profile"] == "NY/T 448"
        host, _, port = doc["tcp"].rpartition(":")
        assert probe_tcp(host, int(port)).serial == "EN-0001"
    finally:
        _stop(proc)
    assert proc.returncode == 0
