"""`kuaijian gateway run|status|check-config|rejected|sample` — the station gateway's command line.

Does: parse arguments, configure logging, run the service until SIGTERM/SIGINT, and inspect a station's
outbox. Exit codes: 0 ok, 1 runtime failure (outbox failed while running), 2 invalid config,
3 outbox corrupt (moved aside; see the message), 4 another `gateway run` holds the data dir.

Does not: import heavy dependencies at module import (they are imported inside the verbs).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

GC_YOUNG_THRESHOLD = 20_000
"""`gateway run`'s first-generation threshold of the cyclic garbage collector (Python's default: 700)."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the gateway verbs to `subparsers` (the `kuaijian gateway` group)."""
    run = subparsers.add_parser("run", help="run the station gateway service", description=_run.__doc__)
    run.add_argument("--config", type=Path, required=True, help="station TOML file")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--duration", type=float, default=None, help="stop by itself after S seconds")
    run.set_defaults(func=_run)

    st = subparsers.add_parser(
        "status", help="outbox depth, seq, cursors, config version", description=_status.__doc__
    )
    st.add_argument("--config", type=Path, required=True, help="station TOML file")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)

    chk = subparsers.add_parser(
        "check-config", help="validate a station TOML file", description=_check.__doc__
    )
    chk.add_argument("--config", type=Path, required=True, help="station TOML file")
    chk.set_defaults(func=_check)

    rej = subparsers.add_parser("rejected", help="results the cloud rejected", description=_rejected.__doc__)
    rej.add_argument("--config", type=Path, required=True, help="station TOML file")
    rej.add_argument("--limit", type=int, default=50)
    rej.add_argument(
        "--requeue",
        action="store_true",
        help="send them again (after fixing the cause, e.g. enrolment); with --seq only those",
    )
    rej.add_argument(
        "--seq", type=int, action="append", default=None, help="with --requeue: this seq (repeatable)"
    )
    rej.set_defaults(func=_rejected)

    sample = subparsers.add_parser("sample", help="sample registration (抽样登记): register, list")
    sample_verbs = sample.add_subparsers(dest="sample_verb", required=True)
    reg = sample_verbs.add_parser(
        "register", help="register a sample; prints its code", description=_sample_register.__doc__
    )
    reg.add_argument("--config", type=Path, required=True, help="station TOML file")
    reg.add_argument(
        "--producer", required=True, help="producer reference (P…) from 'gateway sample producers'"
    )
    reg.add_argument("--product", required=True, help="品种, e.g. 韭菜")
    reg.add_argument("--batch", required=True, help="批次")
    reg.add_argument("--quantity-kg", type=float, required=True, help="数量 (kg)")
    reg.add_argument("--sampler", required=True, help="抽样人")
    reg.add_argument("--plot", default=None, help="地块")
    reg.add_argument("--market-date", default=None, help="计划上市日期 YYYY-MM-DD")
    reg.add_argument("--retest-of", default=None, help="code of the original sample (复检)")
    reg.add_argument("--code", default=None, help="use this code instead of the next one of the day")
    reg.set_defaults(func=_sample_register)
    lst = sample_verbs.add_parser(
        "list", help="registered samples, newest first", description=_sample_list.__doc__
    )
    lst.add_argument("--config", type=Path, required=True, help="station TOML file")
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(func=_sample_list)
    prod = sample_verbs.add_parser(
        "producers",
        help="producers of this village (from the cloud's config push)",
        description=_sample_producers.__doc__,
    )
    prod.add_argument("--config", type=Path, required=True, help="station TOML file")
    prod.set_defaults(func=_sample_producers)


