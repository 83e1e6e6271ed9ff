"""`kuaijian cloud report …`: print or write a report (weekly, positivity, closure, rankings, summary).

Wiring (cloud/cli.py is owned by the cloud core engineer): inside `cloud.cli.register(subparsers)` call
``cloud.report_cli.register(subparsers)``. Only argparse is imported here; cloud.report_render is imported
inside the verb so `kuaijian --help` stays fast.

Does: parse the options, open the database (migrating it), call `cloud.report_render.render_report`, write
the bytes to --output or stdout. Runs with operator rights (no user scope: the whole grid is visible).
Exit codes: 0 ok, 2 invalid input / unknown node (message on stderr).
Does not: compute anything itself.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

KINDS = ("weekly", "positivity", "closure", "rankings", "summary")


def cmd_report(args: argparse.Namespace) -> int:
    from cloud import report_render
    from cloud.clock import SystemClock
    from cloud.db import open_db
    from cloud.errors import CloudError
    from cloud.grid import node_or_whole_grid
    from cloud.settings import Settings, db_setting

    settings = Settings() if args.db is None else Settings(**db_setting(args.db))
    db = open_db(settings.database)
    try:
        scope = node_or_whole_grid(db, args.node)
        body = report_render.render_report(
            db,
            args.kind,
            scope,
            SystemClock().now(),
            fmt=args.format,
            week=args.week,
            start=args.start,
            end=args.end,
            level=args.level,
            period=args.period,
            on=args.on,
            tz=settings.tz,
            assess=settings.assessment,
        )
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    if args.output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        args.output.write_bytes(body)
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `report` verb to `subparsers` (the `kuaijian cloud` group)."""
    p = subparsers.add_parser("report", help="print or write a report (weekly, positivity, rankings, …)")
    p.add_argument("kind", choices=KINDS, help="which report")
    p.add_argument(
        "--db",
        default=None,
        help="database: a SQLite file or postgresql://user@host:port/db (default: $KJ_CLOUD_DB_URL or $KJ_CLOUD_DB_PATH)",
    )
    p.add_argument("--node", default=None, help="grid node code (default: the whole grid)")
    p.add_argument("--format", choices=("json", "csv", "html"), default="json", help="html: weekly only")
    p.add_argument("--week", default=None, help="weekly: ISO week, e.g. 2026-W47 (default: last full week)")
    p.add_argument("--start", type=date.fromisoformat, default=None, help="first local day (YYYY-MM-DD)")
    p.add_argument("--end", type=date.fromisoformat, default=None, help="last local day (default: today)")
    p.add_argument("--level", choices=("county", "town", "village"), default="town", help="rankings: level")
    p.add_argument("--period", choices=("day", "week", "month"), default="week", help="rankings: period")
    p.add_argument("--on", type=date.fromisoformat, default=None, help="rankings: a day in the period")
    p.add_argument("--output", "-o", type=Path, default=None, help="write here instead of stdout")
    p.set_defaults(func=cmd_report)
