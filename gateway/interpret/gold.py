"""Colloidal-gold strip interpretation, vectorized over strips.

Algorithm (per line j — control first, then each test line — identical for every strip):
1. Only the pixels around each line are touched: a region of ±(tolerance + h + f) px around the nominal
   centre, where 2h+1 ≈ line_width is the integration window and f = max(3, h) the baseline flanks.
2. y = log2(max(R, 1e-4)) in float32 (log2 is the fastest SIMD log; log10(2) is folded into weights).
3. For a candidate centre p within ±tolerance, the baseline-corrected integrated OD is
   S(p) = (2h+1)·mean(flanks) − Σ_window y, i.e. OD(x) = −log10(R(x)/R_baseline(x)) summed over the
   window, with R_baseline linear between the left flank [p−h−f, p−h) and the right flank (p+h, p+h+f].
   The line sits at the argmax of the same estimator with a narrow (≈ FWHM) window — the wide window's
   S(p) is flat near a line, so its own argmax would wander by several px with noise — refined to
   sub-pixel by a parabola; the line's signal is S at that position.
4. ratio = max(S_T, 0) / S_C (NaN when the control is missing). Validity: control missing (< 30 % of
   min_control_signal), weak (< min_control_signal), out of place (locator argmax on the window edge),
   saturated (any pixel of a line region below saturation_reflectance) → INVALID for every test line.
5. Verdicts per test line from the spec's format, cutoff and suspect band; concentration by the 4PL
   inverse (NaN + BELOW/ABOVE_CALIBRATION flag outside the asymptotes, NaN without calibration or when
   invalid).
Steps 3–4 for all candidates of all lines are one matrix product per chunk: (strips·lines, M) log
reflectances times a fixed (M, 2·candidates) weight matrix (`_kernel`) — a matched filter that BLAS runs
at full SIMD width. Two passes, no per-strip Python loop: pass 1 streams the input in ~1 MiB chunks
(finiteness check and gather of the line regions into a compact float32 array); pass 2 works on
~256 KiB chunks of the regions so every intermediate stays in L2 cache.

Does not: retry, log, read devices or files; images are reduced to profiles by `images.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gateway.interpret.codes import (
    GOLD_ALGORITHM,
    GOLD_INVALIDATING,
    GoldFlag,
    Verdict,
    flag_names,
)
from gateway.interpret.errors import InputError, SpecMismatchError
from kuaijian_schema.specs import StripSpec

__all__ = ["StripResults", "check_profiles", "interpret_strips"]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

MAX_REFLECTANCE: Final = 1.5
"""Reflectance above this is not a reflectance fraction (raw counts?) and is refused."""
MISSING_FRACTION: Final = 0.3
"""Control signal below this fraction of min_control_signal counts as missing (else weak)."""
_FLOOR: Final = np.float32(1e-4)
_GATHER_BYTES: Final = 1 << 20  # input rows per gather chunk
_BLOCK_BYTES: Final = 16 << 20  # float32 line-region buffer: memory stays bounded for any N
_WORK_BYTES: Final = 256 << 10  # region rows per work chunk (intermediates stay in L2)


@dataclass(frozen=True, slots=True)
class StripResults:
    """Interpretation of N strips with K test lines (arrays indexed [strip] or [strip, line])."""

    spec_name: str
    spec_version: str
    algorithm: str
    analytes: tuple[str, ...]  # (K,)
    control_signal: F64  # (N,) integrated OD of the C line
    test_signal: F64  # (N, K) integrated OD of each T line
    ratio: F64  # (N, K) max(T, 0) / C; NaN when the control line is missing
    verdict: npt.NDArray[np.int8]  # (N, K) `Verdict` codes
    control_position: F64  # (N,) found C centre, px
    test_position: F64  # (N, K) found T centres, px
    control_offset: F64  # (N,) found − nominal, px
    test_offset: F64  # (N, K)
    concentration: F64  # (N, K) mg/kg by the 4PL inverse; NaN when not available
    flags: npt.NDArray[np.uint16]  # (N, K) `GoldFlag` bits

    def __len__(self) -> int:
        return int(self.control_signal.shape[0])

    def verdict_for(self, i: int, k: int = 0) -> str:
        """Wire name of the verdict of strip i, test line k."""
        return Verdict(int(self.verdict[i, k])).wire

    def values_for(self, i: int, k: int = 0) -> dict[str, float | None]:
        """Wire `values` of strip i, test line k (NaN → None)."""
        return {
            "ratio": _num(self.ratio[i, k]),
            "control_signal": _num(self.control_signal[i]),
            "test_signal": _num(self.test_signal[i, k]),
            "concentration_mg_kg": _num(self.concentration[i, k]),
            "control_offset_px": _num(self.control_offset[i]),
            "test_offset_px": _num(self.test_offset[i, k]),
        }

    def flags_for(self, i: int, k: int = 0) -> tuple[str, ...]:
        """QC flag names of strip i, test line k."""
        return flag_names(GoldFlag, int(self.flags[i, k]))


def _num(v: np.floating[Any] | float) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass(frozen=True, slots=True)
class _Layout:
    length: int
    nominal: npt.NDArray[np.intp]  # (J,) integer nominal centres, control first
    tol: int
    h: int
    f: int
    hp: int  # half width of the locator window (≈ FWHM of a band)
    width: int  # region width M = 2·(tol + h + f) + 1
    index: npt.NDArray[np.intp]  # (J·M,) profile columns of all regions (edge-clamped)
    contiguous: bool  # every region lies inside the profile: gather by slices
    kernel: F32  # (M, 2·no): integrated-OD weights per candidate, then locator weights
    cutoff: F64  # (K,)
    band: F64  # (K,)
    competitive: bool
    cal: F64  # (K, 4) a, b, c, d; NaN row without calibration


@lru_cache(maxsize=64)
def _layout(spec: StripSpec) -> _Layout:
    tol = max(1, round(spec.tolerance))
    h = max(1, round(spec.line_width / 2))
    f = max(3, h)
    nominal = np.array(
        [round(spec.control_position), *(round(ln.position) for ln in spec.lines)], dtype=np.intp
    )
    hp = max(1, min(h, round(0.17 * spec.line_width)))
    width = 2 * (tol + h + f) + 1
    lo = nominal - (tol + h + f)
    for c in nominal:
        # StripSpec validates the layout; this guards specs built without validation (model_copy)
        if not 0 <= c < spec.length:
            raise SpecMismatchError(
                f"kit {spec.name}: line at {c} px lies outside the {spec.length} px profile"
            )
    # edge-clamped: a flank reaching past the profile end repeats the last pixel
    index = np.clip(lo[:, None] + np.arange(width)[None, :], 0, spec.length - 1).reshape(-1)
    cal = np.full((len(spec.lines), 4), np.nan)
    for k, ln in enumerate(spec.lines):
        if ln.calibration is not None:
            c4 = ln.calibration
            cal[k] = (c4.a, c4.b, c4.c, c4.d)
    return _Layout(
        length=spec.length,
        nominal=nominal,
        tol=tol,
        h=h,
        f=f,
        hp=hp,
        width=width,
        index=index.astype(np.intp),
        contiguous=bool((lo >= 0).all() and (lo + width <= spec.length).all()),
        kernel=_kernel(tol, h, f, hp),
        cutoff=np.array([ln.cutoff for ln in spec.lines]),
        band=np.array([ln.suspect_band for ln in spec.lines]),
        competitive=spec.format == "competitive",
        cal=cal,
    )


def _kernel(tol: int, h: int, f: int, hp: int) -> F32:
    """Weights (M, 2·no) that turn log2 R over a region into, for every candidate centre o:
    column o — the integrated OD S (window −1, flanks +(2h+1)/(2f)); column no + o — the locator (the
    same with a narrow ±hp window). log10(2) converts log2 to OD, so one matrix product does it all."""
    width = 2 * (tol + h + f) + 1
    no = 2 * tol + 1
    k = np.zeros((width, 2 * no))
    for o in range(no):
        c = f + h + o
        for col, half in ((o, h), (no + o, hp)):
            k[c - h - f : c - h, col] = (2 * half + 1) / (2 * f)
            k[c + h + 1 : c + h + f + 1, col] = (2 * half + 1) / (2 * f)
            k[c - half : c + half + 1, col] = -1.0
    out: F32 = (k * math.log10(2.0)).astype(np.float32)
    return out


def check_profiles(profiles: object, spec: StripSpec) -> npt.NDArray[np.floating[Any]]:
    """Validate the type, dtype, shape and length of `profiles`; return it as a float array (a copy
    only for float16)."""
    if not isinstance(profiles, np.ndarray):
        raise InputError(
            f"profiles must be a numpy array (N, L) of reflectance, got {type(profiles).__name__}"
        )
    if profiles.dtype.kind != "f":
        raise InputError(
            f"profiles must be float reflectance in [0, 1], got dtype {profiles.dtype}"
            + (" (divide raw counts by the full-scale count first)" if profiles.dtype.kind in "ui" else "")
        )
    if profiles.ndim != 2:
        raise InputError(f"profiles must have shape (N, L), got shape {profiles.shape}")
    n, length = profiles.shape
    if n == 0:
        raise InputError("profiles is empty (N = 0 strips)")
    if length != spec.length:
        raise SpecMismatchError(
            f"profiles have {length} px but kit {spec.name} expects profiles of {spec.length} px"
        )
    if profiles.dtype.itemsize < 4:
        # float16: widen once, so chunk sums cannot overflow into a false "inf"
        return profiles.astype(np.float32)
    return profiles


def _raise_bad_rows(x: npt.NDArray[np.floating[Any]], offset: int, what: str) -> None:
    rows = x.reshape(x.shape[0], -1)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise InputError(f"profile {offset + int(np.flatnonzero(bad)[0])} contains NaN or inf; {what}")
    out = (rows.min(axis=1) < 0) | (rows.max(axis=1) > MAX_REFLECTANCE)
    i = int(np.flatnonzero(out)[0]) if out.any() else 0
    raise InputError(
        f"profile {offset + i} has values in [{float(rows[i].min()):.4g}, {float(rows[i].max()):.4g}] "
        f"near its lines; expected reflectance in [0, {MAX_REFLECTANCE}]"
    )


def interpret_strips(profiles: npt.NDArray[np.floating[Any]], spec: StripSpec) -> StripResults:
    """Interpret N reflectance profiles (N, spec.length) with kit `spec`.

    Raises InputError for unusable arrays and SpecMismatchError when the spec does not fit them.
    """
    x = check_profiles(profiles, spec)
    lay = _layout(spec)
    n = x.shape[0]
    nl = lay.nominal.shape[0]
    k = nl - 1
    signal = np.empty((n, nl))
    pos = np.empty((n, nl))
    edge = np.empty((n, nl), dtype=bool)
    sat = np.empty(n, dtype=bool)
    width = nl * lay.width
    block = max(64, _BLOCK_BYTES // (width * 4))  # strips per block: bounds the regions buffer
    regions = np.empty((min(n, block), width), dtype=np.float32)
    rows1 = max(16, _GATHER_BYTES // max(1, x.shape[1] * x.itemsize))
    rows2 = max(16, _WORK_BYTES // (width * 4))
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        # pass 1 (input-sized chunks, each read once from memory): finiteness of the whole profile
        # and the pixels of every line region, gathered into a compact float32 buffer
        for s in range(b0, b1, rows1):
            e = min(b1, s + rows1)
            chunk = x[s:e]
            if not math.isfinite(float(chunk.sum())):
                _raise_bad_rows(chunk, s, "reflectance must be finite")
            dst = regions[s - b0 : e - b0]
            if lay.contiguous:
                for j, lo in enumerate(lay.nominal - (lay.tol + lay.h + lay.f)):
                    dst[:, j * lay.width : (j + 1) * lay.width] = chunk[:, lo : lo + lay.width]
            else:
                dst[...] = chunk[:, lay.index]
        # pass 2 (L2-sized chunks of the regions): baseline, line search, integration
        for s in range(b0, b1, rows2):
            e = min(b1, s + rows2)
            _chunk(
                regions[s - b0 : e - b0],
                s,
                lay,
                spec.saturation_reflectance,
                signal[s:e],
                pos[s:e],
                edge[s:e],
                sat[s:e],
            )

    control = signal[:, 0]
    test = signal[:, 1:]
    mcs = spec.min_control_signal
    flags = np.zeros((n, k), dtype=np.uint16)
    missing = control < MISSING_FRACTION * mcs
    weak = ~missing & (control < mcs)
    strip_flags = (
        missing * int(GoldFlag.CONTROL_MISSING)
        | weak * int(GoldFlag.CONTROL_WEAK)
        | edge[:, 0] * int(GoldFlag.CONTROL_OUT_OF_PLACE)
        | sat * int(GoldFlag.SATURATED)
    ).astype(np.uint16)
    flags |= strip_flags[:, None]
    invalid = (strip_flags & int(GOLD_INVALIDATING)) != 0

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(~missing[:, None], np.maximum(test, 0.0) / control[:, None], np.nan)
    cut = lay.cutoff[None, :]
    band = lay.band[None, :]
    if lay.competitive:
        pos_v = ratio < cut
        sus_v = ~pos_v & (ratio < cut + band)
    else:
        pos_v = ratio >= cut
        sus_v = ~pos_v & (ratio >= cut - band)
    verdict = np.where(pos_v, Verdict.POSITIVE, np.where(sus_v, Verdict.SUSPECT, Verdict.NEGATIVE)).astype(
        np.int8
    )
    verdict[invalid] = Verdict.INVALID
    conc, below, above = _inverse_4pl(ratio, lay.cal)
    conc[invalid] = np.nan
    flags |= ((below & ~invalid[:, None]) * int(GoldFlag.BELOW_CALIBRATION)).astype(np.uint16)
    flags |= ((above & ~invalid[:, None]) * int(GoldFlag.ABOVE_CALIBRATION)).astype(np.uint16)
    offset = pos - lay.nominal[None, :]
    return StripResults(
        spec_name=spec.name,
        spec_version=spec.version,
        algorithm=GOLD_ALGORITHM,
        analytes=spec.analytes,
        control_signal=control.copy(),
        test_signal=test.copy(),
        ratio=ratio,
        verdict=verdict,
        control_position=pos[:, 0].copy(),
        test_position=pos[:, 1:].copy(),
        control_offset=offset[:, 0].copy(),
        test_offset=offset[:, 1:].copy(),
        concentration=conc,
        flags=flags,
    )


def _chunk(
    g2: F32,
    offset: int,
    lay: _Layout,
    sat_reflectance: float,
    signal: F64,
    pos: F64,
    edge: npt.NDArray[np.bool_],
    sat: npt.NDArray[np.bool_],
) -> None:
    """Fill signal/pos/edge (m, J) and sat (m,) from the line regions (m, J·M) of m profiles."""
    m = g2.shape[0]
    nl = lay.nominal.shape[0]
    lo = g2.min(axis=1)
    hi = g2.max(axis=1)
    if lo.min() < 0 or hi.max() > MAX_REFLECTANCE:
        _raise_bad_rows(g2, offset, "expected reflectance in [0, 1.5]")
    np.less(lo, sat_reflectance, out=sat)
    np.maximum(g2, _FLOOR, out=g2)
    np.log2(g2, out=g2)
    no = 2 * lay.tol + 1
    # one GEMM: (m·J, M) @ (M, 2·no) → integrated OD and locator for every candidate centre
    both = g2.reshape(m * nl, lay.width) @ lay.kernel
    loc = both[:, no:]
    best = np.argmax(loc, axis=1)
    rows = np.arange(m * nl)
    signal[...] = both[rows, best].reshape(m, nl)
    p0 = loc[rows, best]
    pm = loc[rows, np.maximum(best - 1, 0)]
    pp = loc[rows, np.minimum(best + 1, no - 1)]
    den = pm - 2 * p0 + pp
    delta = np.zeros(m * nl, dtype=np.float32)
    np.divide(0.5 * (pm - pp), den, out=delta, where=den < 0)
    np.clip(delta, -0.5, 0.5, out=delta)
    tol = lay.tol
    b = best.reshape(m, nl)
    pos[...] = lay.nominal[None, :] + (b - tol) + delta.reshape(m, nl)
    np.logical_or(b == 0, b == no - 1, out=edge)


def _inverse_4pl(ratio: F64, cal: F64) -> tuple[F64, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Concentration (N, K) from ratio by the 4PL inverse; NaN outside (d, a) or without calibration."""
    a, b, c, d = (cal[None, :, i] for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        frac = (ratio - d) / (a - d)  # 1 at zero concentration, 0 at infinite
        inside = (frac > 0) & (frac < 1)
        conc = np.where(inside, c * np.power(np.where(inside, 1.0 / frac - 1.0, 1.0), 1.0 / b), np.nan)
    calibrated = ~np.isnan(a) & ~np.isnan(ratio)
    below = calibrated & (frac >= 1)
    above = calibrated & (frac <= 0)
    return conc, below, above