def _err(msg: str) -> None:
    print(f"kuaijian gateway: {msg}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    """Run the gateway: read the instruments, store results in the outbox, deliver them over MQTT."""
    from gateway.config import load_config
    from gateway.errors import ConfigError, DataDirLocked, GatewayError, OutboxCorrupt
    from gateway.service import GatewayService

    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    service = GatewayService(config)
    stop = threading.Event()
    # The cyclic collector's first generation is collected after this many net container allocations
    # instead of 700: the per-result objects are freed by reference counting as they flow through (no
    # cycles), and at 700 the batches in flight set off 211-218 collections per 40,000 results — 0.11-0.14 s
    # of GIL time with the few older ones (gc.callbacks, benchmarks/gateway.py); at 20,000 none. (Cyclic
    # garbage still goes, later.)
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service.start()
    except ConfigError as exc:
        _err(str(exc))
        service.stop()
        return 2
    except OutboxCorrupt as exc:
        _err(str(exc))
        return 3
    except DataDirLocked as exc:
        _err(str(exc))
        return 4
    except GatewayError as exc:
        _err(str(exc))
        service.stop()
        return 1
    deadline = None if args.duration is None else time.monotonic() + args.duration
    code = 0
    while not stop.wait(0.2):
        if service.fatal.is_set():
            _err(f"stopping: {service.fatal_reason}")
            code = 1
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
    service.stop()
    return code


def _open_outbox(path: Path) -> Any:
    from gateway.config import load_config
    from gateway.outbox import Outbox

    config = load_config(path)
    if not config.db_path.exists():
        return config, None
    return config, Outbox.open(config.db_path, check=False)


def _status(args: argparse.Namespace) -> int:
    """Show the outbox of a station: depth, oldest unsent age, last seq, counters, cursors, memory resets,
    config."""
    from gateway.errors import ConfigError, GatewayError

    try:
        config, box = _open_outbox(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    except GatewayError as exc:
        _err(str(exc))
        return 1
    if box is None:
        doc: dict[str, Any] = {"station": config.station_id, "outbox": str(config.db_path), "exists": False}
    else:
        with box:
            stats = box.stats()
            doc = {
                "station": config.station_id,
                "outbox": str(config.db_path),
                "exists": True,
                "depth": stats.depth,
                "oldest_unsent_age_s": stats.oldest_age_s(),
                "last_seq": stats.last_seq,
                "enqueued_total": stats.enqueued_total,
                "acked_total": stats.acked_total,
                "rejected_total": stats.rejected_total,
                "skipped_records": stats.skipped_total,
                "memory_resets": [
                    {
                        "instrument": m.instrument,
                        "epoch": m.new_epoch,
                        "old_last_record": m.old_last_record,
                        "reason": m.reason,
                        "at": m.at,
                    }
                    for m in box.memory_resets()
                ],
                "config_version": stats.config_version or "builtin",
                "cursors": {
                    k: {"epoch": c.epoch, "last_record": c.last_record} for k, c in box.cursors().items()
                },
                "migrations": box.applied_migrations(),
            }
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    for k, v in doc.items():
        if k == "cursors":
            print("cursors:")
            for inst, c in v.items():
                print(f"  {inst}: record {c['last_record']} (epoch {c['epoch']})")
        else:
            print(f"{k}: {v}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Validate a station TOML file and print what it configures."""
    from gateway.config import load_config
    from gateway.errors import ConfigError

    try:
        config = load_config(args.config)
        config.station_key()
        config.mqtt.resolved_password()
    except ConfigError as exc:
        _err(str(exc))
        return 2
    print(f"station {config.station_id}: broker {config.mqtt.url}, data dir {config.data_dir}")
    for inst in config.instruments:
        print(f"  instrument {inst.name}: {inst.driver}{'' if inst.enabled else ' (disabled)'}")
    return 0


def _rejected(args: argparse.Namespace) -> int:
    """List results the cloud rejected (kept locally with the reason; never deleted), or requeue them."""
    from gateway.errors import ConfigError, GatewayError

    try:
        _config, box = _open_outbox(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    except GatewayError as exc:
        _err(str(exc))
        return 1
    if box is None:
        return 0
    with box:
        if args.requeue:
            moved = box.requeue_rejected(args.seq)
            print(
                f"requeued {len(moved)} result(s) for delivery"
                + (f": seq {', '.join(map(str, moved))}" if moved else "")
            )
            return 0
        for row in box.rejected_rows(args.limit):
            print(f"seq {row.seq}  id {row.id}  reason: {row.reason}")
    return 0


def _desk(path: Path) -> Any:
    from gateway.config import load_config
    from gateway.outbox import Outbox
    from gateway.samples import SampleDesk
    from kuaijian_schema.wire import hmac_signer

    config = load_config(path)
    key = config.station_key()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    box = Outbox.open(config.db_path, check=False)
    return SampleDesk(config.station_id, box, hmac_signer(key))


def _sample_register(args: argparse.Namespace) -> int:
    """Register a sample through the outbox (works offline; a running gateway sends it); prints its code."""
    from datetime import date

    from gateway.errors import ConfigError, GatewayError, RegistrationError
    from gateway.samples import SampleForm

    try:
        market = None if args.market_date is None else date.fromisoformat(args.market_date)
    except ValueError:
        _err(f"--market-date: not a date (YYYY-MM-DD): {args.market_date!r}")
        return 2
    try:
        desk = _desk(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    except GatewayError as exc:
        _err(str(exc))
        return 1
    try:
        doc = desk.register(
            SampleForm(
                producer=args.producer,
                product=args.product,
                batch=args.batch,
                quantity_kg=args.quantity_kg,
                sampler=args.sampler,
                plot=args.plot,
                market_date=market,
                retest_of=args.retest_of,
                code=args.code,
            )
        )
    except RegistrationError as exc:
        _err(str(exc))
        return 2
    except GatewayError as exc:
        _err(str(exc))
        return 1
    finally:
        desk.outbox.close()
    print(doc["code"])
    return 0


def _sample_list(args: argparse.Namespace) -> int:
    """List registered samples (newest first) with their delivery state."""
    from gateway.errors import ConfigError, GatewayError

    try:
        desk = _desk(args.config)
    except (ConfigError, GatewayError) as exc:
        _err(str(exc))
        return 2
    with desk.outbox:
        for r in desk.recent(args.limit):
            state = "已上传 sent" if r["delivered"] else "待上传 queued"
            print(
                f"{r['code']}\t{r['producer_name']}\t{r['product']}\t{r['batch']}\t{r['quantity_kg']} kg\t{state}"
            )
    return 0


def _sample_producers(args: argparse.Namespace) -> int:
    """List the producers of this station's village from the last config push (what registration accepts)."""
    from gateway.errors import ConfigError, GatewayError

    try:
        desk = _desk(args.config)
    except (ConfigError, GatewayError) as exc:
        _err(str(exc))
        return 2
    with desk.outbox:
        producers = desk.producers()
    for p in producers:
        print(f"{p.ref}\t{p.kind}\t{p.name}\t{'、'.join(p.products)}")
    if not producers:
        print("尚未收到本村生产主体名单 (no producer list pushed yet)", file=sys.stderr)
    return 0
