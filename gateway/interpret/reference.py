"""Naive per-strip / per-channel reference implementations, for verification and benchmarks only.

Does: the same physics and decision rules as `gold.interpret_strips` and `enzyme.interpret_kinetics`,
written the obvious way — a Python loop per strip, line, candidate position and window width with
small numpy sums, and np.polyfit per channel — so tests can check the vectorized core against an
independent implementation and the benchmark can measure the speed-up. It shares only the constants
(thresholds) and the kit geometry (`lines.layout`) with the core, none of its arithmetic.

Does not: serve production traffic (no input validation, no flags beyond the verdict).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from gateway.interpret.areas import MAX_SHIFT, MAX_SHIFT_STEP, MAX_WIDTH_STEP, SHAPE_STEPS
from gateway.interpret.codes import Verdict
from gateway.interpret.gold import (
    FWHM_RANGE,
    MAX_ASYMMETRY,
    MISSING_FRACTION,
    SHAPE_SNR,
    SHAPE_Z,
)
from gateway.interpret.lines import (
    ADAPT_SNR,
    CORE_SHIFT,
    FIT_CHI2,
    FIT_WIDTH,
    FLOOR,
    MIN3_BIAS,
    MIN3_VAR,
    SHAPE_CHI2,
    SPECK_SPREAD,
    SUBFLANKS,
    WINDOW_SIGMAS,
    layout,
)
from kuaijian_schema.specs import EnzymeSpec, StripSpec

F64 = npt.NDArray[np.float64]


def naive_interpret_strips(profiles: F64, spec: StripSpec) -> tuple[F64, F64, npt.NDArray[np.int8]]:
    """Per-strip reference (a Python loop per strip, line and window width) used by tests and the
    benchmark: the rules of `interpret_strips` (gold/2.2) written the obvious way, without the matrix
    products — locate each line by the narrow-window OD minus its flanks (parabolic refinement), then,
    centred there, per candidate width: sub-flank baselines, window and Gaussian-weighted sums, the
    3-px peak; the window from the control's measured width; shape and SNR tests; the ratio's line
    areas by a weighted least-squares fit per line (np.linalg.lstsq), or the Gaussian-weighted sums when
    a line's fit leaves χ²/dof above FIT_CHI2 noise variances; verdicts.
    Returns (control_signal (N,), ratio (N, K), verdict (N, K))."""
    lay = layout(spec)
    n = profiles.shape[0]
    k = len(spec.lines)
    ctrl = np.empty(n)
    ratio = np.empty((n, k))
    verdict = np.empty((n, k), dtype=np.int8)
    tol, h0, f, hp = lay.tol, lay.h0, lay.f, lay.hp
    for i in range(n):
        od = -np.log10(np.maximum(profiles[i], float(FLOOR)))

        def at(lo: int, hi: int, od: F64 = od) -> F64:
            """OD of pixels lo … hi−1, edge-clamped like the core's regions."""
            out: F64 = od[np.clip(np.arange(lo, hi), 0, lay.length - 1)]
            return out

        lines = []
        for c in lay.nominal:
            # every candidate centre at once from a running sum over the search region
            base = c - tol - h0 - f
            cs = np.concatenate([[0.0], np.cumsum(at(base, c + tol + h0 + f + 1))])
            q = np.arange(2 * tol + 1) + h0 + f  # candidate centres, index into the region

            def span(lo: npt.NDArray[np.intp], hi: npt.NDArray[np.intp], cs: F64 = cs) -> F64:
                out: F64 = cs[hi] - cs[lo]
                return out

            flanks = span(q - h0 - f, q - h0) + span(q + h0 + 1, q + h0 + f + 1)
            cand = span(q - hp, q + hp + 1) - (2 * hp + 1) * flanks / (2 * f)
            b = int(np.argmax(cand))
            p = c - tol + b
            c0, cm, cp = cand[b], cand[max(b - 1, 0)], cand[min(b + 1, 2 * tol)]
            den = cm - 2 * c0 + cp
            delta = min(max(0.5 * (cm - cp) / den, -0.5), 0.5) if den < 0 else 0.0
            d2s = []
            for lo in (p - lay.win, p + lay.win - f + 1):
                fl = at(lo, lo + f)
                d2s.append(float(np.abs(fl[2:] + fl[:-2] - 2 * fl[1:-1]).mean()))
            per_h = []
            for h in lay.hs:
                left = np.array_split(at(p - h - f, p - h), SUBFLANKS)
                right = np.array_split(at(p + h + 1, p + h + f + 1), SUBFLANKS)
                cores = [at(p + o - 1, p + o + 2).sum() for o in range(-CORE_SHIFT, CORE_SHIFT + 1)]
                per_h.append((h, left, right, at(p - h, p + h + 1), cores))
            lines.append((p, b, d2s, per_h, delta))
        d2 = np.sort([v for ln in lines for v in ln[2]])
        noise = (d2[len(d2) // 2 - 1] + d2[len(d2) // 2]) / 2 / math.sqrt(12 / math.pi)

        def measure(
            entry: tuple[int, list[F64], list[F64], F64, list[float]], noise: float = noise
        ) -> tuple[float, ...]:
            h, left, right, window, cores = entry
            sd_mean = noise / math.sqrt(f / SUBFLANKS)
            sides = []
            for parts, px in (
                (left, np.array_split(np.arange(-h - f, -h), SUBFLANKS)),
                (right, np.array_split(np.arange(h + 1, h + f + 1), SUBFLANKS)),
            ):
                means = [float(q.mean()) for q in parts]
                centres = [float(q.mean()) for q in px]
                if max(means) - min(means) <= SPECK_SPREAD * sd_mean:
                    sides.append((sum(means) / 3, sum(centres) / 3))
                else:
                    j = int(np.argmin(means))
                    sides.append((means[j] + MIN3_BIAS * sd_mean, centres[j]))
            (lv_l, x_l), (lv_r, x_r) = sides
            slope = (lv_r - lv_l) / (x_r - x_l)
            base = lv_l - slope * x_l
            xs = np.arange(-h, h + 1)
            signal = float((window - (base + slope * xs)).sum())
            gauss = np.exp(-0.5 * (xs * WINDOW_SIGMAS / h) ** 2)
            matched = float(((window - (base + slope * xs)) * gauss).sum())
            shifts = range(-CORE_SHIFT, CORE_SHIFT + 1)
            peak = max(c3 - 3 * (base + o * slope) for c3, o in zip(cores, shifts, strict=True)) / 3
            lhalf = float((window[:h] - (base + slope * xs[:h])).sum())
            rhalf = float((window[h + 1 :] - (base + slope * xs[h + 1 :])).sum())
            return signal, matched, peak, lhalf, rhalf, float(gauss.sum()), float((gauss**2).sum())

        # the window: the smallest width that holds the control line (2.5 σ), h0 without a control
        chosen = len(lay.hs) - 1
        c_first = measure(lines[0][3][0])
        n0 = 2 * h0 + 1
        if c_first[0] < ADAPT_SNR * noise * math.sqrt(n0 + MIN3_VAR * 1.5 * n0 * n0 / f):
            chosen = 0
        else:
            for j, entry in enumerate(lines[0][3]):
                sig, _, peak, *_ = measure(entry)
                if peak > 0 and entry[0] >= WINDOW_SIGMAS * sig / peak / math.sqrt(2 * math.pi):
                    chosen = j
                    break
        stats = [measure(ln[3][chosen]) for ln in lines]
        h = lay.hs[chosen]
        nn = 2 * h + 1
        var_b0 = MIN3_VAR * 1.5 / f
        sd = noise * math.sqrt(nn + var_b0 * nn * nn)
        sd_diff = noise * math.sqrt(2 * h + (h * (h + 1)) ** 2 * 4 * var_b0 / (2 * h + f) ** 2)
        bad = []
        for (_, b, _, _, _), (sig, _, peak, lh, rh, _, _) in zip(lines, stats, strict=True):
            snr = sig / sd
            fwhm = 0.9394 * sig / peak if peak > 0 else math.inf
            rel = math.hypot(1 / snr, noise * math.sqrt(1 / 3 + var_b0) / peak) if peak != 0 else math.inf
            asym = (rh - lh) / abs(sig) if sig != 0 else math.inf
            odd = (
                fwhm * (1 + SHAPE_Z * abs(rel)) < FWHM_RANGE[0] * spec.line_width
                or fwhm * (1 - SHAPE_Z * abs(rel)) > FWHM_RANGE[1] * spec.line_width
                or not abs(asym) - SHAPE_Z * sd_diff / abs(sig) <= MAX_ASYMMETRY
            )
            bad.append((odd and snr >= SHAPE_SNR, b in (0, 2 * tol), snr))
        # the ratio's line areas: weighted least squares per line, or the Gaussian sums when a fit fails
        with np.errstate(divide="ignore", invalid="ignore"):
            sd_c = np.float64(stats[0][0]) / np.float64(stats[0][2]) / math.sqrt(2 * math.pi)
        lo_w, hi_w = FIT_WIDTH[0] * spec.line_width, FIT_WIDTH[1] * spec.line_width
        s_line = float(np.clip(np.nan_to_num(sd_c, nan=lo_w), lo_w, hi_w))
        xw = np.arange(-lay.win, lay.win + 1, dtype=np.float64)

        def lsq(
            p: int, delta: float, sig: float, sd: float, width: bool, xw: F64 = xw, od: F64 = od
        ) -> tuple[F64, float]:
            z = (xw - delta) / sd
            g = np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))
            cols = [np.ones_like(xw), xw / lay.win, *([g * (z * z - 1)] if width else []), g]
            design = np.stack(cols, axis=1)
            wts = 10.0 ** (-2.0 * max(sig, 0.0) * g)  # (R / R_baseline)²: OD noise var ∝ 1/R²
            y = od[np.clip(np.arange(p - lay.win, p + lay.win + 1), 0, lay.length - 1)]
            coef = np.linalg.lstsq(design * np.sqrt(wts)[:, None], y * np.sqrt(wts), rcond=None)[0]
            chi2 = float((wts * (y - design @ coef) ** 2).sum()) / (xw.size - design.shape[1])
            return coef, chi2

        # the control's width refined by a fit with a width term; where that Gaussian leaves χ²/dof above
        # SHAPE_CHI2 noise variances, the control's band shape by Gauss–Newton; every line with it
        coef_c, chi2_c = lsq(lines[0][0], lines[0][4], stats[0][0], s_line, True)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_new = np.float64(s_line) * (1.0 + np.float64(coef_c[2]) / np.float64(coef_c[3]))
        s_fit = float(np.clip(np.nan_to_num(s_new, nan=lo_w, posinf=hi_w, neginf=lo_w), lo_w, hi_w))
        shape = (lines[0][4], s_fit, s_fit, 0.0)
        if chi2_c > SHAPE_CHI2 * noise * noise:
            shape = _naive_shape(od, lines[0][0], lay.win, lay.length, shape, stats[0][0], lo_w, hi_w)
        moved = shape[0] - lines[0][4]  # the control's centre correction, applied to every line
        areas, fits = [], True
        for (p, _, _, _, delta), st in zip(lines, stats, strict=True):
            y = od[np.clip(np.arange(p - lay.win, p + lay.win + 1), 0, lay.length - 1)]
            tmpl = _naive_band(xw - (delta + moved), shape[1], shape[2], shape[3])
            design = np.stack([np.ones_like(xw), xw / lay.win, tmpl], axis=1)
            wts = 10.0 ** (-2.0 * max(st[0], 0.0) * tmpl)
            coef = np.linalg.lstsq(design * np.sqrt(wts)[:, None], y * np.sqrt(wts), rcond=None)[0]
            chi2 = float((wts * (y - design @ coef) ** 2).sum()) / (xw.size - 3)
            fits = fits and chi2 <= FIT_CHI2 * noise * noise
            areas.append(float(coef[-1]))
        c_sig = stats[0][0]
        ctrl[i] = c_sig
        saturated = spec.saturation_reflectance > 0 and any(
            profiles[i, np.clip(np.arange(c - lay.reach, c + lay.reach + 1), 0, lay.length - 1)].min()
            < spec.saturation_reflectance
            for c in lay.nominal
        )
        missing = c_sig < MISSING_FRACTION * spec.min_control_signal
        invalid = saturated or missing or c_sig < spec.min_control_signal or bad[0][1] or bad[0][0]
        for kk in range(k):
            m_c, m_t = (areas[0], areas[1 + kk]) if fits else (stats[0][1], stats[1 + kk][1])
            r = max(m_t, 0.0) / m_c if not missing else np.nan
            ratio[i, kk] = r
            cut, band = spec.lines[kk].cutoff, spec.lines[kk].suspect_band
            t_bad, t_edge, t_snr = bad[1 + kk]
            if invalid:
                v = Verdict.INVALID
            elif t_bad or (t_edge and t_snr >= SHAPE_SNR):
                v = Verdict.SUSPECT
            elif spec.format == "competitive":
                v = Verdict.POSITIVE if r < cut else Verdict.SUSPECT if r < cut + band else Verdict.NEGATIVE
            else:
                v = Verdict.POSITIVE if r >= cut else Verdict.SUSPECT if r >= cut - band else Verdict.NEGATIVE
            verdict[i, kk] = v
    return ctrl, ratio, verdict


