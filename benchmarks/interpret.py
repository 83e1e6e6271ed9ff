"""Benchmark of the interpretation core on one core: vectorized vs naive per-item reference.

Gold: strips/s of `interpret_strips` on N profiles (default 10,000 × 1024 px) against the naive
per-strip loop (the same rules, a Python loop per strip, line and window width with small numpy sums,
`gateway.interpret.reference`) run in the same process on a subset, and against the memory-bandwidth bound of reading the input once (a numpy sum over the
same array). Enzyme: channels/s of `interpret_kinetics` against a per-channel np.polyfit loop.
Both fast and naive results are compared (ratio / ΔA differences, verdict agreement) before timing
is reported. Threads are limited to 1 (BLAS/OpenMP env vars set before numpy is imported) and the
process is pinned to one CPU.

    .venv/bin/python benchmarks/interpret.py                   # defaults
    .venv/bin/python benchmarks/interpret.py --strips 50000 --kit nitrofurans-card-v1
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_sim.signal_model import (  # noqa: E402
    EnzymeConditions,
    GoldConditions,
    generate_kinetics,
    generate_strips,
)
from gateway.interpret import Verdict, interpret_kinetics, interpret_strips  # noqa: E402
from gateway.interpret.reference import naive_interpret_kinetics, naive_interpret_strips  # noqa: E402
from kuaijian_schema.kits import DEMO_KITS  # noqa: E402
from kuaijian_schema.specs import GB_T_5009_199  # noqa: E402


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Smallest wall time of `repeat` calls (s)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def row(name: str, rate: float, unit: str, ref: float | None, note: str = "") -> str:
    rel = f"{rate / ref:9.1f}×" if ref else " " * 10
    return f"  {name:<44} {rate:>14,.0f} {unit:<11} {rel}  {note}"


def bench_gold(args: argparse.Namespace) -> dict[str, float]:
    spec = DEMO_KITS[args.kit]
    rng = np.random.default_rng(args.seed)
    cond = GoldConditions(
        p_control_missing=0.02, p_control_weak=0.02, p_control_offset=0.02, p_saturated=0.02
    )
    batch = generate_strips(spec, args.strips, rng, conditions=cond)
    x = np.ascontiguousarray(batch.profiles)
    n = x.shape[0]
    nn = min(args.naive_strips, n)

    fast = interpret_strips(x, spec)
    _, n_ratio, n_verdict = naive_interpret_strips(x[:nn], spec)
    ok = ~batch.truth.invalid[:nn]
    ratio_diff = float(np.abs(n_ratio[ok] - fast.ratio[:nn][ok]).max())
    agree = float((n_verdict == fast.verdict[:nn]).mean())
    assert (n_verdict[~ok] == Verdict.INVALID).all()
    assert (fast.verdict[:nn][~ok] == Verdict.INVALID).all()
    assert ratio_diff < 1e-3, f"fast and naive ratios differ by {ratio_diff}"
    assert agree == 1.0, f"fast and naive verdicts differ on {1 - agree:.2%} of lines"
    truth_err = float(
        np.abs(fast.ratio[~batch.truth.invalid] - batch.truth.ratio[~batch.truth.invalid]).max()
    )

    t_fast = best_of(lambda: interpret_strips(x, spec), args.repeat)
    x32 = x.astype(np.float32)
    t_fast32 = best_of(lambda: interpret_strips(x32, spec), args.repeat)
    t_med3 = best_of(lambda: interpret_strips(x, spec, median=3), args.repeat)
    t_med5 = best_of(lambda: interpret_strips(x, spec, median=5), args.repeat)
    t_naive = best_of(lambda: naive_interpret_strips(x[:nn], spec), 1) / nn * n
    t_sum = best_of(lambda: x.sum(), args.repeat)
    dst = np.empty_like(x)
    t_copy = best_of(lambda: np.copyto(dst, x), args.repeat)

    mb = x.nbytes / 1e6
    print(
        f"\nGOLD  kit {spec.name} ({len(spec.lines)} T line(s)), {n:,} profiles × {x.shape[1]} px float64 "
        f"= {mb:,.0f} MB; naive timed on {nn:,} strips"
    )
    print(f"  {'':<44} {'strips/s':>14} {'':<11} {'vs naive':>10}")
    print(row("naive per-strip loop", n / t_naive, "strips/s", n / t_naive))
    print(
        row("interpret_strips (float64 input)", n / t_fast, "strips/s", n / t_naive, f"{t_fast * 1e3:.1f} ms")
    )
    print(
        row(
            "interpret_strips (float32 input)",
            n / t_fast32,
            "strips/s",
            n / t_naive,
            f"{t_fast32 * 1e3:.1f} ms",
        )
    )
    for label, t_med in (
        ("+ running median 3 pre-filter", t_med3),
        ("+ running median 5 pre-filter", t_med5),
    ):
        note = f"{t_med * 1e3:.1f} ms, +{(t_med / t_fast - 1) * 100:.0f} % time"
        print(row(label, n / t_med, "strips/s", n / t_naive, note))
    print(
        row(
            "bound: read input once (x.sum())",
            n / t_sum,
            "strips/s",
            n / t_naive,
            f"{t_sum * 1e3:.1f} ms, {x.nbytes / t_sum / 1e9:.1f} GB/s",
        )
    )
    print(row("bound: copy input (np.copyto)", n / t_copy, "strips/s", n / t_naive, f"{t_copy * 1e3:.1f} ms"))
    print(
        f"  fast = {t_fast / t_sum:.2f}× the time of one read of the input; "
        f"fast vs naive: max |Δratio| {ratio_diff:.4f} (intact strips), verdict agreement {agree:.4f}; "
        f"fast vs truth: max |Δratio| {truth_err:.4f}"
    )
    return {"gold_speedup": t_naive / t_fast, "gold_vs_bandwidth": t_fast / t_sum}


def bench_enzyme(args: argparse.Namespace) -> dict[str, float]:
    spec = GB_T_5009_199
    rng = np.random.default_rng(args.seed)
    cond = EnzymeConditions(p_weak_control=0.03, p_falling=0.02, p_noisy=0.02)
    b = generate_kinetics(spec, args.runs, args.channels, rng, conditions=cond)
    nr = min(args.naive_runs, args.runs)
    fast = interpret_kinetics(b.times_s, b.absorbance, b.control, spec)
    n_delta, _, n_verdict = naive_interpret_kinetics(b.times_s, b.absorbance[:nr], b.control[:nr], spec)
    delta_diff = float(np.abs(n_delta - fast.delta_a[:nr]).max())
    agree = float((n_verdict == fast.verdict[:nr]).mean())
    assert delta_diff < 1e-9, f"fast and naive ΔA differ by {delta_diff}"

    items = args.runs * args.channels
    t_fast = best_of(lambda: interpret_kinetics(b.times_s, b.absorbance, b.control, spec), args.repeat)
    t_naive = best_of(lambda: naive_interpret_kinetics(b.times_s, b.absorbance[:nr], b.control[:nr], spec), 1)
    t_naive = t_naive / (nr * args.channels) * items
    t_sum = best_of(lambda: b.absorbance.sum(), args.repeat)
    print(
        f"\nENZYME  {args.runs:,} runs × {args.channels} channels × {b.times_s.size} readings "
        f"= {b.absorbance.nbytes / 1e6:,.0f} MB; naive timed on {nr:,} runs"
    )
    print(f"  {'':<44} {'channels/s':>14} {'':<11} {'vs naive':>10}")
    print(row("naive per-channel np.polyfit loop", items / t_naive, "channels/s", items / t_naive))
    print(row("interpret_kinetics", items / t_fast, "channels/s", items / t_naive, f"{t_fast * 1e3:.1f} ms"))
    print(
        row(
            "bound: read input once (a.sum())",
            items / t_sum,
            "channels/s",
            items / t_naive,
            f"{t_sum * 1e3:.1f} ms",
        )
    )
    print(f"  fast vs naive: max |ΔA diff| {delta_diff:.2e}, verdict agreement {agree:.4f}")
    return {"enzyme_speedup": t_naive / t_fast}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kit", default="imidacloprid-v1", choices=sorted(DEMO_KITS))
    p.add_argument("--strips", type=int, default=10_000)
    p.add_argument("--naive-strips", type=int, default=1_000)
    p.add_argument("--runs", type=int, default=20_000)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--naive-runs", type=int, default=300)
    p.add_argument("--repeat", type=int, default=7, help="best of N timings for the fast paths")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = p.parse_args(argv)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to CPU {cpu}; BLAS/OpenMP threads = 1; numpy {np.__version__}")
    res = bench_gold(args) | bench_enzyme(args)
    print(
        f"\nsummary: gold {res['gold_speedup']:.0f}× naive (target ≥ 150×), "
        f"{res['gold_vs_bandwidth']:.1f}× one input read; enzyme {res['enzyme_speedup']:.0f}× naive (target ≥ 300×)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
