"""`kuaijian fleet`: a load simulator of many stations for sizing the cloud.

Each simulated station is its own MQTT client (hundreds to thousands of connections) publishing signed
results on ``kj/v1/{station}/result`` at a Poisson rate and subscribing to its ``ack`` topic, exactly like a
gateway. All clients are driven by one thread through paho's external-loop API (one selector over all
sockets), so a thousand stations cost a thousand sockets, not a thousand threads.

It measures what matters for sizing: publish rate achieved, application-ack throughput, ack latency
percentiles, and results still unacknowledged at the end. Station keys are derived from ``--secret``
(HMAC-SHA256(secret, station id)); ``--enrol-db`` enrols the fleet's stations with those keys into a cloud
database so the cloud accepts their signatures.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import random
import selectors
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ANALYTES = (
    ("gold", "imidacloprid"),
    ("gold", "carbendazim"),
    ("gold", "carbofuran"),
    ("gold", "procymidone"),
    ("enzyme", "organophosphates/carbamates"),
)
PRODUCTS = ("菠菜", "芹菜", "韭菜", "豇豆", "黄瓜", "番茄", "小白菜", "生菜")


class FleetError(RuntimeError):
    """The fleet could not run (bad broker URL, connection refused, bad arguments)."""


def station_ids(count: int, county: str = "370214") -> list[str]:
    """`count` distinct station ids under a 6-digit county code: county + town(3) + village(3) + "-01"."""
    if not (len(county) == 6 and county.isdigit()):
        raise FleetError(f"county code must be 6 digits, got {county!r}")
    if not 0 < count <= 999 * 999:
        raise FleetError(f"station count must be between 1 and {999 * 999}")
    return [f"{county}{i // 999 + 1:03d}{i % 999 + 1:03d}-01" for i in range(count)]


def station_key(secret: str, station: str) -> bytes:
    """The fleet station's HMAC key, derived so the cloud side can be enrolled with the same key."""
    return hmac.new(secret.encode(), station.encode(), hashlib.sha256).digest()


def make_result(
    station: str, seq: int, key: bytes, rng: random.Random, positive_rate: float
) -> dict[str, Any]:
    """A realistic, signed wire result for `station` (kuaijian_schema.Result shape)."""
    from kuaijian_schema import new_result_id, sign_payload

    method, analyte = rng.choice(ANALYTES)
    positive = rng.random() < positive_rate
    now = datetime.now(UTC).isoformat()
    if method == "gold":
        ratio = rng.uniform(0.2, 0.7) if positive else rng.uniform(1.0, 2.0)
        values: dict[str, float | None] = {
            "ratio": round(ratio, 4),
            "control_signal": round(rng.uniform(3, 6), 3),
        }
        algorithm = "gold/1.0"
    else:
        inhibition = rng.uniform(55, 90) if positive else rng.uniform(0, 35)
        values = {"inhibition_pct": round(inhibition, 2), "delta_a_control": round(rng.uniform(0.4, 0.7), 4)}
        algorithm = "enzyme/1.0"
    doc: dict[str, Any] = {
        "id": str(new_result_id()),
        "seq": seq,
        "station": station,
        "instrument": {"serial": f"FL-{station[-6:]}", "model": "fleet", "driver": "fleet"},
        "sample": {"id": f"{station[-6:]}-{seq}", "product": rng.choice(PRODUCTS)},
        "method": method,
        "analyte": analyte,
        "channel": rng.randrange(8),
        "measured_at": now,
        "verdict": "positive" if positive else "negative",
        "values": values,
        "qc": [],
        "algorithm": algorithm,
        "config_version": "fleet",
    }
    doc["sig"] = sign_payload(doc, key)
    return doc


@dataclass
class _Station:
    station: str
    key: bytes
    client: Any
    next_at: float
    seq: int = 0
    connected: bool = False
    ever_connected: bool = False
    pending: dict[str, float] = field(default_factory=dict)  # result id -> publish time


