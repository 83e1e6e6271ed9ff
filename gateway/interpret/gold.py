"""Colloidal-gold strip interpretation, vectorized over strips.

Algorithm (per line j — control first, then each test line — identical for every strip):
1. Only the pixels around each line are touched: a region of ±(tolerance + line_width + f) px around the
   nominal centre (f = max(3, line_width/2) baseline flank), gathered into a compact float32 array.
2. `lines.measure` locates each line (narrow matched filter, one GEMM), integrates its optical density
   above a robust linear baseline with a window adapted to the measured width of the control line
   (line_width … 2·line_width), and measures its shape (equivalent FWHM, asymmetry), SNR and the
   strip's noise — see that module.
3. ratio = max(M_T, 0) / M_C of the lines' areas M from `lines`: a per-line weighted least-squares fit
   (the control line's band shape — a Gaussian of its width, or where that does not fit it, a fitted
   split Gaussian + Lorentzian — + linear baseline, inverse-variance weights for additive reflectance
   noise), or, on a strip where a fit fails its χ² test (a speck, a misshapen
   band), the Gaussian-weighted sums above the robust baseline, the same weights on every line of the
   strip (NaN when the control is missing). Validity (→ INVALID for every test
   line): control missing (< 30 % of min_control_signal), weak (< min_control_signal), out of place
   (locator argmax on the window edge), not shaped like a line (CONTROL_SHAPE: a dust speck or a smear
   in the control window), saturated (any pixel of a line region below saturation_reflectance).
4. Verdicts per test line from the spec's format, cutoff and suspect band; a test line that carries
   signal (SNR ≥ 4) but is not shaped like a line of this kit, or sits on the edge of its search window,
   is SUSPECT with TEST_SHAPE — never silently negative or positive. Concentration by the 4PL inverse
   (NaN + BELOW/ABOVE_CALIBRATION flag outside the asymptotes, NaN without calibration or when
   invalid). Quality per test line: SNR of T and C, the ratio's noise sd, and the distance of the ratio
   from the nearest decision boundary in those sds (margin).
Two passes, no per-strip Python loop: pass 1 streams the input in ~1 MiB chunks (finiteness check and
gather of the line regions); pass 2 works on ~256 KiB chunks of the regions so every intermediate
stays in L2 cache.

Does not: retry, log, read devices or files; images are reduced to profiles by `images.py`; the line
measurement itself lives in `lines.py`.
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
from gateway.interpret.lines import MEDIANS, Layout, LineStats, Scan, finish, layout, running_median, scan
from kuaijian_schema.specs import StripSpec
from kuaijian_schema.wire import VerdictName

__all__ = ["WIRE_NAMES", "StripResults", "check_profiles", "interpret_strips"]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

MAX_REFLECTANCE: Final = 1.5
"""Reflectance above this is not a reflectance fraction (raw counts?) and is refused."""
MISSING_FRACTION: Final = 0.3
"""Control signal below this fraction of min_control_signal counts as missing (else weak)."""
SHAPE_SNR: Final = 4.0
"""A line is shape-checked when its SNR reaches this (below it, it is noise whatever its shape)."""
FWHM_RANGE: Final = (0.25, 1.2)
"""Equivalent FWHM of a line, × line_width (the demo kits' bands are 0.31–0.40, broadened ones up
to 0.8; a dust speck of σ ≤ 1.3 px is ≤ 0.18 on the demo kits)."""
MAX_ASYMMETRY: Final = 0.6
"""|S_right − S_left| / S above this is not one line (a speck or a second band beside it)."""
SHAPE_Z: Final = 3.0
"""A shape test fails only when it fails by this many noise sds of its statistic."""
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
    control_snr: F64  # (N,) control signal / its noise sd
    test_snr: F64  # (N, K) test signal / its noise sd
    ratio_sd: F64  # (N, K) noise sd of the ratio; NaN when the control is missing
    margin: F64  # (N, K) |ratio − nearest decision boundary| / ratio_sd; NaN when invalid
    control_fwhm: F64  # (N,) equivalent FWHM of the control line, px
    test_fwhm: F64  # (N, K)
    noise: F64  # (N,) OD noise per px
    window: npt.NDArray[np.intp]  # (N,) integration window used, px (2h + 1)

    def __len__(self) -> int:
        return int(self.control_signal.shape[0])

    def verdict_for(self, i: int, k: int = 0) -> VerdictName:
        """Wire name of the verdict of strip i, test line k."""
        return Verdict(int(self.verdict[i, k])).wire

    def values_for(self, i: int, k: int = 0) -> dict[str, float | None]:
        """Wire `values` of strip i, test line k (NaN → None)."""
        return {
            name: _num(column[i] if column.ndim == 1 else column[i, k])
            for name, column in ((name, getattr(self, attr)) for name, attr in WIRE_VALUES)
        }

    def flags_for(self, i: int, k: int = 0) -> tuple[str, ...]:
        """QC flag names of strip i, test line k."""
        return flag_names(GoldFlag, int(self.flags[i, k]))

    def wire_table(self) -> tuple[list[list[int]], F64, list[list[int]]]:
        """(verdict codes [i][k], values, QC flag bits [i][k]) of every strip i and test line k — what
        `verdict_for`, `values_for` and `flags_for` give one by one — from whole arrays at once (the
        gateway's pipeline encodes a batch from them, `kuaijian_schema.wire.canonical_float_maps`):
        values is (N·K, len(WIRE_NAMES)), row i·K + k, columns in `WIRE_NAMES` order (sorted, as canonical
        JSON writes them), NaN or ±inf where `values_for` gives None."""
        n, k = self.verdict.shape
        table = np.empty((n, k, len(WIRE_NAMES)), dtype=np.float64)
        for j, name in enumerate(WIRE_NAMES):
            column = getattr(self, _WIRE_ATTR[name])
            table[:, :, j] = column[:, None] if column.ndim == 1 else column
        return self.verdict.tolist(), table.reshape(n * k, len(WIRE_NAMES)), self.flags.tolist()


WIRE_VALUES: Final = (
    ("ratio", "ratio"),
    ("control_signal", "control_signal"),
    ("test_signal", "test_signal"),
    ("concentration_mg_kg", "concentration"),
    ("control_offset_px", "control_offset"),
    ("test_offset_px", "test_offset"),
    ("control_snr", "control_snr"),
    ("test_snr", "test_snr"),
    ("ratio_sd", "ratio_sd"),
    ("margin_sd", "margin"),
)
"""(wire name in a result's `values`, `StripResults` array: (N,) per strip or (N, K) per test line)."""
WIRE_NAMES: Final = tuple(sorted(name for name, _attr in WIRE_VALUES))
"""The names of `WIRE_VALUES` in canonical JSON's (sorted) order: the columns of `StripResults.wire_table`."""
_WIRE_ATTR: Final = dict(WIRE_VALUES)


def _num(v: np.floating[Any] | float) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass(frozen=True, slots=True)
class _Rules:
    cutoff: F64  # (K,)
    band: F64  # (K,)
    competitive: bool
    cal: F64  # (K, 4) a, b, c, d; NaN row without calibration


@lru_cache(maxsize=64)
def _rules(spec: StripSpec) -> _Rules:
    cal = np.full((len(spec.lines), 4), np.nan)
    for k, ln in enumerate(spec.lines):
        if ln.calibration is not None:
            c4 = ln.calibration
            cal[k] = (c4.a, c4.b, c4.c, c4.d)
    return _Rules(
        cutoff=np.array([ln.cutoff for ln in spec.lines]),
        band=np.array([ln.suspect_band for ln in spec.lines]),
        competitive=spec.format == "competitive",
        cal=cal,
    )


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


def interpret_strips(
    profiles: npt.NDArray[np.floating[Any]], spec: StripSpec, *, median: int = 0
) -> StripResults:
    """Interpret N reflectance profiles (N, spec.length) with kit `spec`.

    `median` (0, 3 or 5): width of an optional running median over the line regions before anything
    else (off by default: docs/interpret.md has its measured cost and effect).
    Raises InputError for unusable arrays and SpecMismatchError when the spec does not fit them.
    """
    if median not in MEDIANS:
        raise InputError(f"median must be one of {MEDIANS}, got {median!r}")
    x = check_profiles(profiles, spec)
    lay = layout(spec)
    rules = _rules(spec)
    n = x.shape[0]
    nl = lay.nominal.shape[0]
    k = nl - 1
    out = _Out(n, nl)
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
                for j, lo in enumerate(lay.nominal - lay.reach):
                    dst[:, j * lay.width : (j + 1) * lay.width] = chunk[:, lo : lo + lay.width]
            else:
                dst[...] = chunk[:, lay.index]
        # pass 2 (L2-sized chunks of the regions): line search and window sums; then baselines,
        # adaptive windows, signals and shapes once for the whole block
        scans = [
            _chunk(regions[s - b0 : e - b0], s, lay, spec.saturation_reflectance, out, slice(s, e), median)
            for s, e in ((s, min(b1, s + rows2)) for s in range(b0, b1, rows2))
        ]
        whole = Scan(
            position=np.concatenate([sc.position for sc in scans]),
            frac=np.concatenate([sc.frac for sc in scans]),
            window=np.concatenate([sc.window for sc in scans]),
            edge=np.concatenate([sc.edge for sc in scans]),
            sums=np.concatenate([sc.sums for sc in scans], axis=1),
            flank_d2=np.concatenate([sc.flank_d2 for sc in scans], axis=1),
        )
        out.put(slice(b0, b1), finish(whole, lay))

    control = out.signal[:, 0]
    test = out.signal[:, 1:]
    mcs = spec.min_control_signal
    flags = np.zeros((n, k), dtype=np.uint16)
    missing = control < MISSING_FRACTION * mcs
    weak = ~missing & (control < mcs)
    bad_shape = _bad_shape(out, spec.line_width)
    strip_flags = (
        missing * int(GoldFlag.CONTROL_MISSING)
        | weak * int(GoldFlag.CONTROL_WEAK)
        | out.edge[:, 0] * int(GoldFlag.CONTROL_OUT_OF_PLACE)
        | (~missing & bad_shape[:, 0]) * int(GoldFlag.CONTROL_SHAPE)
        | out.sat * int(GoldFlag.SATURATED)
    ).astype(np.uint16)
    flags |= strip_flags[:, None]
    invalid = (strip_flags & int(GOLD_INVALIDATING)) != 0
    # a test line with signal on the edge of its search window, or not shaped like a line
    t_bad = (bad_shape[:, 1:] | (out.edge[:, 1:] & (out.snr[:, 1:] >= SHAPE_SNR))) & ~invalid[:, None]
    flags |= (t_bad * int(GoldFlag.TEST_SHAPE)).astype(np.uint16)

    # the ratio from the line areas (least-squares fit, or the matched-filter sums on a strip a fit failed)
    mc = out.matched[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(~missing[:, None], np.maximum(out.matched[:, 1:], 0.0) / mc, np.nan)
        sd_t = out.matched_sd[:, 1:]
        sd_c = out.matched_sd[:, :1]
        ratio_sd = np.sqrt(sd_t**2 + (ratio * sd_c) ** 2) / mc
    cut = rules.cutoff[None, :]
    band = rules.band[None, :]
    other = cut + band if rules.competitive else cut - band
    if rules.competitive:
        pos_v = ratio < cut
        sus_v = ~pos_v & (ratio < cut + band)
    else:
        pos_v = ratio >= cut
        sus_v = ~pos_v & (ratio >= cut - band)
    verdict = np.where(pos_v, Verdict.POSITIVE, np.where(sus_v, Verdict.SUSPECT, Verdict.NEGATIVE)).astype(
        np.int8
    )
    verdict[t_bad] = Verdict.SUSPECT
    verdict[invalid] = Verdict.INVALID
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = np.minimum(np.abs(ratio - cut), np.abs(ratio - other)) / ratio_sd
    margin[invalid] = np.nan
    conc, below, above = _inverse_4pl(ratio, rules.cal)
    conc[invalid] = np.nan
    flags |= ((below & ~invalid[:, None]) * int(GoldFlag.BELOW_CALIBRATION)).astype(np.uint16)
    flags |= ((above & ~invalid[:, None]) * int(GoldFlag.ABOVE_CALIBRATION)).astype(np.uint16)
    pos = out.pos
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
        control_snr=out.snr[:, 0].copy(),
        test_snr=out.snr[:, 1:].copy(),
        ratio_sd=ratio_sd,
        margin=margin,
        control_fwhm=out.fwhm[:, 0].copy(),
        test_fwhm=out.fwhm[:, 1:].copy(),
        noise=out.noise,
        window=2 * out.half + 1,
    )


class _Out:
    """Per-strip, per-line measurements filled chunk by chunk."""

    def __init__(self, n: int, nl: int) -> None:
        self.signal = np.empty((n, nl))
        self.matched = np.empty((n, nl))
        self.matched_sd = np.empty((n, nl))
        self.pos = np.empty((n, nl))
        self.edge = np.empty((n, nl), dtype=bool)
        self.snr = np.empty((n, nl))
        self.sd = np.empty((n, nl))
        self.fwhm = np.empty((n, nl))
        self.asym = np.empty((n, nl))
        self.fwhm_rel = np.empty((n, nl))
        self.asym_sd = np.empty((n, nl))
        self.noise = np.empty(n)
        self.half = np.empty(n, dtype=np.intp)
        self.sat = np.empty(n, dtype=bool)

    def put(self, rows: slice, st: LineStats) -> None:
        self.signal[rows] = st.signal
        self.matched[rows] = st.matched
        self.matched_sd[rows] = st.matched_sd
        self.pos[rows] = st.position
        self.edge[rows] = st.edge
        self.snr[rows] = st.snr
        self.sd[rows] = st.signal_sd
        self.fwhm[rows] = st.fwhm
        self.asym[rows] = st.asymmetry
        self.fwhm_rel[rows] = st.fwhm_rel_sd
        self.asym_sd[rows] = st.asymmetry_sd
        self.noise[rows] = st.noise
        self.half[rows] = st.half_width


def _bad_shape(out: _Out, line_width: float) -> npt.NDArray[np.bool_]:
    """(N, J): lines with signal (SNR ≥ SHAPE_SNR) that are significantly (by SHAPE_Z noise sds) too
    narrow, too wide or lopsided."""
    lo, hi = FWHM_RANGE[0] * line_width, FWHM_RANGE[1] * line_width
    z = SHAPE_Z
    with np.errstate(invalid="ignore"):
        odd = (
            (out.fwhm * (1 + z * out.fwhm_rel) < lo)
            | (out.fwhm * (1 - z * out.fwhm_rel) > hi)
            | ~(np.abs(out.asym) - z * out.asym_sd <= MAX_ASYMMETRY)
        )
    bad: npt.NDArray[np.bool_] = odd & (out.snr >= SHAPE_SNR)
    return bad


def _chunk(
    g2: F32, offset: int, lay: Layout, sat_reflectance: float, out: _Out, rows: slice, median: int
) -> Scan:
    """Check, optionally median-filter, and scan the line regions (m, J·M) of m profiles; saturation
    (of the unfiltered pixels) into `out.sat[rows]`."""
    lo = g2.min(axis=1)
    if lo.min() < 0 or g2.max() > MAX_REFLECTANCE:
        _raise_bad_rows(g2, offset, "expected reflectance in [0, 1.5]")
    np.less(lo, sat_reflectance, out=out.sat[rows])
    running_median(g2, lay, median)
    return scan(g2, lay)


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
