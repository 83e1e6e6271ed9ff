"""API latency as results accumulate: p50/p95 of the dashboard and API endpoints at 10k, 1M and 10M stored
results, on PostgreSQL (partitioned results + daily aggregates) and SQLite.

For each engine: a fresh database (PostgreSQL: a private server from Debian's binaries, like tests/postgres.py,
fsync on), a generated grid (default 5 counties × 10 towns × 10 villages × 2 stations = 1,000 stations, each
village growing 4 of 20 products), then for each size in turn the database is grown to that many results and
every endpoint is timed through the real FastAPI app (`TestClient`: routing, auth, the query layer,
serialization) — as the admin and as a county user — beside an anchor (`/api/me`: the token lookup every request
makes) that shows the machine's load in the same run. Results are spread uniformly over the last `--months`
months, over the stations, 8 analytes and the village's products; verdicts 88 % negative, 3 % positive, 4 %
suspect, 5 % invalid; 5 % carry a QC flag; 90 % are uploaded within 30 min, the rest within 10 h; ids are
UUIDv7 of the measurement time (so they fall into their month's partition).

The fill: PostgreSQL generates the rows server-side (``INSERT … SELECT`` over ``generate_series``, one
statement per million rows, so the aggregates' statement trigger runs once per million); SQLite gets
``executemany`` of rows made in Python, 50,000 per transaction (its row triggers run per row). Fill times are
reported with the latencies; the grid and the month partitions are made first.

Usage: .venv/bin/python benchmarks/endpoints.py [--engine postgresql sqlite] [--sizes 10000 1000000 10000000]
       [--sqlite-max 1000000] [--requests 30] [--months 24] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.postgres, the package

import psycopg
from fastapi.testclient import TestClient

from cloud import partitions
from cloud.app import create_app
from cloud.auth import create_user
from cloud.clock import SystemClock
from cloud.db import Database, dispose_engines, open_db, transaction
from cloud.grid import import_grid_csv
from cloud.periods import week_period
from cloud.settings import Settings, db_setting
from tests.postgres import PostgresServer, start_postgres

ANALYTES = (
    "imidacloprid", "carbendazim", "carbofuran", "procymidone", "AOZ", "AMOZ", "chlorpyrifos", "organophosphate",
)  # fmt: skip
PRODUCTS = (
    "菠菜", "芹菜", "韭菜", "豇豆", "黄瓜", "番茄", "小白菜", "生菜", "茄子", "辣椒",
    "草莓", "葡萄", "苹果", "梨", "桃", "白菜", "萝卜", "大葱", "西兰花", "油麦菜",
)  # fmt: skip
PG_CONF = (
    "shared_buffers = 1GB",
    "work_mem = 32MB",
    "maintenance_work_mem = 256MB",
    "max_wal_size = 8GB",
    "checkpoint_timeout = 15min",
    "effective_cache_size = 8GB",
    "random_page_cost = 1.1",
)


@dataclass(frozen=True)
class Grid:
    counties: list[str]
    towns: list[str]
    stations: list[tuple[str, int, list[str]]]  # station id, node id, products


def build_grid(db: Database, counties: int, towns: int, villages: int, per_village: int, seed: int) -> Grid:
    """The grid, imported like `kuaijian cloud import-grid`; stations inserted directly (enrolling 1,000
    stations would spend minutes hashing MQTT passwords, which no query here reads)."""
    rng = random.Random(seed)
    rows = ["level,code,name,parent_code,grid_head,information_officer,co_manager"]
    county_codes, town_codes, village_codes = [], [], []
    for c in range(counties):
        cc = f"37{c + 1:02d}14"
        county_codes.append(cc)
        rows.append(f"county,{cc},县{c + 1},,,,")
        for t in range(towns):
            tc = f"{cc}{t + 101:03d}"
            town_codes.append(tc)
            rows.append(f"town,{tc},镇{c + 1}-{t + 1},{cc},,,")
            for v in range(villages):
                vc = f"{tc}{v + 201:03d}"
                village_codes.append(vc)
                rows.append(f"village,{vc},村{c + 1}-{t + 1}-{v + 1},{tc},,,")
    import_grid_csv(db, "\n".join(rows) + "\n")
    stations: list[tuple[str, int, list[str]]] = []
    with transaction(db):
        for vc in village_codes:
            products = rng.sample(PRODUCTS, 4)
            for n in range(per_village):
                sid = f"{vc}-{n + 1:02d}"
                db.execute(
                    "INSERT INTO grid_nodes (level, code, name, parent_id, path) SELECT 'station', ?, ?, id, path"
                    " FROM grid_nodes WHERE code = ?",
                    [sid, f"站{sid}", vc],
                )
                node_id, path = db.execute("SELECT id, path FROM grid_nodes WHERE code = ?", [sid]).fetchone()
                db.execute("UPDATE grid_nodes SET path = ? WHERE id = ?", [f"{path}{node_id}/", node_id])
                db.execute(
                    "INSERT INTO stations (id, node_id, key, mqtt_username, mqtt_password_hash, enrolled_at)"
                    " VALUES (?, ?, ?, ?, 'x', ?)",
                    [sid, node_id, "00" * 32, sid, datetime.now(UTC).isoformat()],
                )
                stations.append((sid, int(node_id), products))
    return Grid(county_codes, town_codes, stations)


def _pg_fill(db: Database, grid: Grid, lo: int, hi: int, start: datetime, span_s: float) -> None:
    """Rows lo..hi-1 made by the server, one INSERT … SELECT per million, in measurement order over the whole
    span (each size adds rows to every month, as a grid's stations do; the time-led indexes grow at their
    end like under ingest)."""
    if "bench_stations" not in db.table_names():
        with transaction(db):
            db.execute(
                "CREATE TABLE bench_stations (idx int PRIMARY KEY, station text, node_id int, products text[])"
            )
            for i, (sid, node, products) in enumerate(grid.stations):
                db.execute("INSERT INTO bench_stations VALUES (?, ?, ?, ?)", [i, sid, node, products])
    analytes = "ARRAY[" + ",".join(f"'{a}'" for a in ANALYTES) + "]"
    n_st = len(grid.stations)
    step = 1_000_000
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        sql = f"""
        INSERT INTO results (id, seq, station, node_id, instrument_serial, instrument_model, instrument_driver,
            sample_id, product, method, analyte, channel, measured_at, verdict, values_json, qc_json, algorithm,
            config_version, operator, sig, received_at)
        SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' || substr(h, 17, 4)
                   || '-' || substr(h, 21, 12),
               x.g, s.station, s.node_id, 'GR-' || s.idx, 'KJ-G8', 'gold-serial', 'S' || x.g,
               s.products[x.pi + 1], CASE WHEN x.ai = 7 THEN 'enzyme' ELSE 'gold' END, ({analytes})[x.ai + 1], 1,
               to_char(x.m AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00',
               CASE WHEN x.rv < 0.88 THEN 'negative' WHEN x.rv < 0.91 THEN 'positive'
                    WHEN x.rv < 0.95 THEN 'suspect' ELSE 'invalid' END,
               '{{"ratio": 0.82, "control_signal": 3.1, "test_signal": 2.5}}',
               CASE WHEN x.rq < 0.05 THEN '["low_control"]' ELSE '[]' END, 'gold/1.0', '1', 'op',
               md5(x.g::text) || md5((x.g + 1)::text),
               to_char((x.m + make_interval(secs => 60 * CASE WHEN x.rd < 0.9 THEN x.rd * 33 ELSE x.rd * 600 END))
                       AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00'
        FROM (SELECT g, r.m, lpad(to_hex((extract(epoch FROM r.m) * 1000)::bigint), 12, '0') || '7'
                        || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15) AS h,
                     (random() * {n_st})::int % {n_st} AS si, random() AS rv, random() AS rq, random() AS rd,
                     (random() * 8)::int % 8 AS ai, (random() * 4)::int % 4 AS pi
              FROM generate_series({a}, {b - 1}) g,
                   LATERAL (SELECT TIMESTAMPTZ '{start.isoformat()}'
                                   + make_interval(secs => (g - {lo} + random()) * {span_s / (hi - lo)}) AS m) r
             ) x JOIN bench_stations s ON s.idx = x.si"""  # noqa: S608 - numbers and constants of this script
        with transaction(db):
            db.execute("SET LOCAL synchronous_commit = off")  # the fill only; the server keeps fsync on
            db.execute(sql)


def _sqlite_fill(
    db: Database, grid: Grid, lo: int, hi: int, start: datetime, span_s: float, seed: int
) -> None:
    rng = random.Random(seed + lo)
    cols = (
        "id, seq, station, node_id, instrument_serial, instrument_model, instrument_driver, sample_id, product,"
        " method, analyte, channel, measured_at, verdict, values_json, qc_json, algorithm, config_version,"
        " operator, sig, received_at"
    )
    sql = f"INSERT INTO results ({cols}) VALUES ({', '.join('?' * 21)})"  # noqa: S608
    chunk: list[tuple[Any, ...]] = []
    for g in range(lo, hi):
        sid, node, products = grid.stations[rng.randrange(len(grid.stations))]
        m = start + timedelta(seconds=(g - lo + rng.random()) * span_s / (hi - lo))  # in time order
        rv, rd = rng.random(), rng.random()
        ai = rng.randrange(8)
        ms = int(m.timestamp() * 1000)
        h = f"{ms:012x}7{rng.getrandbits(12):03x}8{rng.getrandbits(60):015x}"
        verdict = (
            "negative" if rv < 0.88 else "positive" if rv < 0.91 else "suspect" if rv < 0.95 else "invalid"
        )
        delay = timedelta(minutes=rd * 33 if rd < 0.9 else rd * 600)
        chunk.append(
            (
                f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", g, sid, node, f"GR-{node}", "KJ-G8",
                "gold-serial", f"S{g}", products[rng.randrange(4)], "enzyme" if ai == 7 else "gold", ANALYTES[ai],
                1, m.isoformat(), verdict, '{"ratio": 0.82, "control_signal": 3.1, "test_signal": 2.5}',
                '["low_control"]' if rng.random() < 0.05 else "[]", "gold/1.0", "1", "op", "ab" * 32,
                (m + delay).isoformat(),
            )
        )  # fmt: skip
        if len(chunk) == 50_000 or g == hi - 1:
            with transaction(db):
                db.executemany(sql, chunk)
            chunk = []


def _months(first: date, last: date) -> list[date]:
    out = [date(first.year, first.month, 1)]
    while out[-1] < date(last.year, last.month, 1):
        m = out[-1]
        out.append(date(m.year + (m.month == 12), m.month % 12 + 1, 1))
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(client: TestClient, token: str, path: str, requests: int) -> tuple[float, float, float]:
    """p50, p95, max in ms of `requests` GETs (after 2 warm-ups)."""
    headers = {"Authorization": f"Bearer {token}"}
    times: list[float] = []
    for i in range(requests + 2):
        t0 = time.perf_counter()
        resp = client.get(path, headers=headers)
        elapsed = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")
        if i >= 2:
            times.append(elapsed)
    return statistics.median(times), _percentile(times, 0.95), max(times)


def _q(when: datetime) -> str:
    return quote(when.isoformat())


def endpoints(grid: Grid, now: datetime) -> list[tuple[str, str, str]]:
    """(name, user, path) of what is timed."""
    county, town = grid.counties[0], grid.towns[3]
    week = week_period((now - timedelta(days=7)).date())
    wk = week.label
    station = grid.stations[7][0]  # in the first county, like the town
    return [
        ("anchor: /api/me", "county", "/api/me"),  # auth + one lookup: the machine's load in this run
        ("results list, first page", "admin", "/api/results?limit=50"),
        ("results list, first page", "county", "/api/results?limit=50"),
        ("results, town positives", "county", f"/api/results?node={town}&verdict=positive&limit=50"),
        ("results, one analyte", "county", "/api/results?analyte=carbofuran&limit=50"),
        ("results, station, last 7 days", "county",
         f"/api/results?station={station}&since={_q(now - timedelta(days=7))}&limit=50"),
        ("grid rollup, whole grid", "admin", "/api/grid/rollup"),
        ("grid rollup, county, 30 days", "county",
         f"/api/grid/rollup?node={county}&since={_q(now - timedelta(days=30))}"),
        ("rankings, towns, week", "county", f"/api/reports/rankings?level=town&period=week&node={county}"),
        ("rankings, towns, month", "county", f"/api/reports/rankings?level=town&period=month&node={county}"),
        ("rankings, counties, month", "admin", "/api/reports/rankings?level=county&period=month"),
        ("weekly report, county", "county", f"/api/reports/weekly?node={county}&week={wk}"),
        ("weekly report, whole grid", "admin", f"/api/reports/weekly?week={wk}"),
        ("dashboard overview, 14 days", "county", f"/api/dashboard/overview?node={county}&days=14"),
    ]  # fmt: skip


def _server(args: argparse.Namespace) -> PostgresServer:
    """A private server: a fresh temporary one, or the cluster kept in --pgdata (made there on first use)."""
    if args.pgdata is None:
        return start_postgres(extra_conf=PG_CONF)
    root = args.pgdata.resolve()
    conf = root / "data" / "postgresql.conf"
    if conf.exists():
        port = int(re.findall(r"^port = (\d+)", conf.read_text(), re.M)[-1])
        server = PostgresServer(port=port, root=root, extra_conf=PG_CONF)
    else:
        root.mkdir(parents=True, exist_ok=True)
        server = PostgresServer(root=root, extra_conf=PG_CONF)
        server.init()
    server.start()
    return server


def _load_grid(db: Database) -> Grid:
    counties = [r[0] for r in db.execute("SELECT code FROM grid_nodes WHERE level = 'county' ORDER BY code")]
    towns = [r[0] for r in db.execute("SELECT code FROM grid_nodes WHERE level = 'town' ORDER BY code")]
    stations = [
        (str(r[0]), int(r[1]), list(r[2]))
        for r in db.execute("SELECT station, node_id, products FROM bench_stations ORDER BY idx").fetchall()
    ]
    return Grid(counties, towns, stations)


def run_engine(engine: str, args: argparse.Namespace, out: list[dict[str, Any]]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kj-bench-endpoints-"))
    server: PostgresServer | None = None
    try:
        if engine == "postgresql":
            server = _server(args)
            target = server.url("kj_endpoints")
            with psycopg.connect(host="127.0.0.1", port=server.port, user="kj", dbname="postgres") as conn:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'kj_endpoints'").fetchone()
            if found is None:  # else kept from an earlier run (--pgdata): grown further, re-timed
                server.create_database("kj_endpoints")
        else:
            target = str(tmp / "cloud.db")
        db = open_db(target)
        reused = bool(db.scalar("SELECT COUNT(*) FROM grid_nodes"))
        if reused:
            grid = _load_grid(db)
            start_text, now_text = db.execute("SELECT start, now FROM bench_meta").fetchone()
            start, now = datetime.fromisoformat(start_text), datetime.fromisoformat(now_text)
            kept = int(db.scalar("SELECT COUNT(*) FROM results"))
            print(f"{engine}: reusing {args.pgdata} ({kept:,} results)")
        else:
            grid = build_grid(db, args.counties, args.towns, args.villages, args.per_village, args.seed)
            now = datetime.now(UTC)
            start = now - timedelta(days=30.44 * args.months)
            with transaction(db):
                db.execute("CREATE TABLE bench_meta (start text, now text)")
                db.execute("INSERT INTO bench_meta VALUES (?, ?)", [start.isoformat(), now.isoformat()])
        span_s = (now - start).total_seconds()
        if engine == "postgresql":
            run = partitions.db_runner(db)
            with transaction(db):
                have = partitions.existing(run)
                for month in _months(start.date(), now.date()):
                    if month not in have:
                        partitions.create(run, month)
        stamp = int(time.time())
        admin = create_user(db, f"bench-admin-{stamp}", "admin", None, datetime.now(UTC))
        county = create_user(db, f"bench-county-{stamp}", "county", grid.counties[0], datetime.now(UTC))
        tokens = {"admin": admin, "county": county}
        settings = Settings(**db_setting(target), broker_url=None, scheduler_enabled=False)
        filled = int(db.scalar("SELECT COUNT(*) FROM results"))
        sizes = [s for s in args.sizes if engine == "postgresql" or s <= args.sqlite_max]
        for size in sizes:
            if size < filled:
                continue
            t0 = time.perf_counter()
            if engine == "postgresql" and size == filled:
                db.execute("ANALYZE")  # re-timed as kept (--pgdata): already in order
            elif engine == "postgresql":
                _pg_fill(db, grid, filled, size, start, span_s)
                # Ingest writes a day's aggregates on that day, so in service they lie in day order; this fill
                # adds to every day at each size, so put them back in that order (docs/scaling.md).
                db.execute("CLUSTER result_days USING result_days_pkey")
                db.execute("CLUSTER result_day_items USING result_day_items_pkey")
                db.execute("VACUUM ANALYZE")
            else:
                _sqlite_fill(db, grid, filled, size, start, span_s, args.seed)
                db.execute("ANALYZE")
            fill_s = time.perf_counter() - t0
            stored = int(db.scalar("SELECT COUNT(*) FROM results"))
            rollup_rows = int(db.scalar("SELECT COUNT(*) FROM result_days")) + int(
                db.scalar("SELECT COUNT(*) FROM result_day_items")
            )
            print(
                f"\n{engine} {stored:,} results (filled {size - filled:,} in {fill_s:.0f} s,"
                f" {(size - filled) / fill_s:,.0f}/s; aggregate rows {rollup_rows:,})",
                flush=True,
            )
            filled = size
            with TestClient(create_app(settings, clock=SystemClock())) as client:
                for name, user, path in endpoints(grid, now):
                    p50, p95, worst = measure(client, tokens[user], path, args.requests)
                    print(
                        f"  {name:<32} {user:<7} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  max {worst:7.1f} ms",
                        flush=True,
                    )
                    out.append(
                        {"engine": engine, "results": stored, "fill_s": round(fill_s, 1), "endpoint": name,
                         "user": user, "path": path, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                         "max_ms": round(worst, 1)}
                    )  # fmt: skip
        db.close()
    finally:
        dispose_engines()
        if server is not None and args.pgdata is not None:
            server.stop()  # kept for the next run
        elif server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    p.add_argument("--sizes", nargs="+", type=int, default=[10_000, 1_000_000, 10_000_000])
    p.add_argument("--sqlite-max", type=int, default=1_000_000, help="largest size filled into SQLite")
    p.add_argument("--requests", type=int, default=30, help="timed requests per endpoint (after 2 warm-ups)")
    p.add_argument("--months", type=int, default=24, help="results spread over this many months up to now")
    p.add_argument("--counties", type=int, default=5)
    p.add_argument("--towns", type=int, default=10, help="towns per county")
    p.add_argument("--villages", type=int, default=10, help="villages per town")
    p.add_argument("--per-village", type=int, default=2, help="stations per village")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--pgdata",
        type=Path,
        default=None,
        help="keep the PostgreSQL cluster in this directory and reuse it next time (grow it further, re-time"
        " the endpoints without filling again); delete it when done",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the server (finally)
    out: list[dict[str, Any]] = []
    for engine in args.engine:
        run_engine(engine, args, out)
    if args.json is not None:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
