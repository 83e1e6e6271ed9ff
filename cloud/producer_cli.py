"""`kuaijian cloud producers import|list`: the producer register (生产主体) from the command line.

Does: parse options, open (and migrate) the database, call cloud.producers with operator rights (the whole
grid), store a new config for the stations of changed villages (a running `kuaijian cloud serve` publishes
it retained on its next scheduler pass), print a per-row error report.
Exit codes: 0 ok, 2 invalid input (also when any row was rejected: the report says which).

Does not: validate or store anything itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_import(args: argparse.Namespace) -> int:
    from cloud import configs, producers
    from cloud.auth import operator
    from cloud.clock import SystemClock
    from cloud.db import open_db
    from cloud.errors import CloudError
    from cloud.settings import Settings, db_setting

    settings = Settings() if args.db is None else Settings(**db_setting(args.db))
    db = open_db(settings.database)
    now = SystemClock().now()
    try:
        rows = producers.parse_table(Path(args.file).read_bytes(), str(args.file))
        report = producers.import_rows(db, operator(args.issued_by), rows, now)
        stations = configs.push_producers(db, report.villages, f"cli:{args.issued_by}", now)
    except (CloudError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    print(f"生产主体导入 (producers imported): {report.created} 新建 created, {report.updated} 更新 updated")
    if stations:
        print(f"新配置待发布 (config pending for) {len(stations)} 个服务站 station(s): {', '.join(stations)}")
    for err in report.errors:
        print(f"第 {err.row} 行 (row {err.row}): {err.error}", file=sys.stderr)
    return 2 if report.errors else 0


def cmd_list(args: argparse.Namespace) -> int:
    from cloud import producers
    from cloud.auth import operator
    from cloud.db import open_db
    from cloud.errors import CloudError
    from cloud.settings import Settings, db_setting

    settings = Settings() if args.db is None else Settings(**db_setting(args.db))
    db = open_db(settings.database)
    try:
        total, items = producers.list_producers(
            db, operator("list"), village=args.village, q=args.q, limit=args.limit
        )
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    if args.json:
        print(json.dumps({"total": total, "items": items}, ensure_ascii=False, indent=2))
        return 0
    for p in items:
        print(
            f"{p['ref']}\t{p['kind']}\t{p['name']}\t{p['code']}\t{p['village']}\t{'、'.join(p['products'])}"
        )
    print(f"共 {total} 个生产主体 ({total} producers)")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `producers` group to `subparsers` (the `kuaijian cloud` group)."""
    group = subparsers.add_parser("producers", help="producers (生产主体): import from CSV/Excel, list")
    verbs = group.add_subparsers(dest="producers_verb", required=True)
    p = verbs.add_parser("import", help="import/update producers from a CSV or .xlsx file (per-row errors)")
    p.add_argument(
        "--db",
        default=None,
        help="database: a SQLite file or postgresql://user@host:port/db (default: $KJ_CLOUD_DB_URL or $KJ_CLOUD_DB_PATH)",
    )
    p.add_argument("--issued-by", default="operator", help="name recorded with the config version")
    p.add_argument("file", help="CSV or .xlsx: 类型,名称,代码,村,联系人,电话,品种,地块 (see docs/cloud.md)")
    p.set_defaults(func=cmd_import)
    p = verbs.add_parser("list", help="list producers")
    p.add_argument(
        "--db",
        default=None,
        help="database: a SQLite file or postgresql://user@host:port/db (default: $KJ_CLOUD_DB_URL or $KJ_CLOUD_DB_PATH)",
    )
    p.add_argument("--village", default=None, help="village grid code")
    p.add_argument("--q", default=None, help="name or code contains")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