@dataclass
class FleetReport:
    stations: int
    connected: int
    never_connected: int
    """Stations whose connection the broker never accepted (e.g. it ran out of file descriptors)."""
    published: int
    acked: int
    rejected: int
    unacked: int
    duration_s: float
    publish_rate: float
    ack_rate: float
    latency_ms: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    srt = sorted(values)

    def pct(p: float) -> float:
        return round(srt[min(len(srt) - 1, math.ceil(p / 100 * len(srt)) - 1)] * 1000, 1)

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": round(srt[-1] * 1000, 1)}


def run_fleet(
    broker_url: str,
    stations: list[str],
    *,
    secret: str,
    rate_per_min: float,
    duration_s: float,
    drain_s: float = 30.0,
    positive_rate: float = 0.05,
    protocol: str = "3.1.1",
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
    login: Callable[[str], tuple[str, str | None, str | None]] | None = None,
) -> FleetReport:
    """Connect one MQTT client per station, publish for `duration_s`, wait up to `drain_s` for acks.

    `login(station)` gives (client id, user name, password) per station — e.g. for a broker with the generated
    per-station access control; default: client id ``fleet-{station}`` and the URL's user name and password.
    """
    from kuaijian_schema import Ack, topic
    from kuaijian_schema.mqtt_client import TlsFiles, make_client, parse_broker_url

    try:
        url = parse_broker_url(broker_url)
    except ValueError as exc:
        raise FleetError(f"broker URL must look like mqtt://HOST:PORT: {exc}") from exc
    host, port = url.host, url.port
    if protocol not in ("3.1.1", "5"):
        raise FleetError("protocol must be 3.1.1 or 5")
    rng = random.Random(seed)
    sel = selectors.DefaultSelector()
    fleet: dict[str, _Station] = {}
    latencies: list[float] = []
    counts = {"published": 0, "acked": 0, "rejected": 0}
    refused: list[str] = []

    def on_connect(client: Any, st: _Station, _flags: Any, reason: Any, _props: Any = None) -> None:
        if not reason.is_failure:
            st.connected = st.ever_connected = True
            client.subscribe(topic(st.station, "ack"), qos=1)

    def on_message(_client: Any, st: _Station, msg: Any) -> None:
        try:
            ack = Ack.model_validate_json(msg.payload)
        except ValueError:
            return
        now = time.monotonic()
        for rid in ack.ids:
            sent = st.pending.pop(str(rid), None)
            if sent is not None:
                counts["acked"] += 1
                latencies.append(now - sent)
        for rej in ack.rejected:
            if st.pending.pop(rej.id, None) is not None:
                counts["rejected"] += 1

    period = 60.0 / rate_per_min if rate_per_min > 0 else math.inf
    start = time.monotonic()
    for name in stations:
        client_id, username, password = (
            login(name) if login is not None else (f"fleet-{name}", url.username, url.password)
        )
        client = make_client(
            client_id=client_id,
            protocol="5" if protocol == "5" else "3.1.1",
            reconnect_on_failure=False,
            username=username,
            password=password,
            tls=TlsFiles() if url.tls else None,
        )
        st = _Station(
            name,
            station_key(secret, name),
            client,
            start + rng.expovariate(1 / period) if period < math.inf else math.inf,
        )
        client.user_data_set(st)
        client.on_connect = on_connect
        client.on_message = on_message
        try:
            client.connect(host, port, keepalive=60)
        except OSError as exc:
            # counted as never connected; only a broker that takes no station at all is an error
            refused.append(f"{exc}")
            continue
        sock = client.socket()
        if sock is not None:
            sel.register(sock, selectors.EVENT_READ, st)
        fleet[name] = st

    if refused and not fleet:
        raise FleetError(f"cannot connect to {host}:{port}: {refused[0]}")

    last_misc = 0.0

    def flush() -> None:
        for st in fleet.values():
            if st.client.want_write():
                st.client.loop_write()

    def pump(timeout: float) -> None:
        """One turn of the shared loop: send what was published (before waiting, so a result does not sit in
        its buffer for the select's timeout and inflate the measured ack latency), read what arrived, send
        the PUBACKs for it, keep-alives once a second."""
        nonlocal last_misc
        flush()
        for key, _ev in sel.select(timeout):
            key.data.client.loop_read(10)
        flush()
        if time.monotonic() - last_misc > 1.0:
            for st in fleet.values():
                st.client.loop_misc()
            last_misc = time.monotonic()

    last_progress = start
    end_publish = start + duration_s
    while True:
        now = time.monotonic()
        if now >= end_publish:
            break
        for st in fleet.values():
            if st.connected and now >= st.next_at:
                st.seq += 1
                doc = make_result(st.station, st.seq, st.key, rng, positive_rate)
                st.client.publish(topic(st.station, "result"), json.dumps(doc, ensure_ascii=False), qos=1)
                st.pending[doc["id"]] = now
                counts["published"] += 1
                st.next_at = now + rng.expovariate(1 / period)
        pump(0.01)
        if progress and now - last_progress > 2.0:
            last_progress = now
            connected = sum(s.connected for s in fleet.values())
            progress(
                f"fleet: {connected}/{len(fleet)} connected, {counts['published']} published, "
                f"{counts['acked']} acked, {now - start:.0f}/{duration_s:.0f}s"
            )
    drain_end = time.monotonic() + drain_s
    while time.monotonic() < drain_end and any(st.pending for st in fleet.values()):
        pump(0.05)
    elapsed = time.monotonic() - start
    connected = sum(s.connected for s in fleet.values())
    for st in fleet.values():
        st.client.disconnect()
        st.client.loop_write()
        sock = st.client.socket()
        if sock is not None:
            try:
                sel.unregister(sock)
            except (KeyError, ValueError):
                pass
    sel.close()
    return FleetReport(
        stations=len(stations),
        connected=connected,
        never_connected=len(stations) - sum(s.ever_connected for s in fleet.values()),
        published=counts["published"],
        acked=counts["acked"],
        rejected=counts["rejected"],
        unacked=sum(len(s.pending) for s in fleet.values()),
        duration_s=round(elapsed, 2),
        publish_rate=round(counts["published"] / max(duration_s, 1e-9), 1),
        ack_rate=round(counts["acked"] / max(elapsed, 1e-9), 1),
        latency_ms=_percentiles(latencies),
    )


