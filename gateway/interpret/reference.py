"""Naive per-strip / per-channel reference implementations, for verification and benchmarks only.

Does: the same physics and decision rules as `gold.interpret_strips` and `enzyme.interpret_kinetics`,
written the obvious way — a Python loop per strip with scipy.signal.find_peaks, and np.polyfit per
channel — so tests can check the vectorized core against an independent implementation and the
benchmark can measure the speed-up.

Does not: serve production traffic (no validation, no flags beyond the verdict). It needs scipy, a
development dependency, imported inside `naive_interpret_strips` only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.interpret.codes import Verdict
from gateway.interpret.lines import FLOOR, layout
from kuaijian_schema.specs import EnzymeSpec, StripSpec

F64 = npt.NDArray[np.float64]


def naive_interpret_strips(profiles: F64, spec: StripSpec) -> tuple[F64, F64, npt.NDArray[np.int8]]:
    """Per-strip reference (numpy + scipy.signal.find_peaks loop) used by tests and the benchmark.

    Same physics and rules as `interpret_strips`, written the obvious way: per strip, per line, take the
    most prominent OD peak in the search window (find_peaks), then sum the baseline-corrected OD over the
    integration window, the baseline being the mean of the two flanks.
    Returns (control_signal (N,), ratio (N, K), verdict (N, K)).
    """
    from scipy.signal import find_peaks

    lay = layout(spec)
    n = profiles.shape[0]
    k = len(spec.lines)
    ctrl = np.empty(n)
    ratio = np.empty((n, k))
    verdict = np.empty((n, k), dtype=np.int8)
    tol, h, f = lay.tol, lay.h0, lay.f
    for i in range(n):
        y = -np.log10(np.maximum(profiles[i], float(FLOOR)))
        sigs = []
        saturated = False
        edge0 = False
        for j, c in enumerate(lay.nominal):
            lo, hi = c - tol, c + tol + 1
            region = profiles[i, max(0, lo - h - f) : hi + h + f]
            if spec.saturation_reflectance > 0 and region.min() < spec.saturation_reflectance:
                saturated = True
            # the most prominent local maximum of OD in the search window (or its maximum)
            window = y[lo:hi]
            peaks, props = find_peaks(window, prominence=0.0)
            best_p = lo + int(peaks[np.argmax(props["prominences"])] if peaks.size else np.argmax(window))
            idx_l = np.clip(np.arange(best_p - h - f, best_p - h), 0, lay.length - 1)
            idx_r = np.clip(np.arange(best_p + h + 1, best_p + h + f + 1), 0, lay.length - 1)
            base = (y[idx_l].mean() + y[idx_r].mean()) / 2
            best_s = float(np.sum(y[best_p - h : best_p + h + 1] - base))
            sigs.append(best_s)
            if j == 0:
                edge0 = best_p <= lo or best_p >= hi - 1
        ctrl[i] = sigs[0]
        for kk in range(k):
            r = max(sigs[1 + kk], 0.0) / sigs[0] if sigs[0] > 0 else np.nan
            ratio[i, kk] = r
            cut, band = spec.lines[kk].cutoff, spec.lines[kk].suspect_band
            if saturated or edge0 or sigs[0] < spec.min_control_signal:
                v = Verdict.INVALID
            elif spec.format == "competitive":
                v = Verdict.POSITIVE if r < cut else Verdict.SUSPECT if r < cut + band else Verdict.NEGATIVE
            else:
                v = Verdict.POSITIVE if r >= cut else Verdict.SUSPECT if r >= cut - band else Verdict.NEGATIVE
            verdict[i, kk] = v
    return ctrl, ratio, verdict


def naive_interpret_kinetics(
    times_s: F64, absorbance: F64, control: npt.NDArray[np.intp], spec: EnzymeSpec
) -> tuple[F64, F64, npt.NDArray[np.int8]]:
    """Per-channel np.polyfit loop. Returns (delta_a (R, C), inhibition (R, C), verdict (R, C))."""
    r_n, c_n, _ = absorbance.shape
    win = (times_s >= spec.window_start_s) & (times_s <= spec.window_end_s)
    t = times_s[win]
    span = spec.window_end_s - spec.window_start_s
    delta = np.empty((r_n, c_n))
    inh = np.empty((r_n, c_n))
    verdict = np.empty((r_n, c_n), dtype=np.int8)
    for r in range(r_n):
        for c in range(c_n):
            slope = np.polyfit(t, absorbance[r, c, win], 1)[0]
            delta[r, c] = slope * span
        dc = delta[r, control[r]]
        run_ok = dc >= spec.min_control_delta
        for c in range(c_n):
            i = 0.0 if c == control[r] else min(max((dc - delta[r, c]) / dc * 100.0, 0.0), 100.0)
            inh[r, c] = i
            if not run_ok or delta[r, c] < -spec.fall_tolerance:
                v = Verdict.INVALID
            elif c == control[r]:
                v = Verdict.NEGATIVE
            elif i >= spec.positive_pct:
                v = Verdict.POSITIVE
            elif i >= spec.suspect_low_pct:
                v = Verdict.SUSPECT
            else:
                v = Verdict.NEGATIVE
            verdict[r, c] = v
    return delta, inh, verdict
