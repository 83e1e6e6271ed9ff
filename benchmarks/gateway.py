"""End-to-end gateway throughput: results/s from instruments to application-acked, beside a raw MQTT link.

Runs `kuaijian gateway run` as a subprocess (so its RSS is its own) against a real Mosquitto broker on a
random loopback port, with a lean "cloud" in this process (`Cloud`: splits each message, acks every result
at once by id and seq, as cloud/ingest.py does; every signature and every `Result` is checked after the clock
stops). Scenarios, each starting
from a backlog already in the instrument's memory:

- fast-source: the deterministic in-process plugin analyzer (tests/gateway/fast_source.py) — measures the
  gateway itself (interpretation, one-transaction enqueue with fsync, signing, batching, acks).
- raw paho link: the SAME signed payloads fast-source delivered, published by a bare paho client in another
  process (`--raw-publish`) as `{"results": [...]}` batches of `batch_max`, over the same broker to the same
  cloud, done when that client has received the application ack of every result. No gateway work at all:
  the ceiling the gateway's link is compared with (the ratio is printed; both figures come from one run).
- gold-sim: the colloidal-gold simulator on a real pty (serial protocol, 1024-px profiles in chunks).
- enzyme-sim: the enzyme-inhibition simulator over Modbus TCP (11 results per 12-channel run).

Rates: "total" from the gateway process start to the last ack it applied (start-up, opening the instrument,
reading its backlog included); "steady" from the first result reaching the cloud to the last ack applied
(the gateway: its outbox's `acked` counter reaching the total; the raw link: its client holding every ack).

The fast-source run and the raw link are run `--pairs` times (default 3), one after the other, and the
ratio reported is the median of the pairs' ratios: on a shared 2-core VM one run of either varies by ±10 %.

With `--sides`, the two halves of the gateway are also timed apart on one outbox: the acquisition side
alone (a cloud that never acks: the gateway reads, interprets, signs and stores every record, sending only its
first window; first result stored → all stored) and then the delivery side alone (a gateway restarted on that
full outbox, nothing left to read, delivering it all to an acking cloud) — whether they cost the cores one
after the other (the combined rate near 1/(1/a + 1/d)) or run side by side (near the smaller of the two).

Usage: .venv/bin/python benchmarks/gateway.py [--records N] [--pairs N] [--gold N] [--enzyme-runs N] [--sides]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402

from firmware_sim.enzyme_modbus import EnzymeSimulator  # noqa: E402
from firmware_sim.gold_serial import GoldSimulator  # noqa: E402
from kuaijian_schema.kits import DEMO_KITS  # noqa: E402
from kuaijian_schema.mqtt_client import make_client  # noqa: E402
from kuaijian_schema.specs import GB_T_5009_199  # noqa: E402
from kuaijian_schema.wire import Result, canonical_json, split_result_payload, topic, verify_payload  # noqa: E402
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
INFLIGHT = max(20, min(1000, int(LINK["max_unacked"])))  # as gateway/link.py sets it on its client


class Cloud:
    """Stands in for the cloud ingest: acks every result of a message by id and seq, right away (no storage).

    Keeps each message's bytes; `check()` verifies every signature and validates every `Result` afterwards,
    so the checking costs nothing while the clock runs.
    """

    def __init__(self, port: int, *, ack: bool = True) -> None:
        self.ack = ack  # False: receives and keeps, never acks (the acquisition side alone)
        self.lock = threading.Lock()
        self.payloads: list[bytes] = []
        self.results = 0
        self.messages = 0
        self.first: float | None = None  # time.monotonic() of the first result
        self.connected = threading.Event()
        self.client = make_client(client_id="bench-cloud")
        self.client.max_inflight_messages_set(INFLIGHT)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.port = port

    def start(self) -> None:
        """Connect; the cyclic garbage collector of this process is off until `stop`. The results earlier
        runs left here (tens of thousands of dicts, kept for their checks) make a full collection stall this
        process 0.04-0.3 s; measured, one fell inside two of three raw-link runs (0.09-0.10 s of ~2.6 s: the
        raw link looked up to 4 % slower than it is, the ratio that much higher). What earlier runs left is
        collected first, before the clock starts."""
        gc.collect()
        gc.disable()
        self.client.connect("127.0.0.1", self.port, 30)
        self.client.loop_start()
        wait_for(self.connected.is_set, 10, "the benchmark's cloud did not connect")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        gc.enable()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        client.subscribe(topic(STATION, "result"), 1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        data = bytes(msg.payload)
        items = split_result_payload(data)
        ack = {"ids": [item["id"] for item in items], "seqs": [item["seq"] for item in items], "rejected": []}
        if self.ack:
            client.publish(topic(STATION, "ack"), json.dumps(ack, separators=(",", ":")), qos=1)
        with self.lock:
            if self.first is None:
                self.first = time.monotonic()
            self.payloads.append(data)
            self.results += len(items)
            self.messages += 1

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return [item for data in self.payloads for item in split_result_payload(data)]

    def check(self, expected: int) -> list[dict[str, Any]]:
        """Every result (first copy per seq): each signature valid, each a `Result`, `expected` distinct seqs."""
        by_seq: dict[int, dict[str, Any]] = {}
        for item in self.items():
            if not verify_payload(item, KEY_BYTES):
                raise RuntimeError(f"bad signature on seq {item.get('seq')}")
            res = Result.model_validate(item)
            first = by_seq.setdefault(res.seq, item)
            if first["id"] != item["id"]:
                raise RuntimeError(f"seq {res.seq} reused for ids {first['id']} and {item['id']}")
        if len(by_seq) != expected:
            raise RuntimeError(f"{len(by_seq)} distinct results arrived, {expected} expected")
        return [by_seq[s] for s in sorted(by_seq)]


@dataclass
class Row:
    scenario: str
    results: int
    total_s: float | None  # process start → last ack applied (None: not a gateway run)
    steady_s: float  # first result at the cloud → last ack applied
    messages: int
    peak_rss_mib: float | None
    stored_s: float | None = None  # process start → every result in the outbox
    cpu_s: float | None = None  # the gateway's user + system CPU, start-up included
    child_cpu_s: float | None = None  # its interpretation process's (None: it had none)
    child_rss_mib: float | None = None  # peak RSS of the interpretation process
    pss_mib: float | None = None  # peak PSS of the gateway and its interpretation process together

    @property
    def total_rate(self) -> float | None:
        return None if self.total_s is None else self.results / self.total_s

    @property
    def steady_rate(self) -> float:
        return self.results / self.steady_s if self.steady_s > 0 else float("nan")


def _rss_peak_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _children(pid: int) -> list[int]:
    """The process ids of `pid`'s children (the gateway's interpretation process)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of `pid` now, MiB: PSS counts the pages a forked child still shares with its parent once,
    split between them (NaN when unreadable)."""
    rss = pss = float("nan")
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, pss


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Counters:
    """The gateway outbox's counters, read on one read-only connection (opened once the file exists)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.conn: sqlite3.Connection | None = None

    def counters(self) -> dict[str, int]:
        """Empty before the database exists and is migrated."""
        try:
            if self.conn is None:
                if not self.db.exists():
                    return {}
                self.conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1.0)
            return {str(k): int(v) for k, v in self.conn.execute("SELECT name, value FROM counters")}
        except sqlite3.Error:
            return {}  # not migrated yet

    def __enter__(self) -> _Counters:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()


