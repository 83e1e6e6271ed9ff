"""`kuaijian sim enzyme`: run a simulated enzyme-inhibition analyzer (Modbus TCP and/or RTU on a pty).

Does: start `firmware_sim.enzyme_modbus.EnzymeSimulator`, print where it listens (one line per
transport, flushed), optionally preload runs, measure periodically and inject faults; stop cleanly on
Ctrl-C / SIGTERM or after `--duration`.

Does not: anything a library caller could not do with `EnzymeSimulator` directly.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from firmware_sim.runloop import stop_on_signals, wait_until

PROFILES = ("gb", "ny")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `enzyme` to the `kuaijian sim` group."""
    p = subparsers.add_parser(
        "enzyme",
        help="simulated enzyme-inhibition analyzer (Modbus TCP and/or RTU on a pty)",
        description="Serve a simulated enzyme-inhibition analyzer with the kuaijian Modbus register map "
        "(docs/protocols/modbus-enzyme.md) and print where it listens. Runs until Ctrl-C / SIGTERM "
        "or --duration.",
    )
    p.add_argument("--host", default="127.0.0.1", help="Modbus TCP listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5020, help="Modbus TCP port, 0 = any free (default 5020)")
    p.add_argument("--no-tcp", action="store_true", help="do not serve Modbus TCP")
    p.add_argument("--rtu", action="store_true", help="also serve Modbus RTU on a new pseudo-terminal")
    p.add_argument("--baudrate", type=int, default=19200, help="RTU baud rate (default 19200)")
    p.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    p.add_argument("--serial", default="EN-0001", help="device serial number (default EN-0001)")
    p.add_argument("--model", default="KJ-E12", help="model name (default KJ-E12)")
    p.add_argument("--channels", type=int, default=12, help="cuvette channels 2..16 (default 12)")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="gb",
        help="gb = GB/T 5009.199-2003, ny = NY/T 448 (default gb)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the signal model (default 0)")
    p.add_argument("--preload", type=int, default=0, metavar="N", help="measure N runs before serving")
    p.add_argument("--measure-every", type=float, default=0.0, metavar="S", help="measure a run every S s")
    p.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="stop after S s (0 = until signal)"
    )
    p.add_argument("--json", action="store_true", help="print the endpoints as one JSON line instead")
    faults = p.add_argument_group("fault injection (every request while set)")
    faults.add_argument("--exception", type=int, default=None, metavar="CODE", help="answer exception CODE")
    faults.add_argument("--delay", type=float, default=0.0, metavar="S", help="reply latency (slow device)")
    faults.add_argument("--silent", action="store_true", help="never answer")
    faults.add_argument("--garble", action="store_true", help="RTU: flip a bit in every reply")
    faults.add_argument("--torn", action="store_true", help="run page changes between reads")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from firmware_sim.enzyme_modbus import EnzymeSimulator, ModbusFaults
    from kuaijian_schema.specs import GB_T_5009_199, NY_T_448

    if not 2 <= args.channels <= 16:
        print("--channels must be 2..16", flush=True)
        return 2
    if args.no_tcp and not args.rtu:
        print("nothing to serve: --no-tcp without --rtu", flush=True)
        return 2
    faults = ModbusFaults(
        exception_code=args.exception,
        silent=args.silent,
        delay_s=args.delay,
        garble=args.garble,
        torn_reads=args.torn,
    )
    profile = GB_T_5009_199 if args.profile == "gb" else NY_T_448
    sim = EnzymeSimulator(
        serial=args.serial,
        model=args.model,
        channels=args.channels,
        profile=profile,
        seed=args.seed,
        faults=faults,
        unit=args.unit,
    )
    with stop_on_signals() as done:
        try:
            for i in range(args.preload):
                ids = [f"{args.serial}-P{i + 1:04d}-{c:02d}" for c in range(1, args.channels)]
                sim.measure(ids, ["菠菜"] * (args.channels - 1))
            endpoints: dict[str, Any] = {
                "serial": args.serial,
                "model": args.model,
                "channels": args.channels,
                "profile": profile.name,
                "unit": args.unit,
            }
            if not args.no_tcp:
                host, port = sim.start_tcp(args.host, args.port)
                endpoints["tcp"] = f"{host}:{port}"
            if args.rtu:
                endpoints["rtu"] = sim.start_rtu(args.baudrate)
            if args.json:
                print(json.dumps(endpoints, ensure_ascii=False), flush=True)
            else:
                print(
                    f"enzyme analyzer {args.serial} ({args.model}, {args.channels} channels, "
                    f"profile {profile.name}), unit {args.unit}",
                    flush=True,
                )
                if "tcp" in endpoints:
                    print(f"modbus-tcp listening on {endpoints['tcp']}", flush=True)
                if "rtu" in endpoints:
                    print(f"modbus-rtu listening on {endpoints['rtu']} ({args.baudrate} 8N1)", flush=True)
                print(f"runs in memory: {sim.run_counter}", flush=True)
            if args.measure_every > 0:
                sim.auto_measure(args.measure_every)
            wait_until(done, args.duration)
        finally:
            sim.stop()
    print("stopped", flush=True)
    return 0
