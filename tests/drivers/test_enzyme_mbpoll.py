"""Interoperability: `mbpoll` (a Modbus master no one here wrote) reads the simulator, over TCP and
RTU on a pty, and what it prints equals the registers documented in docs/protocols/modbus-enzyme.md.
Expected values are computed here from the documented layout and scaling, not with our codecs."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import numpy as np
import pytest

from firmware_sim.enzyme_modbus import EnzymeSimulator
from kuaijian_schema.specs import NY_T_448

MBPOLL = shutil.which("mbpoll")
pytestmark = pytest.mark.skipif(MBPOLL is None, reason="mbpoll (Debian package 'mbpoll') is not on PATH")


@pytest.fixture(scope="module")
def sim() -> Iterator[EnzymeSimulator]:
    s = EnzymeSimulator(serial="EN-7", model="KJ-E8", channels=8, profile=NY_T_448, seed=3)
    try:
        s.measure([f"V{i}" for i in range(7)], ["稻谷"] * 7, inhibition=35.0)
        s.start_tcp()
        s.start_rtu()
        yield s
    finally:
        s.stop()


def mbpoll(*args: str) -> subprocess.CompletedProcess[str]:
    assert MBPOLL is not None
    return subprocess.run(
        [MBPOLL, "-a", "1", "-0", "-t", "4", *args], capture_output=True, text=True, timeout=20
    )


def tcp_read(sim: EnzymeSimulator, address: int, count: int) -> dict[int, int]:
    assert sim.tcp_address is not None
    host, port = sim.tcp_address
    out = mbpoll("-m", "tcp", "-p", str(port), "-1", "-r", str(address), "-c", str(count), host)
    assert out.returncode == 0, out.stdout + out.stderr
    return parse(out.stdout)


def parse(stdout: str) -> dict[int, int]:
    return {int(a): int(v) for a, v in re.findall(r"^\[(\d+)\]:\s+(\d+)", stdout, re.M)}


def text_words(s: str, n: int) -> list[int]:
    raw = s.encode("utf-8").ljust(2 * n, b"\0")
    return [raw[i] * 256 + raw[i + 1] for i in range(0, 2 * n, 2)]


def test_identification_block(sim: EnzymeSimulator) -> None:
    regs = tcp_read(sim, 0, 33)
    assert sorted(regs) == list(range(33))
    assert regs[0] == 1  # map_version
    assert regs[1] == 0x4B4A  # signature "KJ"
    assert [regs[a] for a in range(2, 10)] == text_words("Kuaijian Sim", 8)
    assert [regs[a] for a in range(10, 18)] == text_words("KJ-E8", 8)
    assert [regs[a] for a in range(18, 26)] == text_words("EN-7", 8)
    assert [regs[a] for a in range(26, 30)] == text_words("1.4.2", 4)
    assert (regs[30], regs[31], regs[32]) == (8, 128, 200)


def test_status_select_and_run_page(sim: EnzymeSimulator) -> None:
    status = tcp_read(sim, 40, 8)
    assert status[40] == 2  # done
    assert (status[42] << 16) | status[43] == 1  # run_counter u32, high word first
    assert sim.tcp_address is not None
    host, port = sim.tcp_address
    wrote = mbpoll("-m", "tcp", "-p", str(port), "-r", "61", host, "0", "1")  # select run 1 (FC 16)
    assert wrote.returncode == 0, wrote.stdout + wrote.stderr
    page = sim.run(1)
    header = tcp_read(sim, 100, 26)
    assert (header[100] << 16) | header[101] == 1
    assert (header[102] << 16) | header[103] == page.started_at
    assert header[104] == round(page.interval_s * 10)  # ×0.1 s
    c, t = page.absorbance.shape
    assert (header[106], header[107], header[108]) == (t, page.control_channel, c)
    assert [header[a] for a in range(110, 126)] == text_words("NY/T 448", 16)
    ids = tcp_read(sim, 128 + 8, 8)  # channel 1's sample id
    assert [ids[a] for a in range(136, 144)] == text_words(page.sample_ids[1], 8)
    # absorbance of channel 2, all T points: i16 counts of 0.0001 AU at 400 + c·T + t
    absorb = tcp_read(sim, 400 + 2 * t, t)
    counts = np.array([absorb[400 + 2 * t + i] for i in range(t)], dtype=np.int64)
    signed = np.where(counts >= 0x8000, counts - 0x10000, counts)
    np.testing.assert_allclose(signed * 1e-4, page.absorbance[2], atol=0.5e-4 + 1e-12)


def test_unmapped_address_is_an_exception(sim: EnzymeSimulator) -> None:
    assert sim.tcp_address is not None
    host, port = sim.tcp_address
    out = mbpoll("-m", "tcp", "-p", str(port), "-1", "-r", "33", "-c", "3", host)
    assert out.returncode != 0
    assert "Illegal data address" in out.stdout + out.stderr


def test_rtu_on_the_pty(sim: EnzymeSimulator) -> None:
    assert sim.rtu_path is not None
    out = mbpoll("-m", "rtu", "-b", "19200", "-P", "none", "-1", "-r", "0", "-c", "4", sim.rtu_path)
    assert out.returncode == 0, out.stdout + out.stderr
    regs = parse(out.stdout)
    assert [regs[a] for a in range(4)] == [1, 0x4B4A, *text_words("Kuaijian Sim", 8)[:2]]