def run_gateway(
    name: str,
    workdir: Path,
    broker: Mosquitto,
    instruments: list[dict[str, Any]],
    expected: int,
    *,
    acks: bool = True,
) -> tuple[Row, list[dict[str, Any]]]:
    """One gateway run until it applied an ack for all `expected` results — or, `acks` False (a cloud that
    never acks: the acquisition side alone), until all are in its outbox; its steady time is then first
    result stored → all stored, and the results are left in the outbox for a run that delivers them."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_station(workdir, broker.port, instruments, link=LINK, acquisition=ACQ)
    db = workdir / "data" / "outbox.db"
    cloud = Cloud(broker.port, ack=acks)
    cloud.start()
    log = (workdir / "gateway.log").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "kuaijian.cli",
            "gateway",
            "run",
            *("--config", str(config)),
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=log,
        stderr=log,
    )
    stored: float | None = None  # when every result was in the outbox
    first_stored: float | None = None  # when the first was
    child_rss: float | None = None
    pss = 0.0
    child_cpu: float | None = None
    try:

        def sample_children() -> None:
            nonlocal child_rss, pss, child_cpu
            total = _memory_mib(proc.pid)[1]
            for child in _children(proc.pid):
                child_pss = _memory_mib(child)[1]
                child_rss = max(child_rss or 0.0, _rss_peak_mib(child))  # (the kernel's high-water mark)
                total += child_pss
                child_cpu = _cpu_s(child)
            pss = max(pss, total)

        polls = 0

        def done() -> bool:
            nonlocal stored, first_stored, polls
            polls += 1
            if polls % 10 == 0:  # PSS every 0.1 s (reading smaps walks the page tables of both processes)
                sample_children()
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {(workdir / 'gateway.log').read_text()[-2000:]}")
            counters = outbox.counters()
            if first_stored is None and counters.get("enqueued", 0) > 0:
                first_stored = time.monotonic()
            if stored is None and counters.get("enqueued", 0) >= expected:
                stored = time.monotonic()
            return counters.get("acked", 0) >= expected if acks else stored is not None

        with _Counters(db) as outbox:
            what = "apply acks for" if acks else "store"
            wait_for(done, 600, f"{name}: the gateway did not {what} all {expected} results", interval=0.01)
        end = time.monotonic()
        peak = _rss_peak_mib(proc.pid)  # (the kernel's high-water mark)
        sample_children()
        cpu = _cpu_s(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        cloud.stop()
    items = cloud.check(expected) if acks else []
    first = cloud.first if cloud.first is not None else t0
    if not acks:  # the acquisition side: first result stored -> all stored
        first, end = (first_stored or t0), (stored or end)
    stored_s = None if stored is None else stored - t0
    return (
        Row(
            name,
            expected,
            end - t0,
            end - first,
            cloud.messages,
            peak,
            stored_s,
            cpu,
            child_cpu,
            child_rss,
            pss,
        ),
        items,
    )


@contextlib.contextmanager
def fresh_broker(workdir: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of its own for one gateway run (and the raw link compared with it): every run starts a
    gateway of the same station from an empty outbox (seqs from 1), and the gateway's session is persistent
    (MQTT clean_start=False) — on a broker shared between runs, acks queued for the last run would reach the
    next one."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(workdir=workdir, extra_conf="set_tcp_nodelay true")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def run_raw(workdir: Path, broker: Mosquitto, items: list[dict[str, Any]], batch: int, rounds: int) -> Row:
    """The same signed results over a bare paho publisher (another process) to the same cloud, `rounds`
    times over (a pass takes a fraction of a second: one pass alone is timed too coarsely)."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "payloads.jsonl"
    source.write_bytes(b"".join(canonical_json(item) + b"\n" for item in items))
    cloud = Cloud(broker.port)
    cloud.start()
    try:
        out = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable,
                __file__,
                "--raw-publish",
                str(source),
                *("--port", str(broker.port), "--batch", str(batch), "--rounds", str(rounds)),
            ],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            timeout=600,
            check=True,
        )
    finally:
        cloud.stop()
    end = float(out.stdout.decode().split()[-1])  # the publisher's time.monotonic() at its last ack
    cloud.check(len(items))
    first = cloud.first if cloud.first is not None else end
    return Row("raw paho link (batches)", rounds * len(items), None, end - first, cloud.messages, None)


