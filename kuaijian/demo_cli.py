"""`kuaijian demo` on the command line: arguments, the login links, the console status line, Ctrl-C.

Does: parse the demo's options, run `kuaijian.demo.Demo` until Ctrl-C / SIGTERM / ``--duration``, and print
what to open (dashboard links per user, station pages) and a status line read from the cloud's API.

Does not: start or wire any component (kuaijian.demo does).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kuaijian import demo as demo_module
from kuaijian.demo import LEVEL_NAMES, Demo, DemoError


def _cmd_demo(args: argparse.Namespace) -> int:
    tmp: str | None = None
    if args.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="kuaijian-demo-")
    data_dir = Path(args.data_dir or tmp or ".")
    demo = Demo(
        data_dir=data_dir,
        http_port=args.port,
        broker_url=args.broker,
        towns=args.towns,
        stations_per_town=args.stations_per_town,
        rate_per_min=args.rate,
        positive_rate=args.positive_rate,
        seed=args.seed,
        case_minutes=args.case_minutes,
        db_url=args.db,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        demo.start()
        print(_banner(demo, data_dir, kept=tmp is None or args.keep), flush=True)
        started = time.monotonic()
        # on a terminal one status line rewritten every second; into a log or pipe a new line every 5 s
        tty = sys.stdout.isatty()
        period, end = (1.0, "") if tty else (5.0, "\n")
        while not stop.wait(period):
            s = demo.status()
            line = (
                f"[{time.monotonic() - started:5.0f}s] measurements {s['measured']}  results in cloud {s['delivered']}  "
                f"samples {s['samples_in_cloud']} (held {s['held']}, released {s['released']})  "
                f"stations online {s['online']}/{s['stations']}  backlog {s['backlog']}  open cases {s['open_cases']}  "
            )
            print(("\r" if tty else "") + line, end=end, flush=True)
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
        if tty:
            print()
    except KeyboardInterrupt:
        print("\ndemo: stopping…", flush=True)
    except DemoError as exc:
        print(f"kuaijian demo: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.stop()
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if tmp is None or args.keep:
        print(f"demo: data kept in {data_dir}", flush=True)
    print("demo: stopped", flush=True)
    return 0


def _banner(demo: Demo, data_dir: Path, *, kept: bool) -> str:
    """What to open: the dashboard, one login per grid level (name, password, one-click link), the station
    pages, the case deadlines and where the data is."""
    lines = [
        "",
        f"  dashboard 实时监控: {demo.dashboard_url}",
        "  logins 登录 (user / password, or the one-click link — each link works once, then use the password):",
    ]
    for login in demo.logins:
        lines.append(
            f"    {LEVEL_NAMES[login.level]:<16} {login.node_name}: user {login.user}  password {login.password}"
        )
        lines.append(f"      one-click: {demo.one_click(login)}")
    lines.append(f"    admin (machine token): {demo.dashboard_url}#token={demo.admin_token}")
    lines += [f"  station page {st.station}: {st.page}/" for st in demo.stations[:3]]
    minutes = f"{demo.case_minutes:g}"
    lines.append(
        f"  case deadlines 处置期限: {minutes} min per level — reminders (催办) before, escalation (逐级上报) after"
    )
    lines.append(
        f"  data dir: {data_dir} ({'kept after stopping' if kept else 'removed on stop; --keep keeps it'})"
    )
    lines.append(f"  login token: {demo.admin_token}")
    lines.append("  Ctrl-C to stop")
    return "\n".join(lines) + "\n"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run broker, cloud, simulated analyzers and gateways on this machine",
        description=demo_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--broker", default=None, help="existing broker URL (default: start an embedded amqtt broker)"
    )
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="cloud database on a server, postgresql://user@host:port/db (must be empty; default: an embedded"
        " SQLite file in the data dir)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8800,
        help="HTTP port of the cloud/dashboard (default 8800; 0: any free port)",
    )
    p.add_argument("--towns", type=int, default=3, help="towns in the demo county (default 3)")
    p.add_argument("--stations-per-town", type=int, default=2, help="stations per town (default 2)")
    p.add_argument("--rate", type=float, default=6.0, help="measurements per minute per station (default 6)")
    p.add_argument(
        "--positive-rate",
        type=float,
        default=0.08,
        help="share of gold-card samples that are positive (default 0.08)",
    )
    p.add_argument(
        "--data-dir", default=None, help="keep databases, configs and logs here (default: temp dir)"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary data dir after stopping (--data-dir is always kept)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop by itself after S seconds")
    p.add_argument("--seed", type=int, default=1, help="random seed of the workload (default 1)")
    p.add_argument(
        "--case-minutes",
        type=float,
        default=3.0,
        help="case deadline at every level, minutes (default 3: reminders and escalation within minutes)",
    )
    p.set_defaults(func=_cmd_demo)
