"""`kuaijian gateway run` killed with SIGKILL at random moments: no result lost, no seq reused.

The gateway runs as a real subprocess against a deterministic fast source (records complete at a fixed
rate from a fixed instant, so every restart sees the same records), a real Mosquitto broker and the test
acker. After ≥ 20 kills a final run drains everything; the acker must then hold exactly seqs 1..N, one per
record, every signature valid, no seq ever seen with two different result ids.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from tests.gateway.acker import Acker
from tests.gateway.conftest import fast_instrument, write_station
from tests.helpers import Mosquitto, wait_for

REPO = Path(__file__).resolve().parents[2]
KILLS = 20


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("ab") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kuaijian.cli",
                "gateway",
                "run",
                "--config",
                str(config),
                "--log-level",
                "INFO",
            ],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=fh,
        )


def _started(log: Path, proc: subprocess.Popen[bytes], before: int) -> bool:
    return log.read_text().count("started:") > before or proc.poll() is not None


def _db_counts(db: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        depth = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return int(depth), int(counters["enqueued"]), int(counters["acked"])
    finally:
        conn.close()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_at_random_moments(tmp_path: Path, mosquitto: Mosquitto, acker: Acker) -> None:
    seed = int(os.environ.get("KJ_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    total, rate = 500, 40.0
    config = write_station(
        tmp_path,
        mosquitto.port,
        [fast_instrument(total=total, rate=rate)],
        link={"ack_timeout_s": 1.0},
        acquisition={"read_batch": 8},
    )
    db = tmp_path / "data" / "outbox.db"
    log = tmp_path / "gateway.log"
    forked = 0
    for i in range(KILLS):
        started_before = log.read_text().count("started:") if log.exists() else 0
        proc = _spawn(config, log)
        try:
            if i % 2:
                # Odd runs: a random moment after the service is up (reading, enqueueing, sending, acking).
                wait_for(partial(_started, log, proc, started_before), 30, f"gateway run {i} did not start")
            # The random moment of the kill (from spawn on even runs: also hits start-up and migrations).
            time.sleep(rng.uniform(0.05, 0.8))
            assert proc.poll() is None, (
                f"gateway exited early (seed {seed}, run {i}): {log.read_text()[-2000:]}"
            )
        finally:
            children = _children(proc.pid)  # the interpretation process, once forked
            forked += len(children)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            wait_for(
                lambda: not any(_alive(c) for c in children),  # noqa: B023 - waited for here
                10,
                f"run {i}: the gateway's child outlived it (seed {seed})",
            )
    assert db.exists(), "the gateway never created its outbox"
    assert forked, "no run had forked its interpretation process when it was killed"
    killed_at = _db_counts(db)
    # Final run: let it finish the instrument's memory and drain.
    started_before = log.read_text().count("started:")
    proc = _spawn(config, log)
    try:
        wait_for(partial(_started, log, proc, started_before), 30, "final gateway run did not start")
        assert proc.poll() is None, log.read_text()[-2000:]
        wait_for(
            lambda: _db_counts(db)[1] == total and _db_counts(db)[0] == 0,
            45,
            f"final run did not drain (seed {seed}, after kills: {killed_at}, now {_db_counts(db)})",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, log.read_text()[-2000:]
    depth, enqueued, acked = _db_counts(db)
    assert (depth, enqueued, acked) == (0, total, total), f"seed {seed}"
    assert not acker.bad, f"seed {seed}: {acker.bad[:5]}"
    wait_for(lambda: len(acker.seqs()) == total, 5, f"acker is missing results (seed {seed})")
    assert acker.seqs() == set(range(1, total + 1)), f"seed {seed}: seqs are not exactly 1..{total}"
    samples = [r["sample"]["id"] for r in acker.received.values()]
    assert len(set(samples)) == total, f"seed {seed}: a record was delivered under two seqs"
