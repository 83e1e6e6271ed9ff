"""`kuaijian sim gold`: run a simulated colloidal-gold reader on a pseudo-terminal from the command line.

Does: start `firmware_sim.gold_serial.GoldSimulator`, print the pty slave path and the stable link the
gateway can be configured with, optionally measure strips periodically and inject faults; stop cleanly on
Ctrl-C / SIGTERM or after `--duration`.

Does not: anything a library caller could not do with `GoldSimulator` directly.
"""

from __future__ import annotations

import argparse
from typing import Any

from firmware_sim.runloop import stop_on_signals, wait_until


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `gold` to the `kuaijian sim` group."""
    p = subparsers.add_parser(
        "gold",
        help="simulated colloidal-gold strip reader on a pty (gold-serial protocol)",
        description="Serve a simulated colloidal-gold strip reader on a real pseudo-terminal and print "
        "where it listens. Runs until Ctrl-C / SIGTERM or --duration.",
    )
    p.add_argument("--serial", default="GR-0001", help="device serial number (default GR-0001)")
    p.add_argument("--model", default="KJ-G8", help="model name (default KJ-G8)")
    p.add_argument("--channels", type=int, default=8, help="strip channels (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the signal model (default 0)")
    p.add_argument("--link", default=None, help="create the stable symlink here (default: a temp dir)")
    p.add_argument("--memory", type=int, default=1000, metavar="N", help="records kept (oldest dropped)")
    p.add_argument("--preload", type=int, default=0, metavar="N", help="measure N strips before serving")
    p.add_argument(
        "--measure-every", type=float, default=0.0, metavar="S", help="measure a random strip every S s"
    )
    p.add_argument("--positive-rate", type=float, default=0.1, help="share of positive strips (default 0.1)")
    p.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="stop after S s (0 = until signal)"
    )
    faults = p.add_argument_group("fault injection (probabilities per frame / request)")
    fault_help = {
        "garble": "replace one byte of an outgoing frame",
        "bad-crc": "send a frame with a wrong CRC",
        "truncate": "cut an outgoing frame short",
        "noise": "send 1-16 random bytes before a frame",
        "silence": "ignore a request (no reply)",
        "nak": "NAK a valid request as busy (NAK storm)",
        "rx-garble": "corrupt one byte of received data (the reader NAKs it)",
    }
    for name, text in fault_help.items():
        faults.add_argument(f"--{name}", type=float, default=0.0, metavar="P", help=f"{text} (default 0)")
    faults.add_argument("--delay", type=float, default=0.0, metavar="S", help="reply latency (slow device)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from firmware_sim.gold_serial import FaultConfig, GoldSimulator
    from firmware_sim.record_store import DEMO_PRODUCTS

    if not 1 <= args.channels <= 255 or args.memory < 1:
        print("--channels must be 1..255 and --memory >= 1", flush=True)
        return 2
    faults = FaultConfig(
        garble=args.garble,
        bad_crc=args.bad_crc,
        truncate=args.truncate,
        noise=args.noise,
        silence=args.silence,
        nak=args.nak,
        rx_garble=args.rx_garble,
        delay_s=args.delay,
    )
    sim = GoldSimulator(
        serial=args.serial,
        model=args.model,
        channels=args.channels,
        seed=args.seed,
        faults=faults,
        link_path=args.link,
        memory=args.memory,
    )
    with stop_on_signals() as done:
        try:
            kits = sorted(sim.store.kits)
            for i in range(args.preload):
                sim.measure(
                    kits[i % len(kits)],
                    i % args.channels + 1,
                    f"{args.serial}-P{i + 1:05d}",
                    DEMO_PRODUCTS[i % len(DEMO_PRODUCTS)],
                    0.0,
                )
            path = sim.start()
            print(
                f"gold reader {args.serial} ({args.model}, {args.channels} channels) listening on {path}",
                flush=True,
            )
            print(f"stable link: {sim.link_path}", flush=True)
            print(f"records in memory: {len(sim.truth)}", flush=True)
            if args.measure_every > 0:
                sim.auto_measure(
                    args.measure_every,
                    positive_rate=args.positive_rate,
                    on_record=lambda n: print(f"measured record {n}", flush=True),
                )
            wait_until(done, args.duration)
        finally:
            sim.stop()
    if sim.errors:
        print(f"simulator thread failed: {sim.errors[0]!r}", flush=True)
        return 1
    print("stopped", flush=True)
    return 0
