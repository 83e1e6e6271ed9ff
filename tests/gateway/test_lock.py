"""One gateway per data dir (issue 9 item 15): a second `kuaijian gateway run` on the same config is refused
at once with exit code 4 and the holder's PID, while the first keeps running and stays the only client on
the real Mosquitto broker; once the first has stopped (even by SIGKILL), a new one starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import DataDirLocked
from gateway.service import GatewayService
from tests.gateway.acker import Acker
from tests.gateway.conftest import fast_instrument, write_station
from tests.helpers import Mosquitto, wait_for

REPO = Path(__file__).resolve().parents[2]


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "kuaijian.cli", "gateway", "run", "--config", str(config)],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=fh,
            stderr=fh,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_second_gateway_run_on_the_same_data_dir_is_refused(
    tmp_path: Path, mosquitto: Mosquitto, acker: Acker
) -> None:
    cfg = write_station(tmp_path, mosquitto.port, [fast_instrument(total=5, rate=1000.0)])
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _spawn(cfg, first_log)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(
            lambda: len(acker.seqs()) == 5, 30, f"first gateway did not deliver: {first_log.read_text()}"
        )
        online = len(acker.statuses)
        second = _spawn(cfg, second_log)
        try:
            code = second.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("a second `gateway run` on the same data dir was not refused")
        err = second_log.read_text()
        assert code == 4, err
        assert f"process {first.pid}" in err, err
        assert first.poll() is None, "the first gateway stopped"
        # the refused process never connected: no offline status (its last will) or new birth on the broker
        assert all(s["state"] == "online" for s in acker.statuses[online:])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # the kernel dropped the lock with the killed process: a new gateway starts on the same data dir
        third = _spawn(cfg, tmp_path / "third.log")
        try:
            wait_for(
                lambda: "started:" in (tmp_path / "third.log").read_text() or third.poll() is not None,
                30,
                "third gateway did not start",
            )
            assert third.poll() is None, (tmp_path / "third.log").read_text()
        finally:
            _stop(third)
    finally:
        _stop(first)
        if second is not None:
            _stop(second)


def test_second_service_in_one_process_is_refused(tmp_path: Path) -> None:
    cfg = load_config(write_station(tmp_path, 1, [fast_instrument(total=1)]))
    one, two = GatewayService(cfg), GatewayService(cfg)
    one.start()
    try:
        with pytest.raises(DataDirLocked, match=f"process {os.getpid()}"):
            two.start()
        assert two.outbox is None
    finally:
        one.stop()
    two.start()  # released on stop
    two.stop()
