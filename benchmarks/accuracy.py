"""Accuracy of the colloidal-gold core under conditions the clean signal model does not produce.

For every demo kit and every condition — clean, dust specks (30 % of strips, one speck within
±(tolerance + line_width) of a line), wide bands (FWHM up to 0.8 × line_width), Lorentzian-mix bands
(pseudo-Voigt η 0–1), tailing bands (far-side sd up to 2.5×), tilted backgrounds (±30 % end to end),
and all of these at once — it generates intact strips with `firmware_sim.signal_model` and reports:

- invalid %: intact strips read `invalid` (false invalid); shape %: test lines turned `suspect` by
  the shape check;
- median and p95 |ratio error| against the truth, and the p95 of a per-strip least-squares reference
  fit (Gaussian band + linear baseline on OD, position/width/area free, scipy.optimize.least_squares)
  on the same strips (all of them by default): "vs fit" is p95(core)/p95(fit) − 1, with the 5–95 %
  range of that figure over paired bootstrap resamples of the strips (how much of it is sampling);
- agreement: verdicts equal to the truth where the true ratio is > 0.08 from every decision boundary
  (a shape-check `suspect` counts as a disagreement); wrong: of those, the share read the other way
  (positive ↔ negative) — the safety figure;
- missing control: strips without a control line (signal-model fault, all conditions' shapes and
  tilts) that are not `invalid`, without and with a dust speck of integrated OD 0.3–3 (σ 0.6–1.3 px)
  anywhere within ±tolerance of the control position. Must be 0.

The last line is the summary: cells above the fit's p95 (of 42), missing-control strips not invalid
and the worst false-invalid rate on clean strips.

    .venv/bin/python benchmarks/accuracy.py                      # 2,000 strips per kit × condition
    .venv/bin/python benchmarks/accuracy.py --strips 500 --kit imidacloprid-v1
    .venv/bin/python benchmarks/accuracy.py --median 5           # with the running-median pre-filter
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_sim.signal_model import GoldConditions, generate_strips
from gateway.interpret import GoldFlag, Verdict, interpret_strips
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import StripSpec

F64 = npt.NDArray[np.float64]
MARGIN = 0.08
BASE = GoldConditions()
CONDITIONS: dict[str, GoldConditions] = {
    "clean": BASE,
    "specks": replace(BASE, p_speck=0.3),
    "wide": replace(BASE, sigma_frac=(0.13, 0.34)),
    "lorentz": replace(BASE, lorentz_fraction=(0.0, 1.0)),
    "tailing": replace(BASE, tailing=(0.0, 1.5)),
    "tilted": replace(BASE, drift=0.3),
    "all": replace(
        BASE,
        p_speck=0.3,
        sigma_frac=(0.13, 0.34),
        lorentz_fraction=(0.0, 1.0),
        tailing=(0.0, 1.5),
        drift=0.3,
    ),
}


def reference_fit(profiles: F64, spec: StripSpec) -> F64:
    """Ratio (n, K) by a per-strip, per-line least-squares fit of a + b·x + A·N(x; c, s) to the OD
    over ±(tolerance + line_width) of each nominal line (unweighted, scipy.optimize.least_squares with
    the model's analytic Jacobian; centre within ±tolerance, sd 0.3 … line_width); A is the integrated
    OD. The same fit as the numerically differentiated one to < 2e-6 in the ratio, 1.6–1.8× faster."""
    from scipy.optimize import least_squares

    w = spec.line_width
    tol = spec.tolerance
    nominal = [spec.control_position, *(ln.position for ln in spec.lines)]
    reach = round(tol + w)
    out = np.empty((profiles.shape[0], len(spec.lines)))
    inv_sqrt_2pi = 1.0 / math.sqrt(2 * math.pi)
    for i in range(profiles.shape[0]):
        areas = []
        for c0 in nominal:
            lo, hi = max(0, round(c0) - reach), min(spec.length, round(c0) + reach + 1)
            x = np.arange(lo, hi, dtype=np.float64) - c0
            y = -np.log10(np.maximum(profiles[i, lo:hi], 1e-4))

            def resid(p: F64, x: F64 = x, y: F64 = y) -> F64:
                a, b, area, c, s = p
                g = np.exp(-0.5 * ((x - c) / s) ** 2) * (inv_sqrt_2pi / s)
                out: F64 = a + b * x + area * g - y
                return out

            def jac(p: F64, x: F64 = x) -> F64:
                _, _, area, c, s = p
                z = (x - c) / s
                g = np.exp(-0.5 * z * z) * (inv_sqrt_2pi / s)
                out: F64 = np.stack(
                    [np.ones_like(x), x, g, area * g * z / s, area * g * (z * z - 1) / s], axis=1
                )
                return out

            edge = np.concatenate([y[:5], y[-5:]])
            p0 = np.array([float(edge.mean()), 0.0, max(0.01, float((y - edge.mean()).sum())), 0.0, 0.15 * w])
            fit = least_squares(
                resid,
                p0,
                jac=jac,
                bounds=([-np.inf, -np.inf, -np.inf, -tol, 0.3], [np.inf, np.inf, np.inf, tol, w]),
            )
            areas.append(float(fit.x[2]))
        ctrl = areas[0]
        out[i] = [max(t, 0.0) / ctrl if ctrl > 0 else np.nan for t in areas[1:]]
    return out


def _reference(profiles: F64, spec: StripSpec, jobs: int) -> F64:
    """`reference_fit` over `jobs` worker processes (contiguous slices, results in order)."""
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    try:
        pickle.dumps(reference_fit)  # loaded under a name a worker cannot import (a test): run here
    except pickle.PicklingError:
        jobs = 1
    if jobs <= 1 or profiles.shape[0] < 2 * jobs:
        return reference_fit(profiles, spec)

    parts = np.array_split(profiles, jobs)
    with ProcessPoolExecutor(jobs) as pool:
        return np.concatenate(list(pool.map(reference_fit, parts, [spec] * jobs)))


def _p95_gap(err: F64, err_ref: F64, rng: np.random.Generator, n_boot: int = 400) -> tuple[float, float]:
    """5th and 95th percentile of p95(core)/p95(fit) − 1 over paired bootstrap resamples of the strips."""
    idx = rng.integers(0, err.size, (n_boot, err.size))
    gap = np.nanpercentile(err[idx], 95, axis=1) / np.nanpercentile(err_ref[idx], 95, axis=1) - 1.0
    lo, hi = np.percentile(gap, [5, 95])
    return float(lo), float(hi)


def far_from_boundaries(spec: StripSpec, ratio: F64) -> npt.NDArray[np.bool_]:
    cut = np.array([ln.cutoff for ln in spec.lines])
    band = np.array([ln.suspect_band for ln in spec.lines])
    other = cut + band if spec.format == "competitive" else cut - band
    far: npt.NDArray[np.bool_] = (np.abs(ratio - cut) > MARGIN) & (np.abs(ratio - other) > MARGIN)
    return far


def speck_od(length: int, centre: F64, area: F64, sigma: F64) -> F64:
    x = np.arange(length)[None, :]
    out: F64 = (area / (sigma * math.sqrt(2 * math.pi)))[:, None] * np.exp(
        -0.5 * ((x - centre[:, None]) / sigma[:, None]) ** 2
    )
    return out


def missing_control(spec: StripSpec, n: int, rng: np.random.Generator, median: int = 0) -> tuple[int, int]:
    """(not invalid without speck, not invalid with a speck in the control window) of n strips each."""
    cond = CONDITIONS["all"]
    plain = generate_strips(spec, n, rng, conditions=replace(cond, p_speck=0.0), fault="control_missing")
    a = int(
        (interpret_strips(plain.profiles, spec, median=median).verdict != Verdict.INVALID).any(axis=1).sum()
    )
    batch = generate_strips(spec, n, rng, conditions=replace(cond, p_speck=0.0), fault="control_missing")
    centre = spec.control_position + rng.uniform(-spec.tolerance, spec.tolerance, n)
    od = speck_od(spec.length, centre, rng.uniform(0.3, 3.0, n), rng.uniform(0.6, 1.3, n))
    specked = np.clip(batch.profiles * 10.0**-od, 0.001, 1.0)
    b = int((interpret_strips(specked, spec, median=median).verdict != Verdict.INVALID).any(axis=1).sum())
    return a, b


def run(args: argparse.Namespace) -> dict[str, float]:
    kits = [args.kit] if args.kit else sorted(DEMO_KITS)
    worst: dict[str, float] = {"missing_valid": 0, "false_invalid": 0.0, "above": 0, "cells": 0}
    gaps: list[str] = []
    print(
        f"{'kit':<20} {'condition':<8} {'invalid%':>8} {'shape%':>7} {'median':>7} {'p95':>7} "
        f"{'p95 fit':>7} {'vs fit':>7} {'90% interval':>15} {'agree':>7} {'fit agr':>7} {'wrong%':>7} "
        f"{'fit wr%':>7}"
    )
    for kit in kits:
        spec = DEMO_KITS[kit]
        for name, cond in CONDITIONS.items():
            rng = np.random.default_rng(
                [args.seed, sorted(DEMO_KITS).index(kit), list(CONDITIONS).index(name)]
            )
            batch = generate_strips(spec, args.strips, rng, conditions=cond)
            res = interpret_strips(batch.profiles, spec, median=args.median)
            truth = batch.truth
            invalid = (res.verdict == Verdict.INVALID).any(axis=1)
            shape = (res.flags & GoldFlag.TEST_SHAPE) != 0
            ok = ~invalid
            err = np.abs(res.ratio - truth.ratio)[ok]
            far = far_from_boundaries(spec, truth.ratio)
            agree = float((res.verdict == truth.verdict)[far].mean())
            wrong = float(_flipped(res.verdict, truth.verdict)[far].mean())
            # the reference fit on the first m strips; both p95s over the same (valid) strips of those
            m = min(args.ref_strips, args.strips) if args.ref_strips > 0 else args.strips
            ref = _reference(batch.profiles[:m], spec, args.jobs)
            sub = ok[:m]
            err_sub = np.abs(res.ratio[:m] - truth.ratio[:m])[sub]
            err_ref = np.abs(ref - truth.ratio[:m])[sub]
            ref_v = _verdicts(spec, ref)
            ref_agree = float((ref_v == truth.verdict[:m])[far[:m]].mean())
            ref_wrong = float(_flipped(ref_v, truth.verdict[:m])[far[:m]].mean())
            p95_sub, p95_ref = float(np.nanpercentile(err_sub, 95)), float(np.nanpercentile(err_ref, 95))
            gap = p95_sub / p95_ref - 1.0
            lo, hi = _p95_gap(err_sub.ravel(), err_ref.ravel(), np.random.default_rng([args.seed, 7]))
            print(
                f"{kit:<20} {name:<8} {100 * invalid.mean():8.2f} {100 * shape.mean():7.2f} "
                f"{np.median(err):7.4f} {p95_sub:7.4f} {p95_ref:7.4f} {100 * gap:+6.1f}% "
                f"{f'{100 * lo:+.1f}…{100 * hi:+.1f}%':>15} "
                f"{agree:7.4f} {ref_agree:7.4f} {100 * wrong:7.2f} {100 * ref_wrong:7.2f}",
                flush=True,
            )
            if name == "clean":
                worst["false_invalid"] = max(worst["false_invalid"], float(invalid.mean()))
            worst["cells"] += 1
            if p95_sub > p95_ref:
                worst["above"] += 1
                gaps.append(f"{kit} {name} {100 * gap:+.1f}%")
        a, b = missing_control(spec, args.missing, np.random.default_rng([args.seed, 99]), args.median)
        print(f"{kit:<20} missing control: {a}/{args.missing} not invalid, {b}/{args.missing} with a speck")
        worst["missing_valid"] += a + b
    if gaps:
        print("above the fit's p95: " + "; ".join(gaps))
    return worst


def _flipped(verdict: npt.NDArray[np.int8], truth: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """Read positive where the truth is negative, or negative where it is positive."""
    out: npt.NDArray[np.bool_] = ((verdict == Verdict.POSITIVE) & (truth == Verdict.NEGATIVE)) | (
        (verdict == Verdict.NEGATIVE) & (truth == Verdict.POSITIVE)
    )
    return out


def _verdicts(spec: StripSpec, ratio: F64) -> npt.NDArray[np.int8]:
    cut = np.array([ln.cutoff for ln in spec.lines])[None, :]
    band = np.array([ln.suspect_band for ln in spec.lines])[None, :]
    with np.errstate(invalid="ignore"):
        if spec.format == "competitive":
            pos, sus = ratio < cut, ratio < cut + band
        else:
            pos, sus = ratio >= cut, ratio >= cut - band
    v = np.where(pos, Verdict.POSITIVE, np.where(sus, Verdict.SUSPECT, Verdict.NEGATIVE)).astype(np.int8)
    v[np.isnan(ratio)] = Verdict.INVALID
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kit", choices=sorted(DEMO_KITS), help="one kit (default: all)")
    p.add_argument("--strips", type=int, default=2000, help="intact strips per kit × condition")
    p.add_argument(
        "--ref-strips",
        type=int,
        default=0,
        help="strips per kit × condition for the reference fit (default 0: all of them)",
    )
    p.add_argument("--jobs", type=int, default=2, help="processes for the reference fit")
    p.add_argument("--missing", type=int, default=1000, help="missing-control strips per kit and case")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--median", type=int, default=0, choices=(0, 3, 5), help="running-median pre-filter")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    worst = run(args)
    print(
        f"\nsummary: cells above the fit's p95: {int(worst['above'])} of {int(worst['cells'])}; "
        f"missing-control strips not invalid: {int(worst['missing_valid'])}; worst false invalid on "
        f"clean strips {100 * worst['false_invalid']:.2f} %  ({time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
