"""Line measurement of the colloidal-gold core: search, adaptive integration and shape statistics.

Does, for a chunk of strips whose line regions are already gathered (`Layout.index`), all lines at once:
1. Locate: y = log2(max(R, 1e-4)); for every candidate centre within ±tolerance a narrow (≈ FWHM)
   matched filter minus its flanks — one float32 matrix product with `Layout.loc_kernel` — then the
   argmax, refined to sub-pixel by a parabola.
2. Cut a window of ±(h_max + f) px centred on each found line and take, in a second small matrix product
   (`Layout.stat_kernel`), for every candidate half-width h in `Layout.hs` (h0 = line_width/2 … 2·h0):
   the window sum of OD, the means of three sub-flanks on each side ([h+1, h+f] split in three), the
   sums of the left and right halves, and the sums of 3 px centred within ±2 px of the centre.
3. Baseline: per side the mean of the three sub-flank means when they agree within the noise, else the
   lowest one (a dust speck or the tail of a neighbour sits in at most two of the three), corrected for
   the bias of a minimum of three noisy means with the strip's noise; the baseline is linear between
   the two sides' levels.
4. Noise: σ (OD per px) per strip from the mean |second difference| over each outer flank, the median
   over the strip's 2·J flanks (robust to a speck, blind to a linear tilt).
5. Adaptive window: per strip, the smallest h with h ≥ 2.5·σ_line, σ_line = S_h / peak / √(2π) measured
   on the control line (h0 when the control is not 4 noise sds above the baseline); every line of the strip is integrated with that h (same window for C and T, so a
   broadened strip keeps its ratio).
6. Ratio amounts: per line a weighted linear least-squares fit over the whole centred window (±(h_max + f)
   px) of OD = a + b·x + A·band(x), band a unit-area template of the control line's shape at the
   line's located (sub-pixel) centre moved by the control's centre correction; A is the line's area.
   The template: a Gaussian of the control's equivalent width (S/peak/√(2π)), refined by a first fit of
   the control alone with a width term B·s·∂g/∂s (s·(1 + B/A)); where that Gaussian leaves χ²/dof >
   SHAPE_CHI2 on the control, the control's band fitted by `areas.fit_shape` (split Gaussian +
   Lorentzian, two Gauss–Newton steps). Each pixel is weighted by its inverse noise variance: the
   simulator's and a camera's noise is additive in reflectance, so var(OD) ∝ 1/R², and the weight is
   (R/R_baseline)² = 10^(−2·S·band(x)) from the window signal S. All strips at once: the normal
   equations are built from a few element-wise products and small matrix products and solved by a
   Cholesky factorisation written out over the rows.
   A strip where any line's fit leaves χ²/dof > FIT_CHI2 (a speck, a neighbour's tail, a badly
   shaped band) falls back for all its lines to the Gaussian-weighted OD sum (sd h/2.5) above the
   robust baseline, the same weights on C and T (so that quotient too is an area ratio).
7. Shape: equivalent FWHM = 0.939·S/peak (peak = the highest 3-px mean OD above baseline within
   ±2 px of the centre),
   asymmetry = (S_right − S_left)/S, SNR = S/σ_S with σ_S = σ·√(n + 0.84·n²/f), n = 2h+1, and the
   noise sds of FWHM and asymmetry propagated from σ, so a caller can ask whether a line is
   *significantly* unlike a line rather than merely noisy.

Does not: decide verdicts or validity (that is `gold.py`), check the input, retry or log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.interpret.areas import Shape, fit_areas, fit_shape, fit_width
from gateway.interpret.errors import SpecMismatchError
from kuaijian_schema.specs import StripSpec

__all__ = [
    "FIT_CHI2",
    "FIT_WIDTH",
    "FLOOR",
    "MEDIANS",
    "SHAPE_CHI2",
    "Layout",
    "LineStats",
    "Scan",
    "finish",
    "layout",
    "running_median",
    "scan",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FLOOR: Final = np.float32(1e-4)
"""Reflectance floor before the logarithm (the detector's dark level)."""
WIDTH_STEPS: Final = (1.0, 4 / 3, 5 / 3, 2.0)
"""Candidate integration half-widths, × h0 = line_width / 2: from h0 up to the kit's bound 2·h0."""
WINDOW_SIGMAS: Final = 2.5
"""The adaptive window reaches ±2.5 σ of the measured line (98.8 % of a Gaussian band)."""
SPECK_SPREAD: Final = 3.5
"""Sub-flank means of one side spread wider than this many noise sds of a mean hold a speck (or a
neighbour's tail): that side's level is its lowest sub-flank, else the mean of all three."""
FLANK: Final = 1.0
"""Baseline flank width per side, × h0 (the baseline noise falls with the flank width)."""
FIT_CHI2: Final = 16.0
"""A line whose least-squares fit leaves χ²/dof above this many noise variances makes its strip use the
robust Gaussian-weighted sums instead: a speck in the window (measured: the fit alone raises the p95 ratio
error with specks by 40 %), not a Lorentzian or tailing band (which a lower bound also rejects)."""
SHAPE_CHI2: Final = 2.5
"""A control line whose Gaussian fit (with its width term) leaves χ²/dof above this many noise variances
gets its band shape fitted (split Gaussian + Lorentzian, `areas.fit_shape`), and every line of the strip
is measured with that shape. Measured: 0.9–1.8 % of the signal model's Gaussian strips, 71–75 % of its
Lorentzian-mix and 85–86 % of its tailing ones. `inf` gives gold/2.1's Gaussian template on every strip."""
FIT_WIDTH: Final = (0.1, 0.4)
"""Template sd bounds, × line_width (the demo kits' bands have sd 0.13–0.34 × line_width)."""
ADAPT_SNR: Final = 4.0
"""The window adapts only to a control line at least this far above the noise."""
MEDIANS: Final = (0, 3, 5)
"""Widths of the optional running-median pre-filter (0 = off)."""
SUBFLANKS: Final = 3
"""Sub-flanks per side (f is split as evenly as it goes)."""
CORE_SHIFT: Final = 2
"""The peak is the highest 3-px mean within ±2 px of the located centre: the locator's narrow window
is flat over a speck narrower than itself, so its argmax may sit beside the speck's peak."""
MIN3_BIAS: Final = 0.8463  # E[min of 3 iid N(0, 1)] = −0.8463
MIN3_VAR: Final = 0.5595  # Var[min of 3 iid N(0, 1)]
_D2_MEAN: Final = math.sqrt(6.0) * math.sqrt(2.0 / math.pi)  # E|y[i-1] − 2y[i] + y[i+1]| per σ
_LOG10_2: Final = math.log10(2.0)
_PER_H: Final = 10  # stat-kernel columns per candidate half-width
_SQRT_2PI: Final = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Layout:
    """Fixed geometry and weights of one kit (cached per StripSpec)."""

    length: int
    line_width: float
    nominal: npt.NDArray[np.intp]  # (J,) integer nominal centres, control first
    tol: int
    h0: int
    hs: tuple[int, ...]  # candidate integration half-widths
    f: int  # flank width per side
    hp: int  # locator half width (≈ FWHM of a band)
    reach: int  # region half width = tol + max(hs) + f
    width: int  # region width M = 2·reach + 1
    win: int  # centred window half width = max(hs) + f
    index: npt.NDArray[np.intp]  # (J·M,) profile columns of all regions (edge-clamped)
    contiguous: bool  # every region lies inside the profile: gather by slices
    loc_kernel: F32  # (2·(tol + h0 + f) + 1, no) locator weights per candidate
    stat_kernel_t: F32  # (columns, 2·win + 1): the transposed stat kernel, C-contiguous
    stat_kernel: F32  # (2·win + 1, 10·len(hs) + 2·CORE_SHIFT + 1 + 2·(f − 2)) window statistics (OD)
    sub_pos: F64  # (len(hs), 6) centre of each sub-flank, px from the line centre
    wsum: F64  # (len(hs),) sum of the Gaussian weights
    wsum2: F64  # (len(hs),) sum of their squares


@lru_cache(maxsize=64)
def layout(spec: StripSpec) -> Layout:
    tol = max(1, round(spec.tolerance))
    h0 = max(1, round(spec.line_width / 2))
    f = max(3, round(FLANK * h0))
    hs = tuple(sorted({max(h0, round(h0 * s)) for s in WIDTH_STEPS}))
    hmax = hs[-1]
    nominal = np.array(
        [round(spec.control_position), *(round(ln.position) for ln in spec.lines)], dtype=np.intp
    )
    for c in nominal:
        # StripSpec validates the layout; this guards specs built without validation (model_copy)
        if not 0 <= c < spec.length:
            raise SpecMismatchError(
                f"kit {spec.name}: line at {c} px lies outside the {spec.length} px profile"
            )
    hp = max(1, min(h0, round(0.17 * spec.line_width)))
    reach = tol + hmax + f
    width = 2 * reach + 1
    lo = nominal - reach
    # edge-clamped: a flank reaching past the profile end repeats the last pixel
    index = np.clip(lo[:, None] + np.arange(width)[None, :], 0, spec.length - 1).reshape(-1)
    win = hmax + f
    stat, sub_pos = _stat_kernel(hs, f, win)
    return Layout(
        length=spec.length,
        line_width=float(spec.line_width),
        nominal=nominal,
        tol=tol,
        h0=h0,
        hs=hs,
        f=f,
        hp=hp,
        reach=reach,
        width=width,
        win=win,
        index=index.astype(np.intp),
        contiguous=bool((lo >= 0).all() and (lo + width <= spec.length).all()),
        loc_kernel=_loc_kernel(tol, h0, f, hp),
        stat_kernel=stat,
        stat_kernel_t=np.ascontiguousarray(stat.T),
        sub_pos=sub_pos,
        wsum=np.array([_gauss(h).sum() for h in hs]),
        wsum2=np.array([(_gauss(h) ** 2).sum() for h in hs]),
    )


def _loc_kernel(tol: int, h0: int, f: int, hp: int) -> F32:
    """Weights (2·(tol+h0+f)+1, no): for candidate o the narrow window (±hp) OD minus its share of the
    mean of both flanks [h0+1, h0+f] — the locator. log10(2) turns log2 R into OD."""
    width = 2 * (tol + h0 + f) + 1
    no = 2 * tol + 1
    k = np.zeros((width, no))
    for o in range(no):
        c = f + h0 + o
        k[c - h0 - f : c - h0, o] = (2 * hp + 1) / (2 * f)
        k[c + h0 + 1 : c + h0 + f + 1, o] = (2 * hp + 1) / (2 * f)
        k[c - hp : c + hp + 1, o] = -1.0
    out: F32 = (k * _LOG10_2).astype(np.float32)
    return out


def _gauss(h: int) -> F64:
    """Unit-height Gaussian weights over [−h, h] with sd h / WINDOW_SIGMAS."""
    xs = np.arange(-h, h + 1, dtype=np.float64)
    out: F64 = np.exp(-0.5 * (xs * WINDOW_SIGMAS / h) ** 2)
    return out


def _stat_kernel(hs: tuple[int, ...], f: int, win: int) -> tuple[F32, F64]:
    """Weights (2·win+1, 10·len(hs)+5) over a window centred on a line, giving OD (= −log10 R) sums:
    per h [window sum, 3 left sub-flank means (outer→inner), 3 right (inner→outer), left half sum,
    right half sum, Gaussian-weighted sum (sd h/2.5, unit height)], then the 3-px sums centred at
    −CORE_SHIFT … +CORE_SHIFT, then the second differences of the outer f px on each side."""
    n = 2 * win + 1
    c = win
    k = np.zeros((n, _PER_H * len(hs) + 2 * CORE_SHIFT + 1))
    pos = np.zeros((len(hs), 2 * SUBFLANKS))
    for i, h in enumerate(hs):
        b = _PER_H * i
        k[c - h : c + h + 1, b] = 1.0
        left = np.array_split(np.arange(c - h - f, c - h), SUBFLANKS)
        right = np.array_split(np.arange(c + h + 1, c + h + f + 1), SUBFLANKS)
        for s, px in enumerate([*left, *right]):
            k[px, b + 1 + s] = 1.0 / px.size
            pos[i, s] = float(px.mean()) - c
        k[c - h : c, b + 7] = 1.0
        k[c + 1 : c + h + 1, b + 8] = 1.0
        k[c - h : c + h + 1, b + 9] = _gauss(h)
    for j, o in enumerate(range(-CORE_SHIFT, CORE_SHIFT + 1)):
        k[c + o - 1 : c + o + 2, _PER_H * len(hs) + j] = 1.0
    # second differences at every inner pixel of the two outer flanks (noise; not statistics of a width)
    d2 = np.zeros((n, 2 * (f - 2)))
    for side, first in enumerate((0, n - f)):
        for i in range(f - 2):
            d2[first + i : first + i + 3, side * (f - 2) + i] = (1.0, -2.0, 1.0)
    k = np.concatenate([k, d2], axis=1)
    out: F32 = (k * -_LOG10_2).astype(np.float32)
    return out, pos


@dataclass(frozen=True, slots=True)
class LineStats:
    """Measurements of m strips × J lines (control first)."""

    signal: F64  # (m, J) integrated OD above baseline with the strip's window
    matched: F64  # (m, J) line area for the ratio: least-squares A, or the Gaussian-weighted sum (step 6)
    matched_sd: F64  # (m, J) its noise sd
    position: F64  # (m, J) centre, px
    edge: npt.NDArray[np.bool_]  # (m, J) locator maximum on the edge of the search window
    snr: F64  # (m, J) signal / its noise sd
    signal_sd: F64  # (m, J) noise sd of the signal
    fwhm: F64  # (m, J) equivalent FWHM, px (inf when the peak is not above the baseline)
    fwhm_rel_sd: F64  # (m, J) relative noise sd of fwhm
    asymmetry: F64  # (m, J) (S_right − S_left) / S
    asymmetry_sd: F64  # (m, J) noise sd of asymmetry
    noise: F64  # (m,) OD noise per px
    half_width: npt.NDArray[np.intp]  # (m,) integration half-width used, px


@dataclass(frozen=True, slots=True)
class Scan:
    """Raw per-line sums of m strips × J lines (rows = m·J), from `scan`; `finish` turns them into
    `LineStats`. Split so the many small array operations of `finish` run once per block of strips
    rather than once per cache-sized chunk."""

    position: F64  # (m, J)
    frac: F32  # (m·J,) sub-pixel offset of each line from the centre of its window
    window: F32  # (m·J, 2·win + 1) log2 R of the window centred on each line
    edge: npt.NDArray[np.bool_]  # (m, J)
    sums: F32  # (columns of stat_kernel, m·J): column-major, so each statistic is one contiguous row
    flank_d2: F32  # (2, m·J) mean |second difference| of each outer flank (OD)


def running_median(g2: F32, lay: Layout, width: int) -> None:
    """Replace every pixel of each line region (m, J·M) by the median of the `width` (3 or 5) pixels
    around it, in place; the outermost width // 2 pixels of a region keep their value. Min/max networks
    on shifted views (Paeth's median of five), so the cost is a few passes over the regions."""
    if width == 0:
        return
    reg = g2.reshape(-1, lay.width)
    k = width // 2
    n = lay.width - 2 * k
    v = [reg[:, i : i + n].copy() for i in range(width)]
    if width == 3:
        a, b, c = v
    else:
        a0, a1, a2, a3, c = v
        a = np.maximum(np.minimum(a0, a1), np.minimum(a2, a3))
        b = np.minimum(np.maximum(a0, a1), np.maximum(a2, a3))
    reg[:, k : k + n] = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def scan(g2: F32, lay: Layout) -> Scan:
    """Locate every line and take its window sums, from the line regions (m, J·M) of m profiles;
    `g2` is overwritten (log2 R)."""
    m = g2.shape[0]
    nl = lay.nominal.shape[0]
    rows = m * nl
    np.maximum(g2, FLOOR, out=g2)
    np.log2(g2, out=g2)
    reg = g2.reshape(rows, lay.width)
    # 1. locate: one GEMM over the central part of every region
    s0 = lay.reach - (lay.tol + lay.h0 + lay.f)
    loc = reg[:, s0 : lay.width - s0] @ lay.loc_kernel
    no = 2 * lay.tol + 1
    best = np.argmax(loc, axis=1)
    r = np.arange(rows)
    p0 = loc[r, best]
    pm = loc[r, np.maximum(best - 1, 0)]
    pp = loc[r, np.minimum(best + 1, no - 1)]
    den = pm - 2 * p0 + pp
    delta = np.zeros(rows, dtype=np.float32)
    np.divide(0.5 * (pm - pp), den, out=delta, where=den < 0)
    np.clip(delta, -0.5, 0.5, out=delta)
    b = best.reshape(m, nl)
    position = (lay.nominal[None, :] + (b - lay.tol) + delta.reshape(m, nl)).astype(np.float64)
    edge = (b == 0) | (b == no - 1)
    # 2. the window centred on each line starts at column `best` of its region (a strided view of
    # every window start, indexed by row: one contiguous copy of nw values per line)
    nw = 2 * lay.win + 1
    starts = np.lib.stride_tricks.sliding_window_view(reg, nw, axis=1)
    cw = starts[r, best]
    sums = lay.stat_kernel_t @ cw.T  # BLAS transposes for free: (columns, rows)
    nstat = lay.stat_kernel.shape[1] - 2 * (lay.f - 2)
    d2 = np.abs(sums[nstat:]).reshape(2, lay.f - 2, rows)
    flank_d2 = d2.sum(axis=1) / (lay.f - 2)  # (2, rows): mean |second difference| per outer flank
    return Scan(position=position, frac=delta, window=cw, edge=edge, sums=sums[:nstat], flank_d2=flank_d2)


def finish(sc: Scan, lay: Layout) -> LineStats:
    """Baselines, adaptive window, signals and shape statistics of scanned lines (whole block)."""
    m, nl = sc.position.shape
    rows = m * nl
    # column-major float64 copy: every statistic below is a contiguous 1-D array over lines
    cols = sc.sums.astype(np.float64)  # (columns, rows)
    # 4. noise: mean |second difference| of each outer flank, the median of those over the strip's
    # 2·J flanks (a speck spoils one flank, not the median)
    fl = np.sort(sc.flank_d2.T.reshape(m, 2 * nl), axis=1)
    mid = nl  # 2·J flanks: the median is the mean of the two middle ones
    noise = (fl[:, mid - 1] + fl[:, mid]).astype(np.float64) * (0.5 / _D2_MEAN)  # already OD
    nh = len(lay.hs)
    hs = np.array(lay.hs, dtype=np.float64)
    core_cols = cols[_PER_H * nh :]
    # 5. adaptive window from the control line of each strip (every candidate width, control rows only)
    ccols = np.ascontiguousarray(cols[:, ::nl])  # (columns, m)
    # every width at once: (_PER_H, widths, m) statistics, (6, widths, 1) sub-flank centres
    cblk = ccols[: _PER_H * nh].reshape(nh, _PER_H, m).transpose(1, 0, 2)
    c_b0, c_slope = _baseline(cblk, lay.sub_pos.T[:, :, None], noise, lay.f)
    c_sig = cblk[0] - (2 * hs[:, None] + 1) * c_b0
    c_core = _core(ccols[_PER_H * nh :], c_b0, c_slope)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_line = c_sig / (c_core / 3.0) / _SQRT_2PI
    fits = hs[:, None] >= WINDOW_SIGMAS * np.nan_to_num(sigma_line, nan=np.inf, neginf=np.inf)
    fits[-1] = True
    hi = np.argmax(fits, axis=0)  # (m,) first width that holds the control line
    # no (significant) control line: nothing to adapt to
    n0 = 2 * lay.h0 + 1
    sd0 = noise * math.sqrt(n0 + MIN3_VAR * 1.5 * n0 * n0 / lay.f)
    hi[c_sig[0] < ADAPT_SNR * sd0] = 0
    # 3. every line with its strip's window
    hsel = np.repeat(hi, nl)
    blocks = cols[: _PER_H * nh].reshape(nh, _PER_H, rows)
    sel = blocks[0].copy()  # (_PER_H, rows): the statistics of each line's own width
    for i in range(1, nh):
        wide = hsel == i
        if wide.any():
            sel[:, wide] = blocks[i][:, wide]
    h = hs[hsel]
    sigma = np.repeat(noise, nl)
    bsel, ssel = _baseline(sel, lay.sub_pos[hsel].T, sigma, lay.f)
    signal = sel[0] - (2 * h + 1) * bsel
    wsum = lay.wsum[hsel]
    matched = sel[9] - wsum * bsel  # Gaussian-weighted OD above baseline
    peak = _core(core_cols, bsel, ssel) / 3.0
    with np.errstate(divide="ignore", invalid="ignore"):
        fwhm = np.where(peak > 0, 0.9394 * signal / peak, np.inf)
        half = h * (bsel - ssel * (h + 1) / 2)  # baseline over the left half; the right is symmetric
        left = sel[7] - half
        right = sel[8] - (h * bsel * 2 - half)
        asym = (right - left) / np.abs(signal)
    ns = 2 * h + 1
    f = lay.f
    var_b0 = MIN3_VAR * 1.5 / f  # baseline at the centre, per σ²
    sd = sigma * np.sqrt(ns + var_b0 * ns * ns)
    matched_sd = sigma * np.sqrt(lay.wsum2[hsel] + var_b0 * wsum * wsum)
    var_slope = 4 * var_b0 / (2 * h + f) ** 2
    sd_diff = sigma * np.sqrt(2 * h + (h * (h + 1)) ** 2 * var_slope)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = signal / sd
        fwhm_rel = np.hypot(1.0 / snr, sigma * np.sqrt(1 / 3 + var_b0) / peak)
        asym_sd = sd_diff / np.abs(signal)
    # 6. least-squares areas with the control's band shape: a Gaussian of the control's width (refined by
    # a first fit with a width term), or, where that does not fit the control, the band fitted to it;
    # every line with that shape at its own centre moved by the control's centre correction. The strip
    # keeps them when every line fits
    sd_c = sigma_line[hi, np.arange(m)]
    lo_w, hi_w = FIT_WIDTH[0] * lay.line_width, FIT_WIDTH[1] * lay.line_width
    s0 = np.clip(np.nan_to_num(sd_c, nan=lo_w), lo_w, hi_w)
    fr = sc.frac.astype(np.float64)
    rel, chi2_c = fit_width(sc.window[::nl], sc.frac[::nl], s0, signal[::nl], lay.win)
    s1 = np.clip(np.nan_to_num(s0 * (1.0 + rel), nan=lo_w, posinf=hi_w, neginf=lo_w), lo_w, hi_w)
    ctrl = Shape(d=fr[::nl].copy(), left=s1, right=s1.copy(), eta=np.zeros(m))
    # the band's shape only where a Gaussian does not fit the control (Lorentzian tails, tailing)
    odd = np.flatnonzero(chi2_c > SHAPE_CHI2 * noise**2)
    if odd.size:
        rows_c = odd * nl
        sub = fit_shape(sc.window[rows_c], sc.frac[rows_c], s1[odd], signal[rows_c], lay.win, lo_w, hi_w)
        ctrl.d[odd], ctrl.left[odd], ctrl.right[odd], ctrl.eta[odd] = sub.d, sub.left, sub.right, sub.eta
    shift = np.repeat(ctrl.d - fr[::nl], nl)
    shape = Shape(
        d=fr + shift,
        left=np.repeat(ctrl.left, nl),
        right=np.repeat(ctrl.right, nl),
        eta=np.repeat(ctrl.eta, nl),
    )
    area, area_var, chi2 = fit_areas(sc.window, shape, signal, lay.win)
    fit_ok = np.repeat((chi2 <= FIT_CHI2 * sigma**2).reshape(m, nl).all(axis=1), nl)
    matched = np.where(fit_ok, area, matched)
    matched_sd = np.where(fit_ok, sigma * np.sqrt(area_var), matched_sd)
    return LineStats(
        position=sc.position,
        edge=sc.edge,
        signal=signal.reshape(m, nl),
        matched=matched.reshape(m, nl),
        matched_sd=matched_sd.reshape(m, nl),
        snr=snr.reshape(m, nl),
        signal_sd=sd.reshape(m, nl),
        fwhm=fwhm.reshape(m, nl),
        fwhm_rel_sd=np.abs(fwhm_rel).reshape(m, nl),
        asymmetry=asym.reshape(m, nl),
        asymmetry_sd=asym_sd.reshape(m, nl),
        noise=noise,
        half_width=np.asarray(hs[hi], dtype=np.intp),
    )


def _baseline(blk: F64, sub_pos: F64, sigma: F64, f: int) -> tuple[F64, F64]:
    """Baseline OD at the centre and its slope per px from the stat columns `blk` (_PER_H, n) of one
    window width: per side the mean of the three sub-flank means when they agree within SPECK_SPREAD
    noise sds, else the lowest one plus the bias of a minimum of three. `sub_pos` (6[, n]) are the
    sub-flank centres (px from the line centre), `sigma` (n,) the OD noise per px. (Any leading axes of `blk`
    beyond the first broadcast: every candidate width at once, (_PER_H, widths, n) with `sub_pos` (6, widths, 1).)"""
    sd_mean = sigma / math.sqrt(f / SUBFLANKS)  # noise sd of one sub-flank mean
    levels, places = [], []
    for first in (0, SUBFLANKS):
        a, b, c = blk[1 + first], blk[2 + first], blk[3 + first]
        lo = np.minimum(np.minimum(a, b), c)
        ok = np.maximum(np.maximum(a, b), c) - lo <= SPECK_SPREAD * sd_mean
        pa, pb, pc = sub_pos[first], sub_pos[first + 1], sub_pos[first + 2]
        lowest = np.where(a == lo, pa, np.where(b == lo, pb, pc))
        levels.append(np.where(ok, (a + b + c) / 3.0, lo + MIN3_BIAS * sd_mean))
        places.append(np.where(ok, (pa + pb + pc) / 3.0, lowest))
    (lvl_l, lvl_r), (xl, xr) = levels, places
    slope = (lvl_r - lvl_l) / (xr - xl)
    b0: F64 = lvl_l - slope * xl
    return b0, slope


def _core(cores: F64, b0: F64, slope: F64) -> F64:
    """Highest 3-px OD sum above the baseline among the sums `cores` (2·CORE_SHIFT + 1, n) centred at
    −CORE_SHIFT … +CORE_SHIFT px; `b0` and `slope` (n,) or (widths, n)."""
    out = np.full(b0.shape, -np.inf)
    for j, o in enumerate(range(-CORE_SHIFT, CORE_SHIFT + 1)):
        np.maximum(out, cores[j] - 3.0 * (b0 + o * slope), out=out)
    return out
