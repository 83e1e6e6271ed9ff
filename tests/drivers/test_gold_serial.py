"""gold-serial driver against the simulated reader over real ptys: results, every injected fault, unplug."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import tty
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import (
    ChecksumError,
    DeviceNotFound,
    DriverError,
    DriverTimeout,
    FrameError,
    ProtocolError,
    TransportError,
)
from drivers.framing import Frame, encode_frame
from drivers.gold_codec import Cmd, GetRecord, NakReason, RecordHeader, profile_crc32
from drivers.gold_serial import GoldSerialAnalyzer, probe_serial
from drivers.gold_session import GoldSession
from drivers.readings import Analyzer, GoldReading
from drivers.timeouts import Timeouts
from drivers.transport import LoopbackTransport
from firmware_sim.gold_serial import FaultConfig, GoldFirmware, GoldSimulator
from tests.drivers.truth import assert_matches
from tests.helpers import free_port, wait_for

FAST = Timeouts(response_s=0.2, retries=10, inter_byte_s=0.05, reconnect_initial_s=0.01, reconnect_max_s=0.05)
FEW = Timeouts(response_s=0.15, retries=2, inter_byte_s=0.05)
# For assertions that a clean line needs no retransmission: no scheduler hiccup on a loaded CI machine
# comes near these, so a retransmission under them is the driver's fault.
PATIENT = Timeouts(response_s=5.0, retries=10, inter_byte_s=1.0)
STRIPS: list[tuple[str, int, str, str, float | tuple[float, ...]]] = [
    ("imidacloprid-v1", 1, "S-0001", "菠菜", 0.0),
    ("nitrofurans-card-v1", 4, "S-0002", "鸡蛋", (0.0, 5.0, 0.1)),
    ("carbendazim-v1", 8, "S-0003", "黄瓜", 2.0),
]


@pytest.fixture
def sim() -> Iterator[GoldSimulator]:
    s = GoldSimulator(serial="GR-0042", seed=3)
    for kit, channel, sample, product, conc in STRIPS:
        s.measure(kit, channel, sample, product, conc, operator="李明")
    s.start()
    try:
        yield s
    finally:
        s.stop()
    assert not s.errors, s.errors


@pytest.fixture
def reader(sim: GoldSimulator) -> Iterator[GoldSerialAnalyzer]:
    a = GoldSerialAnalyzer(sim.link_path, timeouts=FAST)
    a.open()
    try:
        yield a
    finally:
        a.close()


def read_all_and_check(reader: GoldSerialAnalyzer, sim: GoldSimulator) -> None:
    latest = reader.latest_record()
    assert latest == max(sim.truth)
    for n in range(1, latest + 1):
        assert_matches(reader.read_record(n), sim.truth[n])


def test_a_profile_in_more_than_256_chunks_is_refused_over_the_pty(sim: GoldSimulator) -> None:
    """A reader sending 1,024 points in chunks of 3 (342 chunks): a ProtocolError naming the record, never
    an OverflowError out of the request encoder; the next record still reads once the reader is sane."""
    reader = GoldSerialAnalyzer(sim.link_path, timeouts=FAST)
    reader.open()
    try:
        sim.firmware.chunk_points = 3
        with pytest.raises(ProtocolError, match="record 1: 1024 points in chunks of 3"):
            reader.read_record(1)
        sim.firmware.chunk_points = 256
        assert_matches(reader.read_record(2), sim.truth[2])
    finally:
        reader.close()


# ------------------------------------------------------------------ clean line
def test_identify_and_read_every_record(sim: GoldSimulator, reader: GoldSerialAnalyzer) -> None:
    reader.session.timeouts = PATIENT
    assert isinstance(reader, Analyzer)
    info = reader.identify()
    assert (info.serial, info.model, info.driver, info.method, info.channels) == (
        "GR-0042",
        "KJ-G8",
        "gold-serial",
        "gold",
        8,
    )
    read_all_and_check(reader, sim)
    # The profile is the signal model's reflectance quantised to 16 bits, nothing else.
    for rec in sim.truth.values():
        assert np.max(np.abs(rec.profile - rec.sample.profile)) <= 0.5 / 65535 + 1e-12
    assert reader.session.stats.retransmissions == 0


def test_open_is_idempotent_and_new_records_appear(sim: GoldSimulator, reader: GoldSerialAnalyzer) -> None:
    reader.open()
    reader.open()
    assert sim.stats.by_command["IDENTIFY"] == 1
    n = sim.measure("procymidone-v1", 2, "S-0004", "番茄", 0.5)
    assert reader.latest_record() == n == 4
    assert_matches(reader.read_record(n), sim.truth[n])


def test_clock_sync(sim: GoldSimulator, reader: GoldSerialAnalyzer) -> None:
    target = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    reader.sync_clock(target)
    got = reader.get_clock()
    assert timedelta(0) <= got - target <= timedelta(seconds=2)
    n = sim.measure("imidacloprid-v1", 3, "S-0005", "芹菜")
    reading = reader.read_record(n)
    assert timedelta(0) <= reading.measured_at - target <= timedelta(seconds=2)
    assert reader.status().flags & 0x02 == 0  # clock set
    assert not reader.status().busy
    sim.firmware.busy = True
    assert reader.status().busy
    with pytest.raises(ValueError, match="timezone-aware"):
        reader.sync_clock(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_unknown_record_is_refused_not_retried(reader: GoldSerialAnalyzer) -> None:
    reader.session.timeouts = PATIENT
    with pytest.raises(ProtocolError, match="NO_SUCH_RECORD"):
        reader.read_record(999)
    assert reader.session.stats.retransmissions == 0
    with pytest.raises(ValueError, match="record numbers"):
        reader.read_record(0)


def test_records_dropped_from_a_full_memory() -> None:
    with GoldSimulator(serial="GR-FULL", memory=2) as sim:
        for i in range(4):
            sim.measure("imidacloprid-v1", 1, f"S-{i}", "菠菜")
        with GoldSerialAnalyzer(sim.path, timeouts=FAST) as reader:
            status = reader.status()
            assert (status.latest_record, status.oldest_record) == (4, 3)
            with pytest.raises(ProtocolError, match="NO_SUCH_RECORD"):
                reader.read_record(2)
            assert_matches(reader.read_record(3), sim.truth[3])


def test_concurrent_callers_are_serialised(sim: GoldSimulator, reader: GoldSerialAnalyzer) -> None:
    results: list[GoldReading] = []
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for n in (1, 2, 3):
                results.append(reader.read_record(n))
        except DriverError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures
    assert len(results) == 9
    for r in results:
        assert_matches(r, sim.truth[r.record_no])


# ------------------------------------------------------------------ injected faults
# fault → (config, simulator counter proving it was injected, driver counter proving it was handled)
FAULTS = {
    "garbled bytes": (FaultConfig(garble=0.3), "garbled", "retransmissions"),
    "bad checksums": (FaultConfig(bad_crc=0.3), "bad_crc", "crc_errors"),
    "truncated frames": (FaultConfig(truncate=0.3), "truncated", "retransmissions"),
    "line noise": (FaultConfig(noise=0.5), "noise", "noise_bytes"),
    "silence": (FaultConfig(silence=0.2), "silenced", "timeouts"),
    "NAK storm": (FaultConfig(nak=0.6), "naks_sent", "naks_received"),
    "corrupted requests": (FaultConfig(rx_garble=0.3), "rx_garbled", "retransmissions"),
    "everything at once": (
        FaultConfig(
            garble=0.1,
            bad_crc=0.1,
            truncate=0.1,
            noise=0.2,
            silence=0.05,
            nak=0.1,
            rx_garble=0.1,
            delay_s=0.01,
        ),
        "garbled",
        "retransmissions",
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_faults_never_corrupt_a_result_and_the_driver_recovers(
    name: str, sim: GoldSimulator, reader: GoldSerialAnalyzer
) -> None:
    faults, injected, handled = FAULTS[name]
    sim.faults = faults
    reader.sync_clock(datetime.now(UTC))
    for _ in range(2):
        read_all_and_check(reader, sim)
    assert getattr(sim.stats, injected) > 0, f"the {name} fault was never injected"
    assert getattr(reader.session.stats, handled) > 0
    # Retransmissions are answered from the device's reply cache: nothing ran twice.
    assert sim.stats.by_command["SET_CLOCK"] == 1
    assert sim.stats.by_command["GET_RECORD"] == 2 * len(STRIPS)

    sim.faults = None
    reader.session.timeouts = PATIENT
    before = reader.session.stats.retransmissions
    read_all_and_check(reader, sim)
    assert reader.session.stats.retransmissions == before, "still retransmitting after the fault ended"


def test_slow_device_beyond_the_response_timeout(sim: GoldSimulator, reader: GoldSerialAnalyzer) -> None:
    sim.faults = FaultConfig(delay_s=0.3)  # response_s is 0.2: every first attempt times out
    assert_matches(reader.read_record(2), sim.truth[2])
    stats = reader.session.stats
    assert stats.timeouts >= 5
    assert sim.stats.by_command["GET_PROFILE"] == 4  # late replies matched by seq, not re-executed
    sim.faults = FaultConfig(delay_s=0.3)  # as slow, but now within the timeout: no retransmission
    reader.session.timeouts = PATIENT
    assert_matches(reader.read_record(3), sim.truth[3])  # (may still wait behind the last late reply)
    before = stats.retransmissions
    assert_matches(reader.read_record(3), sim.truth[3])
    assert stats.retransmissions == before
    assert stats.stale_replies >= 1  # the duplicate late replies were recognised and dropped


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (FaultConfig(bad_crc=1.0), ChecksumError),
        (FaultConfig(truncate=1.0), FrameError),
        (FaultConfig(silence=1.0), DriverTimeout),
        (FaultConfig(nak=1.0), ProtocolError),
        (FaultConfig(garble=1.0), (FrameError, DriverTimeout)),
    ],
    ids=["bad-crc", "truncate", "silence", "nak", "garble"],
)
def test_persistent_faults_raise_and_never_return_a_reading(
    sim: GoldSimulator, faults: FaultConfig, error: type[DriverError] | tuple[type[DriverError], ...]
) -> None:
    reader = GoldSerialAnalyzer(sim.link_path, timeouts=FEW)
    reader.open()
    try:
        sim.faults = faults
        with pytest.raises(error):
            reader.read_record(1)
        with pytest.raises(error):
            reader.latest_record()
        assert reader.session.transport.is_open  # a misbehaving device is not an unplugged one
        sim.faults = None
        assert_matches(reader.read_record(1), sim.truth[1])
    finally:
        reader.close()


# ------------------------------------------------------------------ unplug / replug
def test_unplug_raises_transport_error_and_the_next_call_reconnects(
    sim: GoldSimulator, reader: GoldSerialAnalyzer
) -> None:
    assert_matches(reader.read_record(1), sim.truth[1])
    sim.unplug()
    assert not os.path.lexists(sim.link_path)
    with pytest.raises(TransportError) as info:
        reader.latest_record()
    assert not isinstance(info.value, DriverTimeout)
    assert not reader.session.transport.is_open
    with pytest.raises(TransportError, match="cannot open"):  # every attempt tried to reopen the path
        reader.latest_record()
    assert reader.session.stats.reconnects == 0
    assert reader.session.retry.waits >= 2 * FAST.retries  # each reopen came after a backoff wait

    n = sim.measure("carbofuran-v1", 5, "S-0009", "豇豆", 1.0)  # measured while the cable was out
    new_path = sim.replug()
    assert os.path.realpath(sim.link_path) == new_path
    assert reader.latest_record() == n  # reopened within the call, then re-identified
    assert reader.session.stats.reconnects == 1
    read_all_and_check(reader, sim)


def test_unplug_during_an_outstanding_request(sim: GoldSimulator, reader: GoldSerialAnalyzer) -> None:
    sim.faults = FaultConfig(delay_s=5.0)  # the request stays outstanding until the cable is pulled
    errors: list[BaseException] = []

    def call() -> None:
        try:
            reader.latest_record()
        except DriverError as exc:
            errors.append(exc)

    frames_before = sim.stats.frames_in
    thread = threading.Thread(target=call)
    thread.start()
    try:
        wait_for(lambda: sim.stats.frames_in > frames_before, 5, "the request never reached the reader")
        sim.unplug()
    finally:
        thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], TransportError)
    assert not isinstance(errors[0], DriverTimeout)


def test_quick_replug_costs_no_failed_call(sim: GoldSimulator, reader: GoldSerialAnalyzer) -> None:
    sim.replug()  # the driver still holds the old, dead pty
    assert reader.latest_record() == len(STRIPS)  # the call reopened the path and asked again
    assert reader.session.stats.reconnects == 1
    assert os.path.realpath(sim.link_path) == sim.path
    assert reader.info is not None
    assert reader.info.serial == "GR-0042"


def test_a_different_device_on_the_same_path_is_refused(
    sim: GoldSimulator, reader: GoldSerialAnalyzer
) -> None:
    link = sim.link_path
    sim.unplug()
    with GoldSimulator(serial="GR-9999", link_path=link) as other:
        assert os.path.realpath(link) == other.path
        with pytest.raises(ProtocolError, match="expected device GR-0042, found GR-9999"):
            reader.read_record(1)  # its answer is never returned: the device is checked first
    assert not os.path.lexists(link)


# ------------------------------------------------------------------ probing
def test_probe_finds_the_reader(sim: GoldSimulator) -> None:
    info = probe_serial(sim.path)
    assert (info.serial, info.driver) == ("GR-0042", "gold-serial")


def test_probe_reports_device_not_found() -> None:
    with pytest.raises(DeviceNotFound, match="cannot open"):
        probe_serial("/dev/serial/by-id/usb-absent")
    master, slave = os.openpty()  # a port where nothing answers
    tty.setraw(slave)
    try:
        with pytest.raises(DeviceNotFound):
            probe_serial(os.ttyname(slave), Timeouts(response_s=0.1, retries=1))
    finally:
        os.close(slave)
        os.close(master)


# ------------------------------------------------------------------ same driver over TCP (serial server)
def test_driver_over_tcp_serial_server() -> None:
    sim = GoldSimulator(serial="GR-TCP", seed=5)
    n = sim.measure("peanut-allergen-v1", 2, "S-0100", "花生", 3.0)
    port = free_port()
    srv = socket.create_server(("127.0.0.1", port))
    srv.settimeout(5)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(0.1)
            while not stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    return
                for out in sim.firmware.receive(data):
                    conn.sendall(out)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    reader = GoldSerialAnalyzer(f"tcp://127.0.0.1:{port}", timeouts=FAST)
    try:
        reader.open()
        assert reader.identify().serial == "GR-TCP"
        assert_matches(reader.read_record(n), sim.truth[n])
    finally:
        reader.close()
        stop.set()
        thread.join(5)
        srv.close()
    assert not thread.is_alive()
    wait_for(lambda: not thread.is_alive(), 1, "TCP serving thread did not stop")


# ------------------------------------------------------------------ session over the loopback transport
def _device_thread(
    end: LoopbackTransport,
    fw: GoldFirmware,
    stop: threading.Event,
    *,
    echo: bool,
    nak_seq: int | None,
    preamble: bytes = b"",
) -> threading.Thread:
    """A device on the far end of a loopback link; optionally echoes the host's bytes first (a line with
    echo on), NAKs the first request with a wrong sequence number, or sends `preamble` before the
    first reply."""

    def run() -> None:
        pending_nak = nak_seq
        pending_preamble = preamble
        try:
            while not stop.is_set():
                data = end.read(4096, 0.05)
                if not data:
                    continue
                if echo:
                    end.write(data)
                if pending_nak is not None:
                    end.write(encode_frame(Frame(0x01, pending_nak, Cmd.NAK, bytes((NakReason.CRC,)))))
                    pending_nak = None
                    continue
                if pending_preamble:
                    end.write(pending_preamble)
                    pending_preamble = b""
                for out in fw.receive(data):
                    end.write(out)
        except TransportError:
            return  # the host closed the link: the device goes quiet

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _loopback_session(
    timeouts: Timeouts,
    *,
    faults: FaultConfig | None = None,
    echo: bool = False,
    nak_seq: int | None = None,
    preamble: bytes = b"",
) -> Iterator[tuple[GoldSimulator, int, GoldSession]]:
    """A session to a device thread over a loopback link, with one record `n` to read."""
    sim = GoldSimulator(serial="GR-LOOP", seed=9)
    n = sim.measure("imidacloprid-v1", 1, "S-1", "菠菜", 0.2)
    sim.faults = faults
    host, device = LoopbackTransport.pair()
    host.open()
    device.open()
    stop = threading.Event()
    thread = _device_thread(device, sim.firmware, stop, echo=echo, nak_seq=nak_seq, preamble=preamble)
    try:
        yield sim, n, GoldSession(host, timeouts)
    finally:
        stop.set()
        host.close()
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize(("echo", "nak_seq"), [(True, None), (False, 0x00), (True, 0x00)])
def test_session_ignores_echo_and_honours_naks_with_a_garbled_seq(echo: bool, nak_seq: int | None) -> None:
    timeouts = Timeouts(response_s=3.0, retries=2, inter_byte_s=0.5)
    with _loopback_session(timeouts, echo=echo, nak_seq=nak_seq) as (sim, n, session):
        reply = session.request(GetRecord(n))
        assert isinstance(reply, RecordHeader)
        assert reply.record_no == n
        assert reply.profile_crc32 == profile_crc32(sim.truth[n].raw)
        if echo:
            assert session.stats.foreign_frames >= 1
        if nak_seq is not None:
            assert session.stats.naks_received == 1
            assert session.stats.retransmissions == 1
            assert session.stats.timeouts == 0  # the NAK was acted on at once, not waited out


def test_noise_and_a_late_duplicate_before_the_reply_cost_no_retransmission() -> None:
    """A corrupt frame followed by a valid (stale) one is line noise, not our reply: no NAK is sent."""
    stale = encode_frame(Frame(0x01, 0x00, Cmd.GET_STATUS | 0x80, bytes(9)))
    timeouts = Timeouts(response_s=2.0, retries=2, inter_byte_s=0.5)
    with _loopback_session(timeouts, preamble=b"\x13\x7e\x99\x42" + stale) as (sim, n, session):
        session._seq = 0x10  # the stale frame's seq (00) is not the request's
        reply = session.request(GetRecord(n))
        assert isinstance(reply, RecordHeader)
        assert reply.record_no == n
        stats = session.stats
        assert (stats.malformed, stats.stale_replies) == (1, 1)
        assert (stats.retransmissions, stats.timeouts) == (0, 0)
        assert sim.firmware.stats.from_cache == 0  # the device was never asked to retransmit


def test_a_corrupt_reply_with_nothing_behind_it_is_nakked_at_once() -> None:
    timeouts = Timeouts(response_s=5.0, retries=3, inter_byte_s=0.5)
    with _loopback_session(timeouts, faults=FaultConfig(bad_crc=1.0)) as (sim, n, session):
        with pytest.raises(ChecksumError, match="after 4 attempts"):
            session.request(GetRecord(n))
        assert (session.stats.crc_errors, session.stats.retransmissions) == (4, 3)
        assert session.stats.timeouts == 0  # each bad reply was NAKed at once, not waited out
        assert sim.firmware.stats.from_cache == 3


probabilities = st.floats(0.0, 0.5)


@settings(max_examples=20, deadline=None)
@given(
    garble=probabilities,
    bad_crc=probabilities,
    truncate=probabilities,
    noise=probabilities,
    nak=probabilities,
    rx_garble=probabilities,
    silence=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**16),
)
def test_any_fault_mix_gives_the_exact_profile_or_an_error(
    garble: float,
    bad_crc: float,
    truncate: float,
    noise: float,
    nak: float,
    rx_garble: float,
    silence: float,
    seed: int,
) -> None:
    faults = FaultConfig(
        garble=garble,
        bad_crc=bad_crc,
        truncate=truncate,
        noise=noise,
        nak=nak,
        rx_garble=rx_garble,
        silence=silence,
    )
    sim = GoldSimulator(serial="GR-PROP", seed=seed)
    n = sim.measure("nitrofurans-card-v1", 1 + seed % 8, f"S-{seed}", "鸡蛋", (0.0, 0.5, 4.0))
    sim.faults = faults
    host, device = LoopbackTransport.pair()
    host.open()
    device.open()
    stop = threading.Event()
    thread = _device_thread(device, sim.firmware, stop, echo=False, nak_seq=None)
    reader = GoldSerialAnalyzer.from_transport(
        host, timeouts=Timeouts(response_s=0.03, retries=6, inter_byte_s=0.02)
    )
    try:
        for _ in range(2):
            try:
                reading = reader.read_record(n)
            except DriverError:
                continue  # giving up is allowed; a wrong reading is not
            assert_matches(reading, sim.truth[n])
        sim.faults = None
        # the clean read after the faults: no deadline a loaded machine could miss (an event, not a clock)
        patient = GoldSerialAnalyzer.from_transport(host, timeouts=PATIENT)
        assert_matches(patient.read_record(n), sim.truth[n])
    finally:
        stop.set()
        host.close()
        thread.join(5)
    assert not thread.is_alive()