def _naive_band(u: F64, left: float, right: float, eta: float) -> F64:
    """(1 − η)·split Gaussian (sd `left` for u < 0, `right` for u ≥ 0) + η·Lorentzian with the FWHM of the
    narrower side; unit area."""
    sd = np.where(u < 0, left, right)
    gauss = np.exp(-0.5 * (u / sd) ** 2) * 2.0 / (math.sqrt(2.0 * math.pi) * (left + right))
    hwhm = math.sqrt(2.0 * math.log(2.0)) * min(left, right)
    lorentz = hwhm / (math.pi * (u * u + hwhm * hwhm))
    out: F64 = (1.0 - eta) * gauss + eta * lorentz
    return out


def _naive_shape(
    od: F64,
    p: int,
    win: int,
    length: int,
    start: tuple[float, float, float, float],
    signal: float,
    lo: float,
    hi: float,
) -> tuple[float, float, float, float]:
    """Gauss–Newton steps of OD = a + b·x + A·band(x − d; left, right, η) around pixel p, each a weighted
    np.linalg.lstsq with the band's derivatives taken term by term (the core's `areas.band` is not used)."""
    xw = np.arange(-win, win + 1, dtype=np.float64)
    y = od[np.clip(np.arange(p - win, p + win + 1), 0, length - 1)]
    d, left, right, eta = start
    k = math.sqrt(2.0 * math.log(2.0))
    for _ in range(SHAPE_STEPS):
        u = xw - d
        tmpl = _naive_band(u, left, right, eta)
        sd = np.where(u < 0, left, right)
        gauss = _naive_band(u, left, right, 0.0)
        hwhm = k * min(left, right)
        lorentz = _naive_band(u, left, right, 1.0)
        # ∂/∂d, ∂/∂left, ∂/∂right, ∂/∂η of (1 − η)·gauss + η·lorentz
        by_d = (1.0 - eta) * gauss * u / sd**2 + eta * lorentz * 2.0 * u / (u * u + hwhm * hwhm)
        by_hwhm = eta * lorentz * (1.0 / hwhm - 2.0 * hwhm / (u * u + hwhm * hwhm)) * k
        by_left = (1.0 - eta) * gauss * (-1.0 / (left + right) + np.where(u < 0, u * u / left**3, 0.0))
        by_right = (1.0 - eta) * gauss * (-1.0 / (left + right) + np.where(u < 0, 0.0, u * u / right**3))
        if left <= right:
            by_left = by_left + by_hwhm
        else:
            by_right = by_right + by_hwhm
        design = np.stack(
            [np.ones_like(xw), xw / win, tmpl, by_d, by_left, by_right, lorentz - gauss], axis=1
        )
        wts = np.sqrt(10.0 ** (-2.0 * max(signal, 0.0) * tmpl))
        coef = np.linalg.lstsq(design * wts[:, None], y * wts, rcond=None)[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = [float(np.nan_to_num(c / coef[2], nan=0.0, posinf=0.0, neginf=0.0)) for c in coef[3:]]
        d = min(max(d + min(max(steps[0], -MAX_SHIFT_STEP), MAX_SHIFT_STEP), -MAX_SHIFT), MAX_SHIFT)
        left = min(max(left + min(max(steps[1], -MAX_WIDTH_STEP * left), MAX_WIDTH_STEP * left), lo), hi)
        right = min(max(right + min(max(steps[2], -MAX_WIDTH_STEP * right), MAX_WIDTH_STEP * right), lo), hi)
        eta = min(max(eta + steps[3], 0.0), 1.0)
    return d, left, right, eta


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
