"""A full disk never wedges the outbox (issue 9 item 12), on a real 3 MB file system: the gateway runs in its
own mount namespace (`unshare -rm`) with a tmpfs of 3 MB as its data dir, the broker is down and the analyzer
keeps measuring, so the outbox fills the disk; then another program takes the rest of the disk. When the
broker comes back every ack is applied (the outbox gives its reserve back), nothing is re-sent over and over,
and once the disk has room again the instrument resumes by itself and every record arrives. And the
`storage.max_db_mb` cap holds for the database AND its WAL, before the disk is full."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.acker import Acker
from tests.gateway.conftest import KEY_BYTES, STATION, RunningService, drained, fast_instrument, write_station
from tests.helpers import Mosquitto, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def _namespaces_work(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    res = subprocess.run(
        [unshare, "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", str(probe)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return res.returncode == 0


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_full_disk_does_not_wedge_the_outbox(tmp_path: Path) -> None:
    if not _namespaces_work(tmp_path):
        pytest.skip("cannot mount a tmpfs in a user+mount namespace here (unshare -rm)")
    broker = Mosquitto(workdir=tmp_path, port=free_port())
    total = 1500
    cfg = write_station(
        tmp_path,
        broker.port,
        [fast_instrument(total=total, rate=500.0)],
        link={"ack_timeout_s": 5.0},
        acquisition={"full_retry_s": 0.2, "read_batch": 8, "include_raw": True},
    )
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    log = tmp_path / "gateway.log"
    cmd = 'mount -t tmpfs -o size=3m,mode=0700 tmpfs "$1" && exec "$2" -m kuaijian.cli gateway run --config "$3"'
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [
                shutil.which("unshare") or "unshare",
                "-rm",
                "sh",
                "-c",
                cmd,
                "sh",
                str(data),
                sys.executable,
                str(cfg),
            ],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=fh,
            stderr=fh,
        )
    acker = Acker(broker.port, STATION, KEY_BYTES)
    try:
        # the gateway's own view of its data dir: the 3 MB tmpfs in its mount namespace
        disk = Path(f"/proc/{proc.pid}/root") / data.relative_to("/")
        wait_for(
            lambda: "paused" in log.read_text() or proc.poll() is not None, 60, "the outbox never filled"
        )
        assert proc.poll() is None, log.read_text()
        assert os.statvfs(disk).f_blocks * os.statvfs(disk).f_frsize == 3 * MB
        assert "disk almost full" in log.read_text(), log.read_text()
        reserve = disk / "outbox.db.reserve"
        assert reserve.stat().st_size == MB // 2, "the reserve file was not kept"
        # another program takes every byte that is left
        ballast = disk / "ballast"
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)  # unbuffered: nothing left to flush on close
        try:
            while os.write(fd, bytes(64 * 1024)) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        assert _free(disk) < 64 * 1024

        broker.start()
        acker.start()

        def depth_zero() -> bool:
            with acker.lock:
                return bool(acker.statuses) and acker.statuses[-1].get("outbox_depth") == 0

        wait_for(depth_zero, 60, f"acks were not applied on the full disk:\n{log.read_text()[-3000:]}")
        received = len(acker.seqs())
        assert received > 0
        assert "released the outbox's" in log.read_text()
        assert "outbox full while applying an ack" not in log.read_text()
        # the disk gets room again: the instrument resumes by itself and every record arrives
        ballast.unlink()
        wait_for(
            lambda: len(acker.seqs()) == total,
            120,
            f"only {len(acker.seqs())} of {total} results arrived after space came back:\n{log.read_text()[-3000:]}",
        )
        with acker.lock:
            worst = max(acker.deliveries.values())
        assert worst <= 2, f"a result was sent {worst} times"
        assert sorted(acker.seqs()) == list(range(1, total + 1))
        assert not acker.bad
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        acker.stop()
        broker.stop()


def test_max_db_mb_caps_database_and_wal(tmp_path: Path) -> None:
    cap = 1.0
    cfg = write_station(
        tmp_path,
        free_port(),  # no broker: nothing is acked, the outbox only grows
        [fast_instrument(total=5000, rate=5000.0)],
        acquisition={"full_retry_s": 0.1, "read_batch": 16, "include_raw": True},
        storage={"max_db_mb": cap},
    )
    with RunningService(cfg) as svc:
        worker = svc.workers[0]
        wait_for(
            lambda: "outbox full" in (worker.state.last_error or ""),
            60,
            f"the cap was never reached: {worker.state}",
        )
        db = svc.config.db_path
        files = {p.name: p.stat().st_size for p in (db, db.with_name("outbox.db-wal")) if p.exists()}
        assert sum(files.values()) <= cap * MB, f"database + WAL exceed storage.max_db_mb: {files}"
        assert not drained(svc, 1)
