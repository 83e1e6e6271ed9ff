"""astm-gold driver against the simulated ASTM reader over real ptys: exact results, every injected
fault, unplug/replug, another device on the same path, probing and registration."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator

import pytest

from drivers import registry
from drivers.astm_serial import AnalyzerBusy, AstmGoldAnalyzer, AstmGoldInstrument, probe_serial
from drivers.errors import DeviceNotFound, DriverError, DriverTimeout, ProtocolError, TransportError
from drivers.readings import Analyzer
from drivers.timeouts import Timeouts
from firmware_sim.astm_gold import AstmFaults, AstmGoldSimulator
from tests.drivers.truth import assert_matches

FAST = Timeouts(response_s=0.5, retries=6, inter_byte_s=0.2, reconnect_initial_s=0.01, reconnect_max_s=0.05)
FEW = Timeouts(response_s=0.3, retries=1, inter_byte_s=0.1, reconnect_initial_s=0.01, reconnect_max_s=0.05)
STRIPS: list[tuple[str, int, str, str, float | tuple[float, ...], str]] = [
    ("imidacloprid-v1", 1, "S-0001", "菠菜", 0.0, "李明"),
    ("nitrofurans-card-v1", 4, "S|0002^x", "鸡蛋", (0.0, 5.0, 0.1), ""),  # delimiters in a sample id
    ("carbendazim-v1", 8, "S-0003", "黄瓜", 2.0, "王芳"),
]


@pytest.fixture
def sim() -> Iterator[AstmGoldSimulator]:
    s = AstmGoldSimulator(serial="GA-0042", seed=3)
    for kit, channel, sample, product, conc, operator in STRIPS:
        s.measure(kit, channel, sample, product, conc, operator=operator)
    s.start()
    try:
        yield s
    finally:
        s.stop()
    assert not s.errors, s.errors


@pytest.fixture
def reader(sim: AstmGoldSimulator) -> Iterator[AstmGoldAnalyzer]:
    a = AstmGoldAnalyzer(sim.link_path, timeouts=FAST)
    a.open()
    try:
        yield a
    finally:
        a.close()


def test_reads_every_record_exactly(sim: AstmGoldSimulator, reader: AstmGoldAnalyzer) -> None:
    assert isinstance(reader, Analyzer)
    info = reader.identify()
    assert (info.serial, info.model, info.driver, info.method, info.channels) == (
        "GA-0042",
        "KJ-G8A",
        "astm-gold",
        "gold",
        8,
    )
    assert reader.latest_record() == len(STRIPS)
    for n in range(1, len(STRIPS) + 1):
        assert_matches(reader.read_record(n), sim.truth[n])
    assert reader.session.stats.naks_sent == 0
    assert reader.session.stats.frames_resent == 0


def test_empty_memory_and_missing_records() -> None:
    with AstmGoldSimulator(serial="GA-0000") as empty, AstmGoldAnalyzer(empty.link_path, timeouts=FAST) as a:
        assert a.latest_record() == 0
        queries = empty.stats.queries
        with pytest.raises(ProtocolError, match="not in the analyzer's memory"):
            a.read_record(1)
        assert empty.stats.queries == queries + 1  # a definite "no such record" is not asked again
    with pytest.raises(ValueError, match="record numbers"):
        AstmGoldAnalyzer("/dev/null").read_record(0)


@pytest.mark.parametrize(
    "faults",
    [
        AstmFaults(bad_checksum=0.3),
        AstmFaults(noise=0.5),
        AstmFaults(busy=0.5),
        AstmFaults(silence=0.4),
        AstmFaults(bad_checksum=0.2, noise=0.2, busy=0.2, silence=0.2),
    ],
    ids=["bad-checksum", "noise", "busy", "silence", "mixed"],
)
def test_faults_never_change_a_result(
    sim: AstmGoldSimulator, reader: AstmGoldAnalyzer, faults: AstmFaults
) -> None:
    sim.faults = faults
    delivered = 0
    for n in [1, 2, 3] * 3:
        try:
            reading = reader.read_record(n)
        except DriverError:
            continue  # giving up is allowed; a wrong reading is not
        assert_matches(reading, sim.truth[n])
        delivered += 1
    assert delivered > 0
    st = sim.stats
    assert st.corrupted + st.busy + st.silenced + reader.session.stats.noise_bytes > 0, (
        "no fault was injected"
    )
    sim.faults = None
    assert_matches(reader.read_record(2), sim.truth[2])


def test_every_frame_corrupt_is_an_error_then_recovers(sim: AstmGoldSimulator) -> None:
    with AstmGoldAnalyzer(sim.link_path, timeouts=FEW) as a:
        sim.faults = AstmFaults(bad_checksum=1.0)
        with pytest.raises(DriverError):
            a.read_record(1)
        assert a.session.stats.naks_sent >= 6  # the analyzer re-sent each NAKed frame
        sim.faults = None
        assert_matches(a.read_record(1), sim.truth[1])


def test_busy_analyzer_is_waited_for_with_backoff(sim: AstmGoldSimulator) -> None:
    with AstmGoldAnalyzer(sim.link_path, timeouts=FEW) as a:
        sim.faults = AstmFaults(busy=1.0)
        with pytest.raises(AnalyzerBusy):
            a.latest_record()
        assert a.session.retry.waits == FEW.retries  # waited (lock released) before each new attempt
        sim.faults = None
        assert a.latest_record() == len(STRIPS)


def test_silent_analyzer_times_out_and_keeps_the_port(sim: AstmGoldSimulator) -> None:
    with AstmGoldAnalyzer(sim.link_path, timeouts=FEW) as a:
        sim.faults = AstmFaults(silence=1.0)
        with pytest.raises(DriverTimeout):
            a.read_record(1)
        assert a.session.transport.is_open
        sim.faults = None
        assert_matches(a.read_record(1), sim.truth[1])


def test_unplug_then_replug(sim: AstmGoldSimulator, reader: AstmGoldAnalyzer) -> None:
    sim.unplug()
    with pytest.raises(TransportError) as err:
        reader.latest_record()
    assert not isinstance(err.value, DriverTimeout)
    n = sim.store.measure("carbofuran-v1", 5, "S-0009", "豇豆", 1.0)  # measured while unplugged
    sim.replug()
    assert reader.latest_record() == n  # the call reopened the stable path
    assert reader.session.stats.reconnects == 1
    assert_matches(reader.read_record(n), sim.truth[n])


def test_another_device_on_the_same_path_is_refused(sim: AstmGoldSimulator, reader: AstmGoldAnalyzer) -> None:
    link = sim.link_path
    sim.unplug()
    with AstmGoldSimulator(serial="GA-9999", link_path=link) as other:
        other.measure("imidacloprid-v1", 1, "X-1", "菠菜", 0.0)
        with pytest.raises(ProtocolError, match="expected device GA-0042, found GA-9999"):
            reader.read_record(1)


def test_probe(sim: AstmGoldSimulator) -> None:
    assert probe_serial(sim.path).serial == "GA-0042"
    master, slave = os.openpty()  # a line where nothing answers
    try:
        tty.setraw(slave)
        with pytest.raises(DeviceNotFound):
            probe_serial(os.ttyname(slave))
    finally:
        os.close(slave)
        os.close(master)


def test_registered_by_its_module_alone(sim: AstmGoldSimulator) -> None:
    fam = registry.family("astm-gold")
    assert fam.settings is AstmGoldInstrument
    settings = AstmGoldInstrument(name="astm-1", driver="astm-gold", port=sim.link_path)
    analyzer = registry.constructor(settings)()
    assert isinstance(analyzer, AstmGoldAnalyzer)
    try:
        analyzer.open()
        assert analyzer.latest_record() == len(STRIPS)
    finally:
        analyzer.close()
    assert fam.probe_serial is not None
    probed = fam.probe_serial(sim.path, registry.ProbeOptions(timeout_s=0.5))
    assert (probed.info.serial, probed.transport, dict(probed.settings)) == (
        "GA-0042",
        "astm-serial",
        {"port": sim.path},
    )
