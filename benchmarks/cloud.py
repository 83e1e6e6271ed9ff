"""Cloud ingest benchmark: sustained results/s through a real Mosquitto into SQLite and PostgreSQL.

Starts Mosquitto on a free loopback port, creates a fresh database (a SQLite file, or a database on a private
PostgreSQL server from Debian's package, fsync and synchronous_commit on) with S enrolled stations (up to 100 per
village), runs W ingest workers (MQTT 5 shared subscription; in this process, or with --procs as separate
`kuaijian cloud ingest` processes), and starts P publisher processes that share the stations out (one MQTT
connection each, publishing on every one of its stations' topics, like gateways behind one NAT). Each
publisher pre-signs R results per station, publishes them as messages of B results (QoS 1), round-robin over
its stations, and waits until every id has come back in an application ack. The figure is total results /
(first publish → last ack), i.e. durably committed and acknowledged.

In the same run, for each engine, the raw anchors: the very rows ingest stored, written again into a copy of
the results table (same indexes) in batches of B rows with one commit per batch — PostgreSQL: COPY, and a
batched INSERT (psycopg's pipelined executemany, bound on the server); SQLite: executemany — the ceiling of
the database alone. With --procs the CPU seconds of each ingest worker, the database server and the broker
over the run are reported as shares of one core, and on PostgreSQL what the server's backends inside a
transaction were doing (pg_stat_activity sampled every 20 ms: running, waiting for the client, for a lock,
for the WAL), to say what bounds each point.

Usage: .venv/bin/python benchmarks/cloud.py [--engine sqlite postgresql] [--stations 4] [--publishers 4]
       [--results 5000] [--batch 50] [--workers 1 2 4] [--procs]

Issue 16 measurements (docs/scaling.md has the figures):
  --per-message --stations 2000 --results 20000   one result per message from many stations: `process_batch`
      of the tree issue 16 measured (2fdcc52, loaded from git) and of this tree on the same messages, same run
  --ack-latency --stations 400                    `kuaijian fleet` (6 results/min per station) through
      Mosquitto with set_tcp_nodelay into one ingest worker: application-ack latency percentiles
  --connections 5000 [--nofile 1024]              5,000 stations with their own logins connect to Mosquitto
      running the files `kuaijian cloud mosquitto-auth` writes, at the generated descriptor limit (or --nofile)
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# This script is itself named cloud.py: drop its directory from sys.path so `import cloud` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))  # tests.postgres: the private PostgreSQL server the tests use

import paho.mqtt.client as mqtt  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from cloud import schema  # noqa: E402
from cloud.clock import SystemClock  # noqa: E402
from cloud.db import dispose_engine, open_db, transaction  # noqa: E402
from cloud.enrol import enrol_station  # noqa: E402
from cloud.grid import import_grid_csv  # noqa: E402
from cloud.ingest_worker import IngestWorker  # noqa: E402
from cloud.schema import columns_for  # noqa: E402
from cloud.settings import Settings, db_setting  # noqa: E402
from kuaijian_schema import new_result_id, sign_payload  # noqa: E402
from kuaijian_schema.mqtt_client import set_tcp_nodelay  # noqa: E402
from tests.postgres import start_postgres  # noqa: E402

VILLAGE = "370214101203"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(
    workdir: Path, port: int, extra: str = "", nofile: int | None = None, anonymous: bool = True
) -> subprocess.Popen[bytes]:
    """Mosquitto on `port` with `extra` config lines; `nofile`: its RLIMIT_NOFILE (as systemd's LimitNOFILE)."""
    import resource

    conf = workdir / "mosquitto.conf"
    head = f"listener {port} 127.0.0.1\n" + ("allow_anonymous true\n" if anonymous else "")
    conf.write_text(head + "persistence false\nmax_queued_messages 1000000\n" + extra)
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with (workdir / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own config, a fixed executable
            [exe, "-c", str(conf)], stdout=log, stderr=log, preexec_fn=limit
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return proc
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def make_results(station: str, key: bytes, n: int) -> list[dict[str, Any]]:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for seq in range(1, n + 1):
        doc: dict[str, Any] = {
            "id": str(new_result_id()),
            "seq": seq,
            "station": station,
            "instrument": {"serial": "GR-0001", "model": "KJ-G8", "driver": "gold-serial"},
            "sample": {"id": f"S-{seq}", "product": "菠菜", "producer": "李家农场"},
            "method": "gold",
            "analyte": "imidacloprid",
            "channel": 1 + seq % 8,
            "measured_at": (t0 + timedelta(seconds=seq)).isoformat(),
            "verdict": "negative",
            "values": {"ratio": 1.2, "control_signal": 3.4, "test_signal": 4.1},
            "qc": [],
            "algorithm": "gold/1.0",
            "config_version": "1",
            "operator": "op1",
        }
        doc["sig"] = sign_payload(doc, key)
        out.append(doc)
    return out


def publisher(
    port: int, stations: dict[str, str], n: int, batch: int, ready: Any, go: Any, out: Any, name: str
) -> None:
    """One process publishing for `stations` (id → key hex) over one MQTT connection, like many gateways
    behind one NAT: pre-signs `n` results per station, publishes them as messages of `batch` results,
    round-robin over its stations, and waits for every id's application ack."""
    payloads = []
    per_station = {}
    for station, key_hex in stations.items():
        results = make_results(station, bytes.fromhex(key_hex), n)
        per_station[station] = [
            json.dumps({"results": results[i : i + batch]}).encode() for i in range(0, n, batch)
        ]
        del results
    for k in range(-(-n // batch)):
        payloads += [(f"kj/v1/{s}/result", per_station[s][k]) for s in stations if k < len(per_station[s])]
    pending = n * len(stations)
    done = threading.Event()
    lock = threading.Lock()
    last_ack = 0.0

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal last_ack, pending
        ids = json.loads(msg.payload)["ids"]
        with lock:
            pending -= len(ids)
            if pending <= 0:
                last_ack = time.monotonic()
                done.set()

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}", protocol=mqtt.MQTTv5)
    set_tcp_nodelay(client)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe([(f"kj/v1/{s}/ack", 1) for s in stations])
    subscribed.wait(10)
    ready.put(name)
    go.wait()
    first = time.monotonic()
    cpu0 = (
        time.process_time()
    )  # this publisher's CPU (all its threads) from the first publish to the last ack
    for topic_name, p in payloads:
        client.publish(topic_name, p, qos=1)
    ok = done.wait(600)
    client.disconnect()
    client.loop_stop()
    end = last_ack if ok else time.monotonic()
    out.put((name, n * len(stations) - max(pending, 0), first, end, ok, time.process_time() - cpu0))


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _pg_pids(server: Any) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(server.data) in cmd:
            pids.append(proc.pid)
            pids.extend(c.pid for c in proc.children(recursive=True))
    return pids


def _ingest_procs(settings: Settings, n: int, tmp: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = (tmp / f"ingest-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(  # noqa: S603 - our own CLI
                [
                    sys.executable,
                    "-m",
                    "kuaijian.cli",
                    "cloud",
                    "ingest",
                    "--db",
                    settings.database,
                    "--broker",
                    str(settings.broker_url),
                    "--client-id",
                    f"bench-ingest-{i}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def _wait_subscribed(port: int, station: str, procs: int, db: Any) -> None:
    """Every worker process is subscribed once statuses sent N times are all stored (each worker takes some
    of them; a status is idempotent): send 20 per worker and wait until the station shows the last one."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stamp = datetime.now(UTC).isoformat()
            for _ in range(20 * procs):
                client.publish(
                    f"kj/v1/{station}/status",
                    json.dumps({"station": station, "state": "online", "at": stamp}),
                    qos=1,
                )
            time.sleep(1.0)  # benchmark pacing: the statuses travel through the broker to the workers
            got = db.execute("SELECT status_at FROM stations WHERE id = ?", [station]).fetchone()[0]
            if got == stamp:
                return
        raise RuntimeError("ingest workers did not subscribe")
    finally:
        client.disconnect()
        client.loop_stop()


def _anchor_table(db: Any) -> None:
    """An empty copy of `results` with the same indexes: results_anchor."""
    db.execute("DROP TABLE IF EXISTS results_anchor")
    if db.is_postgres:
        db.execute("CREATE TABLE results_anchor (LIKE results INCLUDING DEFAULTS INCLUDING INDEXES)")
        return
    ddl = db.scalar("SELECT sql FROM sqlite_master WHERE name = 'results'")
    db.execute(ddl.replace("CREATE TABLE results", "CREATE TABLE results_anchor", 1))
    for (idx,) in db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'results' AND sql IS NOT NULL"
    ).fetchall():
        db.execute(idx.replace(" ON results", " ON results_anchor").replace("INDEX idx_", "INDEX anchor_"))


def raw_anchor(db: Any, batch: int) -> dict[str, float]:
    """Rows/s writing the rows ingest stored into a copy of `results` (same indexes), `batch` rows per commit:
    "copy" (PostgreSQL: COPY) and "insert" (a batched INSERT: psycopg's pipelined executemany bound on the
    server; SQLite: executemany)."""
    cols = [c for c in columns_for(schema.results, db.dialect) if c != "rowid"]
    rows = [tuple(r) for r in db.execute(f"SELECT {', '.join(cols)} FROM results ORDER BY id").fetchall()]  # noqa: S608
    names = ", ".join(cols)
    marks = ", ".join("%s" if db.is_postgres else "?" for _ in cols)
    insert = f"INSERT INTO results_anchor ({names}) VALUES ({marks})"  # noqa: S608 - our own columns
    out: dict[str, float] = {}
    for how in ("copy", "insert") if db.is_postgres else ("insert",):
        _anchor_table(db)
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            with transaction(db, stations=[]):
                if how == "copy":
                    with db.raw.cursor().copy(f"COPY results_anchor ({names}) FROM STDIN") as copy:
                        for row in chunk:
                            copy.write_row(row)
                elif db.is_postgres:
                    psycopg.Cursor(db.raw).executemany(insert, chunk)
                else:
                    db.executemany(insert, chunk)
        out[how] = len(rows) / (time.perf_counter() - start)
        db.execute("DROP TABLE results_anchor")
    return out


class WaitSampler:
    """Samples pg_stat_activity of the benchmark's database every 20 ms from its own connection: what the
    backends inside a transaction were doing — running (``active:cpu``), waiting for the client in the middle
    of a transaction (``idle in transaction:Client:ClientRead``), for a lock (``…:Lock:advisory``, ``…:Lock:
    tuple``), for the WAL (``…:IO:WALSync``). Backends outside any transaction (pooled, idle) are left out."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.counts: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conninfo = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend' AND state <> 'idle'"
                ).fetchall()
                self.samples += 1
                for state, kind, event in rows:
                    key = f"{state}:{kind}:{event}" if kind else f"{state}:cpu"
                    self.counts[key] = self.counts.get(key, 0) + 1

    def top(self, n: int = 4) -> str:
        """The commonest backend states, as backends-in-that-state per sample."""
        best = sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]
        return " ".join(f"{k}={v / max(self.samples, 1):.2f}" for k, v in best)


def _station_ids(n: int) -> list[str]:
    """`n` station ids, up to 100 per village."""
    return [f"{VILLAGE[:9]}{i // 100:03d}-{i % 100:02d}" for i in range(n)]


def _grid_csv(ids: list[str]) -> str:
    villages = sorted({s[:12] for s in ids})
    return "level,code,name,parent_code\ncounty,370214,县,\ntown,370214101,镇,370214\n" + "".join(
        f"village,{v},村{v[-3:]},370214101\n" for v in villages
    )


def run(
    stations: int, results: int, batch: int, workers: int, engine: str = "sqlite", pg: Any = None,
    procs: bool = False, publishers: int = 4,
) -> dict[str, Any]:  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="kj-bench-cloud-"))
    port = free_port()
    broker = start_mosquitto(tmp, port)
    workers_p: list[subprocess.Popen[bytes]] = []
    try:
        target = (
            str(tmp / "cloud.db")
            if engine == "sqlite"
            else pg.create_database(f"bench_{time.monotonic_ns()}")
        )
        settings = Settings(
            **db_setting(target), broker_url=f"mqtt://127.0.0.1:{port}", scheduler_enabled=False
        )
        db = open_db(settings.database)
        ids = _station_ids(stations)
        import_grid_csv(db, _grid_csv(ids))
        now = SystemClock().now()
        keys = {s: enrol_station(db, s, s[:12], now).key_hex for s in ids}
        ingest = (
            []
            if procs
            else [
                IngestWorker(
                    settings.model_copy(update={"ingest_client_id": f"bench-ingest-{n}"}), SystemClock()
                )
                for n in range(workers)
            ]
        )
        workers_p = _ingest_procs(settings, workers, tmp) if procs else []
        for w in ingest:
            w.start()
        for w in ingest:
            if not w.link.connected.wait(10):
                raise RuntimeError("ingest did not connect")
        if procs:
            _wait_subscribed(port, next(iter(keys)), workers, db)
        cpu_pids = {
            "ingest": [p.pid for p in workers_p] or [os.getpid()],
            "database": _pg_pids(pg) if engine == "postgresql" else [],
            "broker": [broker.pid],
        }
        ctx = mp.get_context("fork")
        go = ctx.Event()
        out: Any = ctx.Queue()
        ready: Any = ctx.Queue()
        n_pub = max(1, min(publishers, stations))
        shares = [dict(list(keys.items())[k::n_pub]) for k in range(n_pub)]
        pubs = [
            ctx.Process(
                target=publisher, args=(port, share, results, batch, ready, go, out, f"pub{k}"), daemon=True
            )
            for k, share in enumerate(shares)
        ]
        for p in pubs:
            p.start()
        for _ in pubs:  # every publisher has signed its results and subscribed to its acks
            ready.get(timeout=600)
        per_worker0 = [_cpu([pid]) for pid in cpu_pids["ingest"]]
        cpu0 = {k: _cpu(v) for k, v in cpu_pids.items()}
        sampler = WaitSampler(target) if engine == "postgresql" else None
        if sampler is not None:
            sampler.__enter__()
        go.set()
        host0 = psutil.cpu_times()
        try:
            rows = [out.get(timeout=900) for _ in pubs]
        finally:
            if sampler is not None:
                sampler.__exit__()
        host1 = psutil.cpu_times()
        per_worker = [_cpu([pid]) - c for pid, c in zip(cpu_pids["ingest"], per_worker0, strict=True)]
        for p in pubs:
            p.join(10)
        total = sum(r[1] for r in rows)
        start = min(r[2] for r in rows)
        end = max(r[3] for r in rows)
        cpu = {k: (_cpu(v) - cpu0[k]) / (end - start) for k, v in cpu_pids.items()}
        cpu_workers = [c / (end - start) for c in per_worker]
        # the whole machine (publishers and anything else running included): busy cores and cores in I/O wait
        wall = sum(host1) - sum(host0)
        cores = psutil.cpu_count() or 1
        cpu["publishers"] = sum(r[5] for r in rows) / (end - start)
        cpu["host"] = cores * (wall - (host1.idle - host0.idle) - (host1.iowait - host0.iowait)) / wall
        cpu["iowait"] = cores * (host1.iowait - host0.iowait) / wall
        for w in ingest:
            w.stop()
        for p in workers_p:
            p.terminate()
            p.wait(10)
        stored = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        anchor = raw_anchor(db, batch)
        db.close()
        dispose_engine(settings.database)
        return {
            "engine": engine,
            "anchor": anchor,
            "cpu": cpu,
            "cpu_workers": cpu_workers,
            "waits": sampler.top() if sampler is not None else "",
            "stations": stations,
            "workers": workers,
            "batch": batch,
            "results": total,
            "stored": stored,
            "seconds": end - start,
            "rate": total / (end - start),
            "all_acked": all(r[4] for r in rows),
        }
    finally:
        for p in workers_p:  # after a failure: no ingest process outlives the run
            if p.poll() is None:
                p.kill()
                p.wait(10)
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


ANCHOR_COMMIT = "2fdcc52"
"""The tree issue 16 measured (one result per message saturated one ingest at ~2,100–2,300 results/s)."""


def _module_at(commit: str, path: str, name: str) -> Any:
    """The file `path` as it was at `commit`, loaded from git as module `name`."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(  # noqa: S603 - fixed arguments
        ["git", "-C", str(root), "show", f"{commit}:{path}"],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # noqa: S102
    return module


def _anchor_module() -> Any:
    """The ingest issue 16 measured: `cloud/ingest.py` as it was at ANCHOR_COMMIT with the wire functions it
    called (decode, verify, the models) from `kuaijian_schema/wire.py` of the same commit, loaded from git
    (runs on today's database layer and case rules)."""
    wire = _module_at(ANCHOR_COMMIT, "kuaijian_schema/wire.py", "wire_anchor")
    # that tree imported sqlite_utils for its annotations only (never evaluated: `from __future__ import
    # annotations`); the project no longer depends on it
    sys.modules.setdefault("sqlite_utils", types.ModuleType("sqlite_utils"))
    module = _module_at(ANCHOR_COMMIT, "cloud/ingest.py", "ingest_anchor")
    names = ("Ack", "Rejection", "Result", "Status", "split_result_payload", "verify_payload", "parse_topic")
    for name in names:
        module.__dict__[name] = getattr(wire, name)
    return module


def per_message(stations: int, messages: int, batch: int, rounds: int) -> dict[str, Any]:
    """One result per MQTT message, many stations per batch: `process_batch` of the anchor tree and of this
    tree on the same signed messages, alternately, each into a fresh database; best round of each, by the wall clock and by
    this process's CPU time (the machine is shared: CPU time is the steadier figure)."""
    from cloud import ingest

    anchor = _anchor_module()
    ids = [f"{VILLAGE}-{i % 100:02d}" if stations <= 100 else f"{VILLAGE[:9]}{i // 100:03d}-{i % 100:02d}"
           for i in range(stations)]  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="kj-bench-permsg-"))
    try:
        template = tmp / "template.db"
        db = open_db(template)
        villages = sorted({s[:12] for s in ids})
        csv = "level,code,name,parent_code\ncounty,370214,县,\ntown,370214101,镇,370214\n" + "".join(
            f"village,{v},村{v[-3:]},370214101\n" for v in villages
        )
        import_grid_csv(db, csv)
        now = SystemClock().now()
        keys = {s: bytes.fromhex(enrol_station(db, s, s[:12], now).key_hex) for s in ids}
        db.close()
        per_station = -(-messages // stations)
        docs = {s: make_results(s, keys[s], per_station) for s in ids}
        payloads = [
            (f"kj/v1/{s}/result", json.dumps(docs[s][n]).encode()) for n in range(per_station) for s in ids
        ][:messages]
        # an ingest process holds no decoded documents: collecting them is not ingest's cost
        del docs
        settings = Settings(db_path=template, broker_url=None, scheduler_enabled=False)
        best: dict[str, float] = {}
        for r in range(rounds):
            for label, module in (("anchor", anchor), ("now", ingest)):
                path = tmp / f"{label}-{r}.db"
                shutil.copy(template, path)
                db = open_db(path)
                msgs = [module.Inbound(t, p, now, mid=1, qos=1) for t, p in payloads]
                cfg = settings.model_copy(update={"db_path": path})
                gc.collect()
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(0, len(msgs), batch):
                    module.process_batch(db, msgs[i : i + batch], cfg)
                rate = len(msgs) / (time.perf_counter() - t0)
                cpu_rate = len(msgs) / (time.process_time() - c0)
                stored = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                db.close()
                if stored != len(msgs):
                    raise RuntimeError(f"{label}: stored {stored} of {len(msgs)}")
                best[label] = max(best.get(label, 0.0), rate)
                best[label + "_cpu"] = max(best.get(label + "_cpu", 0.0), cpu_rate)
        return {
            "stations": stations,
            "messages": len(payloads),
            "batch": batch,
            "anchor_rate": best["anchor"],
            "rate": best["now"],
            "ratio": best["now"] / best["anchor"],
            "anchor_cpu_us": 1e6 / best["anchor_cpu"],
            "cpu_us": 1e6 / best["now_cpu"],
            "cpu_ratio": best["now_cpu"] / best["anchor_cpu"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ack_latency(stations: int, rate_per_min: float, duration_s: float) -> dict[str, Any]:
    """Application-ack latency at a realistic load: `kuaijian fleet` (its own process) through Mosquitto with
    the generated configuration's `set_tcp_nodelay true` into one ingest worker (this process)."""
    from kuaijian.fleet import station_ids, station_key

    tmp = Path(tempfile.mkdtemp(prefix="kj-bench-latency-"))
    port = free_port()
    broker = start_mosquitto(tmp, port, extra="set_tcp_nodelay true\n")
    try:
        from cloud.enrol import enrol_fleet

        ids = station_ids(stations)
        enrol_fleet(tmp / "cloud.db", ids, [station_key("bench", s) for s in ids])
        settings = Settings(
            db_path=tmp / "cloud.db", broker_url=f"mqtt://127.0.0.1:{port}", scheduler_enabled=False
        )
        worker = IngestWorker(settings, SystemClock())
        worker.start()
        try:
            if not worker.link.connected.wait(10):
                raise RuntimeError("ingest did not connect")
            proc = subprocess.run(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "kuaijian.cli", "fleet", "--broker", f"mqtt://127.0.0.1:{port}",
                 "--stations", str(stations), "--rate", str(rate_per_min), "--duration", str(duration_s),
                 "--drain", "20", "--secret", "bench", "--protocol", "5", "--json"],
                capture_output=True, text=True, timeout=duration_s + 120, check=False,
            )  # fmt: skip
        finally:
            worker.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"fleet failed ({proc.returncode}): {proc.stderr[-2000:]}")
        report: dict[str, Any] = json.loads(proc.stdout)
        return report
    finally:
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def connections(stations: int, fd_limit_override: int | None) -> dict[str, Any]:
    """`stations` stations, each with its own user, password and client id, connect to Mosquitto running with
    the files `kuaijian cloud mosquitto-auth` generates: kuaijian.conf (Dynamic Security, NODELAY) and the fd
    limit of mosquitto-limits.conf applied the way systemd applies LimitNOFILE — or `fd_limit_override`."""
    import re
    import resource

    from cloud.enrol import broker_users
    from cloud.mosquitto import default_group, write_mosquitto_auth
    from kuaijian.fleet import run_fleet, station_ids

    tmp = Path(tempfile.mkdtemp(prefix="kj-bench-conn-"))
    try:
        ids = station_ids(stations)
        db = open_db(tmp / "cloud.db")
        counties = sorted({s[:6] for s in ids})
        towns = sorted({s[:9] for s in ids})
        villages = sorted({s[:12] for s in ids})
        csv = "level,code,name,parent_code\n" + "".join(f"county,{c},县{c},\n" for c in counties)
        csv += "".join(f"town,{t},镇{t},{t[:6]}\n" for t in towns)
        csv += "".join(f"village,{v},村{v},{v[:9]}\n" for v in villages)
        import_grid_csv(db, csv)
        now = SystemClock().now()
        passwords = {s: enrol_station(db, s, s[:12], now).mqtt_password for s in ids}
        # as root Mosquitto drops to its own user: the files go to its group, as on a server
        tmp.chmod(0o711)
        group = default_group() if os.geteuid() == 0 else None
        _dynsec, conf, limits = write_mosquitto_auth(
            broker_users(db), tmp, "kj-ingest", "bench-pw", group=group
        )
        db.close()
        m = re.search(r"^LimitNOFILE=(\d+)$", limits.read_text(), re.MULTILINE)
        assert m is not None
        wanted = fd_limit_override or int(m.group(1))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
        port = free_port()
        broker = start_mosquitto(tmp, port, extra=conf.read_text(), nofile=limit, anonymous=False)
        try:
            t0 = time.perf_counter()
            report = run_fleet(
                f"mqtt://127.0.0.1:{port}",
                ids,
                secret="bench",  # noqa: S106 - derives simulated station keys
                rate_per_min=0,
                duration_s=10.0 + stations / 500,
                drain_s=0,
                protocol="5",
                login=lambda s: (f"kj-gw-{s}", s, passwords[s]),
            )
            seconds = time.perf_counter() - t0
        finally:
            broker.terminate()
            broker.wait(10)
        if report.connected == 0:
            raise RuntimeError("no station connected:\n" + (tmp / "mosquitto.log").read_text()[-2000:])
        return {
            "stations": stations,
            "nofile": limit,
            "nofile_wanted": wanted,
            "connected": report.connected,
            "never_connected": report.never_connected,
            "seconds": seconds,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--engine",
        nargs="+",
        default=["sqlite"],
        choices=("sqlite", "postgresql"),
        help="database engines, in turn",
    )
    ap.add_argument(
        "--procs", action="store_true", help="ingest workers as separate processes (with CPU shares)"
    )
    ap.add_argument("--stations", type=int, default=4, help="stations (enrolled, each its own topic and key)")
    ap.add_argument(
        "--publishers", type=int, default=4, help="publisher processes (the stations shared out among them)"
    )
    ap.add_argument("--results", type=int, default=5000, help="results per station")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 50], help="results per MQTT message")
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="ingest workers (shared subscription)"
    )
    ap.add_argument(
        "--per-message",
        action="store_true",
        help=f"one result per message: process_batch of {ANCHOR_COMMIT} (anchor) vs this tree, same run",
    )
    ap.add_argument("--rounds", type=int, default=3, help="with --per-message: rounds (best of each side)")
    ap.add_argument("--ack-latency", action="store_true", help="ack latency at a realistic fleet load")
    ap.add_argument("--connections", type=int, default=0, help="connect N stations with the generated config")
    ap.add_argument("--nofile", type=int, default=None, help="with --connections: broker fd limit instead")
    args = ap.parse_args()
    if args.per_message:
        r = per_message(stations=args.stations, messages=args.results, batch=500, rounds=args.rounds)
        print(
            f"one result per message, {r['stations']} stations, {r['messages']} messages, batches of {r['batch']}:"
            f" {ANCHOR_COMMIT} {r['anchor_rate']:.0f}/s, now {r['rate']:.0f}/s, ratio {r['ratio']:.2f};"
            f" CPU per result {r['anchor_cpu_us']:.0f} us vs {r['cpu_us']:.0f} us, ratio {r['cpu_ratio']:.2f}"
        )
        return 0
    if args.ack_latency:
        rep = ack_latency(stations=args.stations, rate_per_min=6.0, duration_s=30.0)
        print(json.dumps(rep))
        return 0
    if args.connections:
        print(json.dumps(connections(args.connections, args.nofile)))
        return 0
    pg = start_postgres() if "postgresql" in args.engine else None
    try:
        print(
            f"{'engine':>10} {'stations':>8} {'workers':>7} {'batch':>5} {'results':>8} {'stored':>7} {'seconds':>8}"
            f" {'results/s':>10} {'raw COPY':>9} {'raw INSERT':>10} {'%COPY':>6} {'%INSERT':>7}"
            "  cores: ingest (each worker)/db/broker/publishers/machine busy/iowait  acked  server backends"
        )
        for engine in args.engine:
            for batch in args.batch:
                for workers in args.workers:
                    n = args.results if batch > 1 else min(args.results, 1000)
                    r = run(args.stations, n, batch, workers, engine, pg, args.procs, args.publishers)
                    cpu, raw = r["cpu"], r["anchor"]
                    copy = raw.get("copy")
                    each = "+".join(f"{c:.2f}" for c in r["cpu_workers"]) if args.procs else "in-process"
                    print(
                        f"{r['engine']:>10} {r['stations']:>8} {r['workers']:>7} {r['batch']:>5} {r['results']:>8}"
                        f" {r['stored']:>7} {r['seconds']:>8.2f} {r['rate']:>10.0f}"
                        f" {copy or 0:>9.0f} {raw['insert']:>10.0f}"
                        f" {(r['rate'] / copy if copy else 0):>6.0%} {r['rate'] / raw['insert']:>7.0%}"
                        f"  {cpu['ingest']:.2f} ({each})/{cpu['database']:.2f}/{cpu['broker']:.2f}"
                        f"/{cpu['publishers']:.2f}/{cpu['host']:.2f}/{cpu['iowait']:.2f}"
                        f"  {'all' if r['all_acked'] else 'NO'}  {r['waits']}",
                        flush=True,
                    )
    finally:
        if pg is not None:
            pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
