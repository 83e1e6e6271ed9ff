"""Simulated gold reader: firmware state machine byte for byte, fault injection, pty life cycle, CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import serial

from drivers.framing import CrcMismatch, Frame, MalformedFrame, decode_frame, encode_frame
from drivers.gold_codec import (
    Cmd,
    ErrorCode,
    GetProfile,
    GetRecord,
    NakReason,
    Refused,
    decode_reply,
    encode_request,
)
from drivers.gold_serial import probe_serial
from firmware_sim.gold_serial import FaultConfig, GoldFirmware, GoldSimulator
from firmware_sim.record_store import RecordStore
from firmware_sim.signal_model import DEMO_KITS
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
IDENTIFY_REQ = bytes.fromhex("7E FF 01 20 00 00 BB D1 7E")
IDENTIFY_REP = bytes.fromhex(
    "7E 01 01 A0 00 18 01 08 04 00 07 47 52 2D 30 30 30 31 05 4B 4A 2D 47 38 05 32 2E 33 2E 31 BB 47 7E"
)


def firmware(*, faults: FaultConfig | None = None, seed: int = 1, capacity: int = 1000) -> GoldFirmware:
    store = RecordStore(
        serial="GR-0001",
        model="KJ-G8",
        channels=8,
        firmware="2.3.1",
        kits=DEMO_KITS,
        seed=seed,
        capacity=capacity,
    )
    return GoldFirmware(store, faults=faults or FaultConfig())


def request(seq: int, msg: GetRecord | GetProfile, addr: int = 0xFF) -> bytes:
    cmd, payload = encode_request(msg)
    return encode_frame(Frame(addr, seq, cmd, payload))


def frames_of(chunks: list[bytes]) -> list[Frame]:
    """The valid frames in the concatenation of `chunks` (bad frames are skipped, as a receiver does)."""
    buf = bytearray(b"".join(chunks))
    out: list[Frame] = []
    while True:
        try:
            consumed, frame = decode_frame(buf)
        except (MalformedFrame, CrcMismatch) as exc:
            del buf[: exc.consumed]
            continue
        if consumed == 0:
            return out
        del buf[:consumed]
        if frame is not None:
            out.append(frame)


# ------------------------------------------------------------------ firmware state machine
def test_identify_reply_is_the_documented_vector() -> None:
    fw = firmware()
    assert fw.receive(IDENTIFY_REQ) == [IDENTIFY_REP]
    # Byte by byte, as a slow UART would deliver it: same answer, once.
    fw2 = firmware()
    out = [o for b in IDENTIFY_REQ for o in fw2.receive(bytes([b]))]
    assert out == [IDENTIFY_REP]


def test_repeated_seq_is_answered_from_cache_and_not_executed_twice() -> None:
    fw = firmware()
    n = fw.store.measure("imidacloprid-v1", 2, "S-1", "菠菜", 0.0)
    first = fw.receive(request(9, GetRecord(n)))
    again = fw.receive(request(9, GetRecord(n)))
    assert first == again
    assert fw.stats.by_command["GET_RECORD"] == 1
    assert fw.stats.from_cache == 1
    # A host NAK for that seq also gets the cached reply; a NAK for another seq is ignored.
    nak = encode_frame(Frame(0xFF, 9, Cmd.NAK, bytes((NakReason.CRC,))))
    assert fw.receive(nak) == first
    assert fw.receive(encode_frame(Frame(0xFF, 8, Cmd.NAK, b"\x01"))) == []
    # Same seq but a different request is a new request.
    fw.receive(request(9, GetProfile(n, 0)))
    assert fw.stats.by_command["GET_PROFILE"] == 1


def test_corrupt_requests_are_naked_and_other_addresses_ignored() -> None:
    fw = firmware()
    bad = bytearray(request(5, GetRecord(1)))
    bad[-2] ^= 0xFF
    (reply,) = frames_of(fw.receive(bytes(bad)))
    assert (reply.cmd, reply.seq, reply.payload) == (Cmd.NAK, 5, bytes((NakReason.CRC,)))
    (reply,) = frames_of(fw.receive(b"\x7e\x01\x02\x7e"))
    assert (reply.cmd, reply.payload) == (Cmd.NAK, bytes((NakReason.MALFORMED,)))
    assert fw.receive(request(6, GetRecord(1), addr=0x07)) == []
    assert fw.stats.bad_frames_in == 2


def test_refusals() -> None:
    fw = firmware()
    n = fw.store.measure("imidacloprid-v1", 1, "S-1", "青菜")
    cases = [
        (request(1, GetRecord(n + 1)), ErrorCode.NO_SUCH_RECORD),
        (request(2, GetProfile(n, 4)), ErrorCode.BAD_ARGUMENT),  # 1024 points = chunks 0..3
        (encode_frame(Frame(0xFF, 3, 0x30, b"")), ErrorCode.UNKNOWN_COMMAND),
        (encode_frame(Frame(0xFF, 4, Cmd.GET_RECORD, b"\x01")), ErrorCode.BAD_ARGUMENT),
    ]
    for wire, code in cases:
        (reply,) = frames_of(fw.receive(wire))
        assert decode_reply(reply.cmd, reply.payload) == Refused(code)


def test_measurements_keep_truth_and_memory_is_bounded() -> None:
    fw = firmware(capacity=3)
    numbers = [
        fw.store.measure("nitrofurans-card-v1", 1 + i % 8, f"S-{i}", "鸡蛋", (0.0, 1.0, 9.0))
        for i in range(5)
    ]
    assert numbers == [1, 2, 3, 4, 5]
    assert sorted(fw.store.records) == [3, 4, 5]
    rec = fw.store.records[5]
    assert rec.raw.dtype == np.uint16
    assert np.array_equal(rec.profile, rec.raw / 65535.0)
    assert rec.sample.concentration == (0.0, 1.0, 9.0)
    assert len(rec.sample.verdict) == 3
    assert rec.measured_at.tzinfo is not None
    with pytest.raises(KeyError, match="unknown kit"):
        fw.store.measure("no-such-kit", 1, "S", "P")
    with pytest.raises(ValueError, match="channel 9"):
        fw.store.measure("imidacloprid-v1", 9, "S", "P")


def test_same_seed_same_profiles() -> None:
    a, b = firmware(seed=11), firmware(seed=11)
    for fw in (a, b):
        fw.store.measure("carbendazim-v1", 1, "S", "P", 0.3)
    assert np.array_equal(a.store.records[1].raw, b.store.records[1].raw)


# ------------------------------------------------------------------ fault injection
def _replies(faults: FaultConfig, count: int = 60) -> tuple[GoldFirmware, list[bytes]]:
    fw = firmware(faults=faults)
    fw.store.measure("imidacloprid-v1", 1, "S", "P")
    out: list[bytes] = []
    for i in range(count):
        out += fw.receive(request(i % 256, GetProfile(1, i % 4)))
    return fw, out


def test_fault_bad_crc_and_garble_never_decode() -> None:
    for faults in (FaultConfig(bad_crc=1.0), FaultConfig(garble=1.0)):
        fw, out = _replies(faults)
        assert len(out) == 60
        assert all(frames_of([o]) == [] for o in out), faults
    assert fw.stats.garbled == 60


def test_fault_truncate_drops_the_closing_flag() -> None:
    fw, out = _replies(FaultConfig(truncate=1.0))
    assert fw.stats.truncated == 60
    assert all(not o.endswith(b"\x7e") or len(o) == 1 for o in out)
    assert all(frames_of([o]) == [] for o in out)


def test_fault_noise_silence_nak() -> None:
    fw, out = _replies(FaultConfig(noise=1.0))
    assert fw.stats.noise == 60
    assert len(frames_of(out)) >= 50  # noise costs at most a frame when it happens to contain a flag
    fw, out = _replies(FaultConfig(silence=1.0))
    assert out == []
    assert fw.stats.silenced == 60
    assert fw.stats.executed == 0
    fw, out = _replies(FaultConfig(nak=1.0))
    assert all(f.cmd == Cmd.NAK and f.payload == bytes((NakReason.BUSY,)) for f in frames_of(out))
    assert fw.stats.executed == 0


def test_fault_config_is_validated() -> None:
    with pytest.raises(ValueError, match="garble"):
        FaultConfig(garble=1.5)
    with pytest.raises(ValueError, match="delay_s"):
        FaultConfig(delay_s=-1)


# ------------------------------------------------------------------ pty life cycle
def test_pty_lifecycle_link_unplug_replug_stop() -> None:
    sim = GoldSimulator(serial="GR-0777")
    with pytest.raises(RuntimeError, match="not plugged"):
        _ = sim.path
    path = sim.start()
    assert sim.start() == path  # idempotent
    link = sim.link_path
    try:
        assert path.startswith("/dev/pts/")
        assert os.path.islink(link)
        assert os.path.realpath(link) == path
        assert "GR-0777" in os.path.basename(link)
        with serial.Serial(link, 115200, timeout=1) as port:
            port.write(IDENTIFY_REQ)
            got = port.read(len(IDENTIFY_REP))
        assert got[:3] == b"\x7e\x01\x01"
        assert b"GR-0777" in got
        sim.unplug()
        assert not sim.plugged
        assert not os.path.lexists(link)
        new = sim.replug()
        assert os.path.realpath(link) == new == sim.path
        assert probe_serial(link).serial == "GR-0777"
    finally:
        sim.stop()
    assert not os.path.exists(os.path.dirname(link))
    assert not [t for t in threading.enumerate() if t.name.startswith("gold-sim-GR-0777")]
    assert not sim.errors


def test_link_path_never_replaces_a_regular_file(tmp_path: Path) -> None:
    precious = tmp_path / "ttyGOLD"
    precious.write_text("not a device")
    sim = GoldSimulator(link_path=str(precious))
    with pytest.raises(FileExistsError):
        sim.start()
    sim.stop()
    assert precious.read_text() == "not a device"
    assert not sim.plugged


def test_auto_measure_adds_records_until_stopped() -> None:
    seen: list[int] = []
    with GoldSimulator(serial="GR-AUTO", seed=2) as sim:
        sim.auto_measure(0.02, on_record=seen.append)
        with pytest.raises(RuntimeError, match="already running"):
            sim.auto_measure(0.02)
        wait_for(lambda: len(sim.truth) >= 3, 10, "auto_measure produced no records")
    count = len(sim.truth)
    assert seen[:3] == [1, 2, 3]
    assert all(r.operator == "auto" for r in sim.truth.values())
    assert len(sim.truth) == count  # stopped with the simulator


# ------------------------------------------------------------------ CLI
def test_cli_sim_gold_prints_where_it_listens_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kuaijian.cli", "sim", "gold", "--serial", "GR-CLI", "--preload", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.fullmatch(r"gold reader GR-CLI \(KJ-G8, 8 channels\) listening on (/dev/pts/\d+)\n", first)
        assert m, first
        link_line = proc.stdout.readline()
        assert link_line.startswith("stable link: ")
        link = link_line.removeprefix("stable link: ").strip()
        assert proc.stdout.readline() == "records in memory: 2\n"
        info = probe_serial(link)
        assert info.serial == "GR-CLI"
        assert os.path.realpath(link) == m.group(1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped")
    assert not os.path.lexists(link)


def test_cli_sim_gold_duration_and_faults_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from kuaijian.cli import main

    code = main(
        ["sim", "gold", "--serial", "GR-DUR", "--duration", "0.3", "--garble", "0.5", "--delay", "0.01"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "GR-DUR" in out
    assert out.strip().endswith("stopped")
