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
from kuaijian.demo import Demo, DemoError


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
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        demo.start()
        print(
            f"\n  dashboard: {demo.dashboard_url}\n"
            f"  one-click login: {demo.dashboard_url}#token={demo.admin_token}\n"
            + "".join(f"  as {name}: {demo.dashboard_url}#token={tok}\n" for name, tok in demo.tokens.items())
            + "".join(f"  station page {st.station}: {st.page}/\n" for st in demo.stations[:3])
            + f"  login token: {demo.admin_token}\n  Ctrl-C to stop\n",
            flush=True,
        )
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
    print("demo: stopped", flush=True)
    return 0


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
    p.add_argument("--port", type=int, default=8800, help="HTTP port of the cloud/dashboard (default 8800)")
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
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir after stopping")
    p.add_argument("--duration", type=float, default=None, help="stop by itself after S seconds")
    p.add_argument("--seed", type=int, default=1, help="random seed of the workload (default 1)")
    p.set_defaults(func=_cmd_demo)