def raw_publish(source: Path, port: int, batch: int, rounds: int) -> int:
    """Publish `source`'s payloads (one per line) `rounds` times as batches of `batch`, QoS 1; wait for the
    application ack of every result sent; print time.monotonic() at the last one."""
    payloads = source.read_bytes().splitlines()
    pending = [rounds * len(payloads)]
    all_acked = threading.Event()
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        ids = json.loads(msg.payload)["ids"]
        with lock:
            pending[0] -= len(ids)
            if pending[0] <= 0:
                all_acked.set()

    client = make_client(client_id="bench-raw-publisher")
    client.max_inflight_messages_set(INFLIGHT)
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic(STATION, "ack"), 1)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    try:
        wait_for(subscribed.is_set, 10, "raw publisher: no SUBACK")
        name = topic(STATION, "result")
        bodies = [
            chunk[0] if len(chunk) == 1 else b'{"results":[' + b",".join(chunk) + b"]}"
            for chunk in (payloads[i : i + batch] for i in range(0, len(payloads), batch))
        ]
        for _ in range(rounds):
            for body in bodies:
                client.publish(name, body, qos=1)
        if not all_acked.wait(600):
            raise RuntimeError(f"raw publisher: {pending[0]} results never acked")
        end = time.monotonic()
    finally:
        client.disconnect()
        client.loop_stop()
    print(f"{end!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=40000, help="fast-source records")
    ap.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="fast-source and raw-link runs, alternated (the median ratio is reported)",
    )
    ap.add_argument("--gold", type=int, default=400, help="gold-sim records")
    ap.add_argument("--enzyme-runs", type=int, default=60, help="enzyme-sim runs (11 results each)")
    ap.add_argument("--raw-publish", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=int(LINK["batch_max"]), help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=5, help="passes of the raw link over the payloads")
    ap.add_argument(
        "--sides",
        action="store_true",
        help="also time the acquisition side alone (a cloud that never acks) and the delivery side alone"
        " (the same full outbox delivered by a restarted gateway)",
    )
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be at least 1")
    if args.raw_publish is not None:
        return raw_publish(args.raw_publish, args.port, args.batch, args.rounds)
    rows: list[Row] = []
    pairs: list[tuple[Row, Row]] = []  # (fast-source, raw paho link) run one after the other
    with tempfile.TemporaryDirectory(prefix="kj-bench-gw-") as tmp:
        root = Path(tmp)
        for i in range(1, args.pairs + 1):  # alternated: a pair ran in the same minute of a noisy machine
            with fresh_broker(root / f"broker{i}") as broker:
                fast, items = run_gateway(
                    f"fast-source #{i}",
                    root / f"fast{i}",
                    broker,
                    [fast_instrument(total=args.records, rate=1e9, t0=0.0)],
                    args.records,
                )
                print(f"  fast-source #{i}: {fast.results} results in {fast.total_s:.2f}s", file=sys.stderr)
                raw = run_raw(root / f"raw{i}", broker, items, int(LINK["batch_max"]), args.rounds)
            raw.scenario = f"raw paho link #{i}"
            print(f"  raw paho link #{i}: {raw.results} results in {raw.steady_s:.2f}s", file=sys.stderr)
            rows += [fast, raw]
            pairs.append((fast, raw))

        sides: tuple[Row, Row] | None = None
        if args.sides:  # one outbox: filled by a gateway whose cloud never acks, then delivered by another
            source = [fast_instrument(total=args.records, rate=1e9, t0=0.0)]
            with fresh_broker(root / "broker-acquisition") as broker:
                acquisition, _ = run_gateway(
                    "acquisition alone", root / "sides", broker, source, args.records, acks=False
                )
            with fresh_broker(root / "broker-delivery") as broker:
                delivery, _ = run_gateway("delivery alone", root / "sides", broker, source, args.records)
            delivery.stored_s = None  # (its outbox was full from the start)
            rows += [acquisition, delivery]
            sides = (acquisition, delivery)
            print(
                f"  sides: {acquisition.steady_rate:.0f} / {delivery.steady_rate:.0f} results/s",
                file=sys.stderr,
            )

        def gold() -> tuple[list[dict[str, Any]], int, Callable[[], None]]:
            sim = GoldSimulator(serial="GR-BENCH", seed=1)
            sim.start()
            kit = DEMO_KITS["imidacloprid-v1"]
            for n in range(args.gold):
                sim.measure(kit.name, 1 + n % 8, f"S{n:05d}", "菠菜", 0.0 if n % 10 else 2.0)
            return [{"name": "gold", "driver": "gold-serial", "port": sim.link_path}], args.gold, sim.stop

        def enzyme() -> tuple[list[dict[str, Any]], int, Callable[[], None]]:
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

        for name, setup in (("gold-sim (pty)", gold), ("enzyme-sim (Modbus TCP)", enzyme)):
            instruments, expected, cleanup = setup()
            if expected == 0:
                cleanup()
                continue
            try:
                with fresh_broker(root / f"broker-{name.split()[0]}") as broker:
                    row, _ = run_gateway(name, root / name.split()[0], broker, instruments, expected)
            finally:
                cleanup()
            rows.append(row)
            print(f"  {name}: {row.results} results in {row.total_s:.2f}s", file=sys.stderr)
    print()
    print(
        f"{'scenario':<26} {'results':>8} {'stored s':>8} {'total s':>8} {'total/s':>8} {'steady s':>9}"
        f" {'steady/s':>9} {'messages':>9} {'RSS MiB':>8} {'CPU s':>6} {'child RSS':>9} {'child CPU':>9}"
        f" {'PSS both':>8}"
    )

    def num(v: float | None, fmt: str = ".1f") -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        steady = f"{r.steady_rate:.0f}" if r.messages > 1 else "-"  # one message: no steady state to time
        print(
            f"{r.scenario:<26} {r.results:>8} {num(r.stored_s, '.2f'):>8} {num(r.total_s, '.2f'):>8}"
            f" {num(r.total_rate, '.0f'):>8} {r.steady_s:>9.2f} {steady:>9} {r.messages:>9}"
            f" {num(r.peak_rss_mib):>8} {num(r.cpu_s, '.2f'):>6} {num(r.child_rss_mib):>9}"
            f" {num(r.child_cpu_s, '.2f'):>9} {num(r.pss_mib):>8}"
        )
    ratios = sorted(f.steady_rate / r.steady_rate for f, r in pairs)
    fasts = [f for f, _r in pairs]

    def highest(values: Iterable[float | None]) -> float | None:
        """The largest of the figures measured (None when none was: e.g. no interpretation process)."""
        return max((v for v in values if v is not None), default=None)

    print(
        f"\nfast-source / raw paho link (steady results/s, same payloads, same broker, batches of"
        f" {LINK['batch_max']}): {statistics.median(ratios):.1%}, the median of {len(ratios)} alternated"
        f" pairs ({', '.join(f'{x:.1%}' for x in ratios)}); gateway peak RSS"
        f" {num(highest(f.peak_rss_mib for f in fasts))} MiB, its interpretation process"
        f" {num(highest(f.child_rss_mib for f in fasts))} MiB, PSS of both"
        f" {num(highest(f.pss_mib for f in fasts))} MiB (the highest of the pairs)"
        "\nstored: gateway process start -> every result in its outbox (the acquisition side); CPU s: the"
        "\ngateway's user + system CPU over its whole run (start-up included; above 'total s': several cores);"
        "\nchild: the gateway's interpretation process (acquisition.interpret_process), its RSS counting the"
        "\npages it shares with the gateway; PSS both: the peak proportional set size of the two together"
        "\n(shared pages counted once); total: gateway process start -> last ack applied (start-up, opening"
        "\nthe instrument and reading its backlog included); steady: first result at the cloud -> last ack."
    )
    if sides is not None:
        a, d = (r.steady_rate for r in sides)
        print(
            f"\nsides: acquisition alone {a:.0f} results/s (first result stored -> all stored, no acks), delivery"
            f" alone {d:.0f} results/s (the same outbox, full, delivered by a restarted gateway); one after the"
            f" other on the same cores they would make 1/(1/{a:.0f} + 1/{d:.0f}) = {1 / (1 / a + 1 / d):.0f}"
            f" results/s, side by side at most {min(a, d):.0f}; fast-source measured"
            f" {statistics.median(f.steady_rate for f in fasts):.0f} (median of the pairs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
