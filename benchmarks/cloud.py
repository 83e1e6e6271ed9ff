"""Cloud ingest benchmark: sustained results/s through a real Mosquitto into the SQLite database.

Starts Mosquitto on a free loopback port, creates a fresh database with one village and S enrolled
stations, runs W ingest workers (MQTT 5 shared subscription, in this process), and starts S publisher
processes (one per station, like gateways). Each publisher pre-signs R results, publishes them as
batches of B results per message (QoS 1), and waits until every id has come back in an application
ack. The figure is total results / (first publish → last ack), i.e. durably committed and acknowledged.

Usage: .venv/bin/python benchmarks/cloud.py [--stations 4] [--results 5000] [--batch 50] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# This script is itself named cloud.py: drop its directory from sys.path so `import cloud` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from cloud.clock import SystemClock  # noqa: E402
from cloud.db import open_db  # noqa: E402
from cloud.enrol import enrol_station  # noqa: E402
from cloud.grid import import_grid_csv  # noqa: E402
from cloud.ingest_worker import IngestWorker  # noqa: E402
from cloud.settings import Settings  # noqa: E402
from kuaijian_schema import new_result_id, sign_payload  # noqa: E402
from kuaijian_schema.mqtt_client import set_tcp_nodelay  # noqa: E402

VILLAGE = "370214101203"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n"
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(  # noqa: S603 - our own config, a fixed executable
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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


def publisher(port: int, station: str, key_hex: str, n: int, batch: int, go: Any, out: Any) -> None:
    results = make_results(station, bytes.fromhex(key_hex), n)
    payloads = [json.dumps({"results": results[i : i + batch]}).encode() for i in range(0, n, batch)]
    pending = {r["id"] for r in results}
    done = threading.Event()
    lock = threading.Lock()
    last_ack = 0.0

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal last_ack
        ids = json.loads(msg.payload)["ids"]
        with lock:
            pending.difference_update(ids)
            if not pending:
                last_ack = time.monotonic()
                done.set()

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{station}", protocol=mqtt.MQTTv5)
    set_tcp_nodelay(client)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(f"kj/v1/{station}/ack", qos=1)
    subscribed.wait(10)
    go.wait()
    first = time.monotonic()
    for p in payloads:
        client.publish(f"kj/v1/{station}/result", p, qos=1)
    ok = done.wait(300)
    client.disconnect()
    client.loop_stop()
    out.put((station, n if ok else n - len(pending), first, last_ack if ok else time.monotonic(), ok))


def run(stations: int, results: int, batch: int, workers: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="kj-bench-cloud-"))
    port = free_port()
    broker = start_mosquitto(tmp, port)
    try:
        settings = Settings(
            db_path=tmp / "cloud.db", broker_url=f"mqtt://127.0.0.1:{port}", scheduler_enabled=False
        )
        db = open_db(settings.db_path)
        import_grid_csv(
            db,
            "level,code,name,parent_code\ncounty,370214,县,\ntown,370214101,镇,370214\n"
            f"village,{VILLAGE},村,370214101\n",
        )
        now = SystemClock().now()
        keys = {
            f"{VILLAGE}-{i:02d}": enrol_station(db, f"{VILLAGE}-{i:02d}", VILLAGE, now).key_hex
            for i in range(1, stations + 1)
        }
        ingest = [
            IngestWorker(settings.model_copy(update={"ingest_client_id": f"bench-ingest-{n}"}), SystemClock())
            for n in range(workers)
        ]
        for w in ingest:
            w.start()
        for w in ingest:
            if not w.link.connected.wait(10):
                raise RuntimeError("ingest did not connect")
        ctx = mp.get_context("fork")
        go = ctx.Event()
        out: Any = ctx.Queue()
        procs = [
            ctx.Process(target=publisher, args=(port, s, k, results, batch, go, out), daemon=True)
            for s, k in keys.items()
        ]
        for p in procs:
            p.start()
        time.sleep(0.5 + 0.0002 * results * stations / 10)  # let publishers pre-sign and subscribe
        go.set()
        rows = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(10)
        for w in ingest:
            w.stop()
        total = sum(r[1] for r in rows)
        start = min(r[2] for r in rows)
        end = max(r[3] for r in rows)
        stored = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        db.close()
        return {
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
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=4, help="publisher processes (one per station)")
    ap.add_argument("--results", type=int, default=5000, help="results per station")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 50], help="results per MQTT message")
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="ingest workers (shared subscription)"
    )
    args = ap.parse_args()
    print(
        f"{'stations':>8} {'workers':>7} {'batch':>5} {'results':>8} {'stored':>7} {'seconds':>8} {'results/s':>10}  acked"
    )
    for batch in args.batch:
        for workers in args.workers:
            n = args.results if batch > 1 else min(args.results, 1000)
            r = run(args.stations, n, batch, workers)
            print(
                f"{r['stations']:>8} {r['workers']:>7} {r['batch']:>5} {r['results']:>8} {r['stored']:>7}"
                f" {r['seconds']:>8.2f} {r['rate']:>10.0f}  {'all' if r['all_acked'] else 'NO'}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