def _cmd_fleet(args: argparse.Namespace) -> int:
    try:
        ids = station_ids(args.stations, args.county)
        if args.enrol_db:
            from cloud.enrol import enrol_fleet

            enrol_fleet(args.enrol_db, ids, [station_key(args.secret, s) for s in ids])
            print(f"fleet: enrolled {len(ids)} stations into {args.enrol_db}", file=sys.stderr)
        report = run_fleet(
            args.broker,
            ids,
            secret=args.secret,
            rate_per_min=args.rate,
            duration_s=args.duration,
            drain_s=args.drain,
            positive_rate=args.positive_rate,
            protocol=args.protocol,
            seed=args.seed,
            progress=lambda line: print(line, file=sys.stderr),
        )
    except FleetError as exc:
        print(f"kuaijian fleet: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for k, v in report.as_dict().items():
            print(f"{k:>14}: {v}")
    if report.never_connected:
        print(
            f"kuaijian fleet: {report.never_connected} of {report.stations} stations could not connect"
            " (the broker's connection or file-descriptor limit?)",
            file=sys.stderr,
        )
        return 1
    return 0 if report.unacked == 0 else 1


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "fleet",
        help="load-simulate many stations publishing to a broker (cloud sizing)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default %(default)s)")
    p.add_argument(
        "--stations", type=int, default=100, help="simulated stations = MQTT clients (default 100)"
    )
    p.add_argument("--rate", type=float, default=6.0, help="results per minute per station (default 6)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of publishing (default 30)")
    p.add_argument("--drain", type=float, default=30.0, help="max seconds to wait for acks afterwards")
    p.add_argument("--secret", default="kuaijian-fleet", help="secret the station keys are derived from")
    p.add_argument("--county", default="370214", help="6-digit county code of the generated station ids")
    p.add_argument(
        "--positive-rate", type=float, default=0.05, help="share of positive results (default 0.05)"
    )
    p.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1", help="MQTT protocol version")
    p.add_argument(
        "--enrol-db", default=None, help="cloud SQLite database to enrol the fleet's stations into"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_fleet)
