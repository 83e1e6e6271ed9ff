"""The enzyme Modbus driver against the pymodbus simulator over TCP and over RTU on a real pty,
including every injected fault: the driver raises TransportError/ProtocolError while the fault lasts,
never turns a corrupted or inconsistent read into a result, and recovers once the fault ends."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator

import numpy as np
import pytest

from drivers.enzyme_map import ABSORBANCE_SCALE, Status
from drivers.enzyme_modbus import EnzymeModbusAnalyzer, probe_rtu, probe_tcp
from drivers.errors import (
    DeviceNotFound,
    DriverTimeout,
    ModbusExceptionResponse,
    ProtocolError,
    TransportError,
)
from drivers.readings import Analyzer, EnzymeReading
from drivers.timeouts import Timeouts
from firmware_sim.enzyme_modbus import EnzymeSimulator
from kuaijian_schema.specs import GB_T_5009_199
from tests.helpers import free_port, wait_for

FAST = Timeouts(response_s=0.3, retries=2, inter_byte_s=0.05, reconnect_initial_s=0.02, reconnect_max_s=0.1)


@pytest.fixture(scope="module")
def sim() -> Iterator[EnzymeSimulator]:
    s = EnzymeSimulator(serial="EN-0042", profile=GB_T_5009_199, seed=7, run_duration_s=0.1)
    try:
        s.measure([f"S{i:02d}" for i in range(1, 12)], ["菠菜"] * 11, inhibition=[0, *range(5, 100, 9)])
        s.measure([f"T{i:02d}" for i in range(1, 12)], ["rice"] * 11)
        s.start_tcp()
        s.start_rtu()
        yield s
    finally:
        s.stop()


@pytest.fixture(params=["tcp", "rtu"])
def analyzer(request: pytest.FixtureRequest, sim: EnzymeSimulator) -> Iterator[EnzymeModbusAnalyzer]:
    sim.faults.clear()
    if request.param == "tcp":
        assert sim.tcp_address is not None
        host, port = sim.tcp_address
        a = EnzymeModbusAnalyzer(host=host, port=port, timeouts=FAST)
    else:
        assert sim.rtu_path is not None
        a = EnzymeModbusAnalyzer(serial_port=sim.rtu_path, timeouts=FAST)
    a.open()
    try:
        yield a
    finally:
        sim.faults.clear()
        a.close()


def assert_is_run(reading: EnzymeReading, sim: EnzymeSimulator, run_no: int) -> None:
    truth = sim.run(run_no)
    assert reading.record_no == run_no
    assert reading.sample_ids == truth.sample_ids
    assert reading.products == truth.products
    assert reading.control_channel == truth.control_channel
    assert reading.absorbance.shape == truth.absorbance.shape
    assert np.max(np.abs(reading.absorbance - truth.absorbance)) <= ABSORBANCE_SCALE / 2 + 1e-12
    np.testing.assert_allclose(reading.times_s, truth.times_s)


def test_identify_and_read_runs(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    assert isinstance(analyzer, Analyzer)
    info = analyzer.identify()
    assert (info.serial, info.model, info.firmware, info.channels) == ("EN-0042", "KJ-E12", "1.4.2", 12)
    assert (info.driver, info.method) == ("enzyme-modbus", "enzyme")
    assert analyzer.latest_record() == sim.run_counter >= 2
    for n in (1, 2):
        reading = analyzer.read_record(n)
        assert_is_run(reading, sim, n)
        assert reading.profile == "GB/T 5009.199-2003"
        assert reading.measured_at.tzinfo is not None
    # ground truth of run 1: the inhibitions the simulator was asked for
    truth = sim.truth[1]
    assert truth.control_channel == 0
    assert truth.sample_ids[0] == ""
    assert truth.sample_ids[1] == "S01"
    # FC 43/14 answers this simulator's identity
    ident = analyzer.session.device_identification()
    assert ident[0] == "Kuaijian Sim"
    assert ident[1] == "KJ-E12"
    assert ident[2] == "1.4.2"


def test_busy_is_retried_then_raised_and_recovers(
    analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator
) -> None:
    sim.faults.exception_code = 6  # SLAVE_DEVICE_BUSY for the next 2 requests only: retried inside one call
    sim.faults.for_requests = 2
    retried = analyzer.session.stats.retries
    assert analyzer.latest_record() == sim.run_counter
    assert analyzer.session.stats.retries == retried + 2
    sim.faults.exception_code = 6  # busy for good: a ProtocolError after retries + 1 attempts
    with pytest.raises(ModbusExceptionResponse) as err:
        analyzer.latest_record()
    assert err.value.exception_code == 6
    assert isinstance(err.value, ProtocolError)
    sim.faults.clear()
    assert analyzer.latest_record() == sim.run_counter


def test_illegal_address_is_not_retried(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    sim.faults.exception_code = 2
    before = sim.requests
    with pytest.raises(ModbusExceptionResponse, match="ILLEGAL_DATA_ADDRESS"):
        analyzer.read_record(1)
    assert sim.requests == before + 1
    sim.faults.clear()
    assert_is_run(analyzer.read_record(1), sim, 1)


def test_silent_device_times_out_and_recovers(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    sim.faults.silent = True
    with pytest.raises(DriverTimeout):
        analyzer.identify()
    sim.faults.clear()
    assert analyzer.identify().serial == "EN-0042"
    sim.faults.silent = True  # one lost reply is absorbed by a retry inside the call
    sim.faults.for_requests = 1
    assert_is_run(analyzer.read_record(2), sim, 2)


def test_slow_device(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    sim.faults.delay_s = 0.1  # slow but within response_s: fine
    assert analyzer.latest_record() == sim.run_counter
    # slower than every attempt together: a timeout. The late replies then arrive while the next
    # call runs (on RTU they carry no transaction id) and must never be taken for its answers.
    sim.faults.delay_s = 1.2
    with pytest.raises(DriverTimeout):
        analyzer.latest_record()
    sim.faults.clear()
    assert_is_run(analyzer.read_record(1), sim, 1)
    assert analyzer.latest_record() == sim.run_counter
    wait_for(lambda: sim.in_flight == 0, 5, "delayed replies still in flight")


def test_garbled_rtu_frames_are_never_results(sim: EnzymeSimulator) -> None:
    assert sim.rtu_path is not None
    with EnzymeModbusAnalyzer(serial_port=sim.rtu_path, timeouts=FAST) as a:
        sim.faults.garble = True  # every reply has a flipped bit → CRC fails → no result
        try:
            with pytest.raises(DriverTimeout):
                a.read_record(1)
            sim.faults.garble = True
            sim.faults.for_requests = 2  # two corrupted replies, then clean: retried within the call
            assert_is_run(a.read_record(1), sim, 1)
        finally:
            sim.faults.clear()


def test_torn_pages_are_reread_or_refused(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    sim.faults.torn_reads = True  # the page keeps changing between block reads
    with pytest.raises(ProtocolError, match="consistent"):
        analyzer.read_record(1)
    sim.faults.clear()
    sim.faults.torn_reads = True
    sim.faults.for_requests = 4  # changes during the first read only: re-read, then exact
    rereads = analyzer.session.rereads
    assert_is_run(analyzer.read_record(1), sim, 1)
    assert analyzer.session.rereads > rereads


def test_unplug_and_replug(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    assert analyzer.latest_record() == sim.run_counter
    sim.unplug()
    try:
        with pytest.raises(TransportError):  # TCP: connection refused; RTU: DriverTimeout (dead line)
            analyzer.read_record(1)
    finally:
        sim.replug()
    assert_is_run(analyzer.read_record(1), sim, 1)
    assert analyzer.identify().serial == "EN-0042"


def test_missing_run_and_bad_record_numbers(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    with pytest.raises(ModbusExceptionResponse, match="ILLEGAL_DATA_VALUE"):
        analyzer.read_record(sim.run_counter + 100)
    with pytest.raises(ValueError, match="start at 1"):
        analyzer.read_record(0)


def test_start_run_over_modbus(analyzer: EnzymeModbusAnalyzer, sim: EnzymeSimulator) -> None:
    before = analyzer.latest_record()
    sim.load_samples([f"M{i}" for i in range(11)], ["青菜"] * 11)
    sim.run_duration_s = 3600.0  # the run ends when this test says so, never by the clock
    try:
        analyzer.start_run()
        assert analyzer.status().status == Status.MEASURING
        with pytest.raises(ModbusExceptionResponse, match="BUSY"):
            analyzer.start_run()  # busy while measuring, even after the session's waits and retries
        assert analyzer.status().status == Status.MEASURING
        sim.finish_run_now()
        wait_for(lambda: analyzer.latest_record() == before + 1, 5, "started run never completed")
    finally:
        sim.run_duration_s = 0.1
    reading = analyzer.read_record(before + 1)
    assert reading.sample_ids[1:] == tuple(f"M{i}" for i in range(11))
    assert reading.products[1] == "青菜"
    assert analyzer.status().status == Status.DONE


def test_probes(sim: EnzymeSimulator) -> None:
    assert sim.tcp_address is not None
    assert sim.rtu_path is not None
    assert probe_tcp(*sim.tcp_address).serial == "EN-0042"
    assert probe_rtu(sim.rtu_path).channels == 12
    with pytest.raises(DeviceNotFound):
        probe_tcp("127.0.0.1", free_port())
    master, slave = os.openpty()  # a serial line with nothing on it
    try:
        tty.setraw(slave)
        with pytest.raises(DeviceNotFound):
            probe_rtu(os.ttyname(slave))
    finally:
        os.close(slave)
        os.close(master)


def test_exactly_one_endpoint() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        EnzymeModbusAnalyzer()
    with pytest.raises(ValueError, match="exactly one"):
        EnzymeModbusAnalyzer(host="127.0.0.1", serial_port="/dev/null")
