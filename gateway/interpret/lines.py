"""Line measurement of the colloidal-gold core: search, adaptive integration and shape statistics.

Does, for a chunk of strips whose line regions are already gathered (`Layout.index`), all lines at once:
1. Locate: y = log2(max(R, 1e-4)); for every candidate centre within ±tolerance a narrow (≈ FWHM)
   matched filter minus its flanks — one float32 matrix product with `Layout.loc_kernel` — then the
   argmax, refined to sub-pixel by a parabola.
2. Cut a window of ±(h_max + f) px centred on each found line and take, in a second small matrix product
   (`Layout.stat_kernel`), for every candidate half-width h in `Layout.hs` (h0 = line_width/2 … 2·h0):
   the window sum of OD, the means of three sub-flanks on each side ([h+1, h+f] split in three), the
   sums of the left and right halves, and the sums of 3 px centred within ±2 px of the centre.
3. Baseline: per side the lowest sub-flank mean (a dust speck or the tail of a neighbour sits in at most
   two of the three), corrected for the bias of a minimum of three noisy means with the strip's noise;
   the baseline is linear between the two chosen sub-flanks.
4. Noise: σ (OD per px) per strip from the mean |second difference| over each outer flank, the median
   over the strip's 2·J flanks (robust to a speck, blind to a linear tilt).
5. Adaptive window: per strip, the smallest h with h ≥ 2.5·σ_line, σ_line = S_h / peak / √(2π) measured
   on the control line (h0 when the control is not 4 noise sds above the baseline); every line of the strip is integrated with that h (same window for C and T, so a
   broadened strip keeps its ratio).
6. Shape: equivalent FWHM = 0.939·S/peak (peak = the highest 3-px mean OD above baseline within
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

from gateway.interpret.errors import SpecMismatchError
from kuaijian_schema.specs import StripSpec

__all__ = ["FLOOR", "Layout", "LineStats", "layout", "measure"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FLOOR: Final = np.float32(1e-4)
"""Reflectance floor before the logarithm (the detector's dark level)."""
WIDTH_STEPS: Final = (1.0, 4 / 3, 5 / 3, 2.0)
"""Candidate integration half-widths, × h0 = line_width / 2: the kit's bound is 2·h0 = line_width."""
WINDOW_SIGMAS: Final = 2.5
"""The adaptive window reaches ±2.5 σ of the measured line (98.8 % of a Gaussian band)."""
ADAPT_SNR: Final = 4.0
"""The window adapts only to a control line at least this far above the noise."""
SUBFLANKS: Final = 3
"""Sub-flanks per side (the sub-flank means sit at equal steps: f is split as evenly as it goes)."""
CORE_SHIFT: Final = 2
"""The peak is the highest 3-px mean within ±2 px of the located centre: the locator's narrow window
is flat over a speck narrower than itself, so its argmax may sit beside the speck's peak."""
_MIN3_BIAS: Final = 0.8463  # E[min of 3 iid N(0, 1)] = −0.8463
_MIN3_VAR: Final = 0.5595  # Var[min of 3 iid N(0, 1)]
_D2_MEAN: Final = math.sqrt(6.0) * math.sqrt(2.0 / math.pi)  # E|y[i-1] − 2y[i] + y[i+1]| per σ
_LOG10_2: Final = math.log10(2.0)
_SQRT_2PI: Final = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Layout:
    """Fixed geometry and weights of one kit (cached per StripSpec)."""

    length: int
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
    stat_kernel: F32  # (2·win + 1, len(hs)·9 + 2·CORE_SHIFT + 1) window statistics (OD)
    sub_pos: F64  # (len(hs), 6) centre of each sub-flank, px from the line centre
    sub_step: F64  # (len(hs),) distance between neighbouring sub-flank centres, px


@lru_cache(maxsize=64)
def layout(spec: StripSpec) -> Layout:
    tol = max(1, round(spec.tolerance))
    h0 = max(1, round(spec.line_width / 2))
    f = max(3, h0)
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
        sub_pos=sub_pos,
        sub_step=sub_pos[:, 1] - sub_pos[:, 0],
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


def _stat_kernel(hs: tuple[int, ...], f: int, win: int) -> tuple[F32, F64]:
    """Weights (2·win+1, 9·len(hs)+1) over a window centred on a line, giving OD (= −log10 R) sums:
    per h [window sum, 3 left sub-flank means (outer→inner), 3 right (inner→outer), left half sum,
    right half sum], then the central 3 px sum."""
    n = 2 * win + 1
    c = win
    k = np.zeros((n, 9 * len(hs) + 2 * CORE_SHIFT + 1))
    pos = np.zeros((len(hs), 2 * SUBFLANKS))
    for i, h in enumerate(hs):
        b = 9 * i
        k[c - h : c + h + 1, b] = 1.0
        left = np.array_split(np.arange(c - h - f, c - h), SUBFLANKS)
        right = np.array_split(np.arange(c + h + 1, c + h + f + 1), SUBFLANKS)
        for s, px in enumerate([*left, *right]):
            k[px, b + 1 + s] = 1.0 / px.size
            pos[i, s] = float(px.mean()) - c
        k[c - h : c, b + 7] = 1.0
        k[c + 1 : c + h + 1, b + 8] = 1.0
    for j, o in enumerate(range(-CORE_SHIFT, CORE_SHIFT + 1)):
        k[c + o - 1 : c + o + 2, 9 * len(hs) + j] = 1.0
    out: F32 = (k * -_LOG10_2).astype(np.float32)
    return out, pos


@dataclass(frozen=True, slots=True)
class LineStats:
    """Measurements of m strips × J lines (control first)."""

    signal: F64  # (m, J) integrated OD above baseline with the strip's window
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


def measure(g2: F32, lay: Layout) -> LineStats:
    """Line statistics from the line regions (m, J·M) of m profiles; `g2` is overwritten (log2 R)."""
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
    cw = starts[np.arange(rows), best]
    st = (cw @ lay.stat_kernel).astype(np.float64)
    # 4. noise: mean |second difference| of each outer flank, the median of those over the strip's
    # 2·J flanks (a speck spoils one flank, not the median)
    f = lay.f
    sides = np.stack([cw[:, :f], cw[:, nw - f :]], axis=1)  # (rows, 2, f)
    d2 = sides[:, :, 2:] + sides[:, :, :-2]
    d2 -= 2.0 * sides[:, :, 1:-1]
    np.abs(d2, out=d2)
    per_flank = d2.mean(axis=2, dtype=np.float64).reshape(m, 2 * nl)
    noise = np.median(per_flank, axis=1) * (_LOG10_2 / _D2_MEAN)  # (m,)
    # 3. baseline per candidate width: lowest sub-flank mean per side, bias-corrected
    nh = len(lay.hs)
    per = st[:, : 9 * nh].reshape(rows, nh, 9)
    sub = per[:, :, 1:7]
    corr = (_MIN3_BIAS / math.sqrt(lay.f / SUBFLANKS)) * np.repeat(noise, nl)[:, None]  # (rows, 1)
    il = np.argmin(sub[:, :, :SUBFLANKS], axis=2)
    ir = np.argmin(sub[:, :, SUBFLANKS:], axis=2)
    lvl_l = sub[:, :, :SUBFLANKS].min(axis=2) + corr
    lvl_r = sub[:, :, SUBFLANKS:].min(axis=2) + corr
    xl = lay.sub_pos[None, :, 0] + il * lay.sub_step[None, :]
    xr = lay.sub_pos[None, :, SUBFLANKS] + ir * lay.sub_step[None, :]
    slope = (lvl_r - lvl_l) / (xr - xl)
    b0 = lvl_l - slope * xl  # baseline OD at the centre
    hs = np.array(lay.hs, dtype=np.float64)
    n = 2 * hs + 1
    sig = per[:, :, 0] - n[None, :] * b0  # (rows, nh)
    shifts = np.arange(-CORE_SHIFT, CORE_SHIFT + 1, dtype=np.float64)
    cores = st[:, 9 * nh :][:, None, :] - 3.0 * (b0[:, :, None] + slope[:, :, None] * shifts)
    core = cores.max(axis=2)  # (rows, nh) highest 3-px OD above baseline near the centre
    # 5. adaptive window from the control line of each strip
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_line = sig / (core / 3.0) / _SQRT_2PI
    ctrl = sigma_line.reshape(m, nl, nh)[:, 0, :]
    fits = hs[None, :] >= WINDOW_SIGMAS * np.nan_to_num(ctrl, nan=np.inf, posinf=np.inf, neginf=np.inf)
    fits[:, -1] = True
    hi = np.argmax(fits, axis=1)  # (m,) first width that holds the control line
    # no (significant) control line: nothing to adapt to
    n0 = 2 * lay.h0 + 1
    sd0 = noise * math.sqrt(n0 + _MIN3_VAR * 1.5 * n0 * n0 / lay.f)
    hi[sig.reshape(m, nl, nh)[:, 0, 0] < ADAPT_SNR * sd0] = 0
    hsel = np.repeat(hi, nl)
    pick = (np.arange(rows), hsel)
    signal = sig[pick]
    bsel = b0[pick]
    ssel = slope[pick]
    h = hs[hsel]
    peak = core[pick] / 3.0
    with np.errstate(divide="ignore", invalid="ignore"):
        fwhm = np.where(peak > 0, 0.9394 * signal / peak, np.inf)
        half = h * (bsel - ssel * (h + 1) / 2)  # baseline over the left half; the right is symmetric
        left = per[:, :, 7][pick] - half
        right = per[:, :, 8][pick] - (h * bsel * 2 - half)
        asym = (right - left) / np.abs(signal)
    ns = 2 * h + 1
    f = lay.f
    sigma = np.repeat(noise, nl)
    var_b0 = _MIN3_VAR * 1.5 / f  # baseline at the centre, per σ²
    sd = sigma * np.sqrt(ns + var_b0 * ns * ns)
    var_slope = 4 * var_b0 / (2 * h + f) ** 2
    sd_diff = sigma * np.sqrt(2 * h + (h * (h + 1)) ** 2 * var_slope)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = signal / sd
        fwhm_rel = np.hypot(1.0 / snr, sigma * np.sqrt(1 / 3 + var_b0) / peak)
        asym_sd = sd_diff / np.abs(signal)
    return LineStats(
        signal=signal.reshape(m, nl),
        position=position,
        edge=edge,
        snr=snr.reshape(m, nl),
        signal_sd=sd.reshape(m, nl),
        fwhm=fwhm.reshape(m, nl),
        fwhm_rel_sd=np.abs(fwhm_rel).reshape(m, nl),
        asymmetry=asym.reshape(m, nl),
        asymmetry_sd=asym_sd.reshape(m, nl),
        noise=noise,
        half_width=np.asarray(hs[hi], dtype=np.intp),
    )
