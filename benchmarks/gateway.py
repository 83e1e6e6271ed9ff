"""End-to-end gateway throughput: results/s from instruments to application-acked, with gateway RSS.

Runs `kuaijian gateway run` as a subprocess (so its RSS is its own) against a real Mosquitto broker on a
random loopback port, with an in-process acker standing in for the cloud (verifies every signature, acks
by id). Scenarios, each starting from a backlog already in the instrument's memory:

- fast-source: the deterministic in-process plugin analyzer (tests/gateway/fast_source.py) — measures the
  gateway itself (interpretation, one-transaction enqueue with fsync, signing, batching, acks).
- gold-sim: the colloidal-gold simulator on a real pty (serial protocol, 1024-px profiles in chunks).
- enzyme-sim: the enzyme-inhibition simulator over Modbus TCP (11 results per 12-channel run).

Usage: .venv/bin/python benchmarks/gateway.py [--records N] [--gold N] [--enzyme-runs N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_sim.enzyme_modbus import EnzymeSimulator  # noqa: E402
from firmware_sim.gold_serial import GoldSimulator  # noqa: E402
from kuaijian_schema.kits import DEMO_KITS  # noqa: E402
from kuaijian_schema.specs import GB_T_5009_199  # noqa: E402
from tests.gateway.acker import Acker  # noqa: E402
from tests.gateway.conftest import KEY_BYTES, STATION, fast_instrument, write_station  # noqa: E402
from tests.helpers import Mosquitto, wait_for  # noqa: E402

LINK = {
    "ack_timeout_s": 30.0,
    "tick_s": 0.05,
    "max_messages_per_s": 2000.0,
    "batch_max": 100,
    "max_unacked": 4000,
}
ACQ = {"poll_interval_s": 0.1, "read_batch": 128}


@dataclass
class Row:
    scenario: str
    results: int
    seconds: float
    steady_seconds: float  # from the first result acked to the last
    peak_rss_mib: float
    messages: int

    @property
    def rate(self) -> float:
        return self.results / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_rate(self) -> float:
        return self.results / self.steady_seconds if self.steady_seconds > 0 else float("nan")


def _rss_peak_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _run(
    name: str, workdir: Path, broker: Mosquitto, instruments: list[dict[str, Any]], expected: int
) -> Row:
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_station(workdir, broker.port, instruments, link=LINK, acquisition=ACQ)
    acker = Acker(broker.port, STATION, KEY_BYTES)
    acker.start()
    wait_for(acker.connected.is_set, 10, "acker did not connect")
    log = (workdir / "gateway.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "kuaijian.cli",
            "gateway",
            "run",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=log,
        stderr=log,
    )
    peak = 0.0
    first: float | None = None
    try:

        def done() -> bool:
            nonlocal peak, first
            peak = max(peak, _rss_peak_mib(proc.pid))
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {(workdir / 'gateway.log').read_text()[-2000:]}")
            with acker.lock:
                got = len(acker.received)
            if got and first is None:
                first = time.perf_counter()
            return got >= expected

        wait_for(done, 600, f"{name}: not all {expected} results acked", interval=0.01)
        elapsed = time.perf_counter() - t0
        peak = max(peak, _rss_peak_mib(proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        acker.stop()
    if acker.bad:
        raise RuntimeError(f"{name}: bad payloads: {acker.bad[:3]}")
    steady = elapsed - ((first or t0) - t0)
    return Row(name, len(acker.received), elapsed, steady, peak, acker.messages)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000, help="fast-source records")
    ap.add_argument("--gold", type=int, default=400, help="gold-sim records")
    ap.add_argument("--enzyme-runs", type=int, default=60, help="enzyme-sim runs (11 results each)")
    args = ap.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kj-bench-gw-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(workdir=root)
        broker.start()
        try:
            scenarios: list[
                tuple[str, Callable[[Path], tuple[list[dict[str, Any]], int, Callable[[], None]]]]
            ] = []

            def fast(_d: Path) -> tuple[list[dict[str, Any]], int, Callable[[], None]]:
                return [fast_instrument(total=args.records, rate=1e9, t0=0.0)], args.records, lambda: None

            def gold(_d: Path) -> tuple[list[dict[str, Any]], int, Callable[[], None]]:
                sim = GoldSimulator(serial="GR-BENCH", seed=1)
                sim.start()
                kit = DEMO_KITS["imidacloprid-v1"]
                for n in range(args.gold):
                    sim.measure(kit.name, 1 + n % 8, f"S{n:05d}", "菠菜", 0.0 if n % 10 else 2.0)
                inst = {"name": "gold", "driver": "gold-serial", "port": sim.link_path}
                return [inst], args.gold, sim.stop

            def enzyme(_d: Path) -> tuple[list[dict[str, Any]], int, Callable[[], None]]:
                sim = EnzymeSimulator(
                    serial="EN-BENCH",
                    channels=12,
                    profile=GB_T_5009_199,
                    seed=2,
                    memory_runs=max(200, args.enzyme_runs),
                )
                for n in range(args.enzyme_runs):
                    sim.measure([f"R{n}-{c}" for c in range(1, 12)], ["白菜"] * 11)
                host, port = sim.start_tcp()
                inst = {"name": "enzyme", "driver": "enzyme-modbus", "host": host, "port": port}
                return [inst], args.enzyme_runs * 11, sim.stop

            scenarios = [("fast-source", fast), ("gold-sim (pty)", gold), ("enzyme-sim (Modbus TCP)", enzyme)]
            for i, (name, setup) in enumerate(scenarios):
                instruments, expected, cleanup = setup(root / f"s{i}")
                try:
                    row = _run(name, root / f"s{i}", broker, instruments, expected)
                finally:
                    cleanup()
                rows.append(row)
                print(f"  {name}: {row.results} results in {row.seconds:.2f}s", file=sys.stderr)
        finally:
            broker.stop()
    print()
    head = f"{'scenario':<26} {'results':>8} {'seconds':>8} {'results/s':>10} {'after 1st/s':>12}"
    print(head + f" {'messages':>9} {'peak RSS MiB':>13}")
    for r in rows:
        print(
            f"{r.scenario:<26} {r.results:>8} {r.seconds:>8.2f} {r.rate:>10.0f} {r.steady_rate:>12.0f}"
            f" {r.messages:>9} {r.peak_rss_mib:>13.1f}"
        )
    print(
        "\nseconds, results/s: gateway process start -> last result acked (includes start-up, opening the"
        "\ninstrument and reading its backlog); after 1st/s: from the first acked result to the last."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
