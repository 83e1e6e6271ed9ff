"""Ground truth of the colloidal-gold signal model: what a strip is, and drawing strips at random.

Does: the conditions the generator draws from (`GoldConditions`), the exact truth of a batch
(`GoldTruth`: concentrations, integrated ODs, the kit's T/C ratio, positions, faults, expected verdicts),
the kit's 4PL (`four_pl`), and `draw_gold`, which draws every per-strip parameter — concentrations and
the ratio they give, line areas and widths, background, noise, placement, band shapes, specks, faults
— into that truth and the `Render` parameters the renderer needs.

Does not: compute any pixel (that is `gold_render`), or assemble profiles and images (`signal_model`,
the public entry points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from firmware_sim.truth import INVALID, NEGATIVE, POSITIVE, SUSPECT
from kuaijian_schema.specs import Calibration4PL, StripSpec

__all__ = [
    "GOLD_FAULTS",
    "GoldConditions",
    "GoldFault",
    "GoldTruth",
    "Render",
    "draw_gold",
    "expected_verdict",
    "four_pl",
]

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]

GoldFault = Literal["control_missing", "control_weak", "control_offset", "saturated"]
GOLD_FAULTS: Final[tuple[GoldFault, ...]] = (
    "control_missing",
    "control_weak",
    "control_offset",
    "saturated",
)
_SQRT_2PI: Final = math.sqrt(2.0 * math.pi)


def four_pl(cal: Calibration4PL, conc: npt.ArrayLike) -> F64:
    """T/C ratio at concentration `conc` (mg/kg) by the kit's 4-parameter logistic."""
    x = np.asarray(conc, dtype=np.float64)
    out: F64 = cal.d + (cal.a - cal.d) / (1.0 + (np.maximum(x, 0.0) / cal.c) ** cal.b)
    return out


@dataclass(frozen=True, slots=True)
class GoldConditions:
    """Ranges the gold generator draws from (uniform unless stated) and fault probabilities per strip.

    Integrated ODs are sums over pixels of OD (px·OD), the unit of `StripSpec.min_control_signal`.
    """

    background: tuple[float, float] = (0.70, 0.92)
    drift: float = 0.08  # max |relative background change| end to end
    ripple: float = 0.03  # max relative amplitude of the low-frequency unevenness
    ripple_period_px: tuple[float, float] = (450.0, 1600.0)
    noise_sd: tuple[float, float] = (0.002, 0.008)  # additive reflectance noise per pixel
    sigma_frac: tuple[float, float] = (0.13, 0.17)  # band Gaussian sd as a fraction of line_width
    strip_shift: float = 0.45  # max |cassette placement shift|, fraction of spec.tolerance
    line_jitter: float = 0.15  # max |extra per-line shift|, fraction of spec.tolerance
    control_od: tuple[float, float] = (2.5, 8.0)  # normal C line, × spec.min_control_signal (scaled
    # down together with the T lines where the darkest band would otherwise approach saturation)
    weak_control_od: tuple[float, float] = (0.1, 0.5)  # weak C line, × spec.min_control_signal
    zero_fraction: float = 0.2  # drawn concentrations: fraction exactly 0 (analyte absent)
    conc_span: float = 30.0  # drawn concentrations: log-uniform in [c/span, c·span] of the 4PL
    ratio_range: tuple[float, float] = (0.0, 1.6)  # drawn ratio for lines without calibration
    floor: float = 0.001  # detector floor reflectance
    p_control_missing: float = 0.0
    p_control_weak: float = 0.0
    p_control_offset: float = 0.0
    p_saturated: float = 0.0
    # shapes other than a Gaussian band (per strip, shared by all its lines; the area is kept, so the
    # true ratio is unchanged): pseudo-Voigt Lorentzian fraction η (same FWHM), and tailing — the
    # band's far side (downstream of the flow) has its sd × (1 + t)
    lorentz_fraction: tuple[float, float] = (0.0, 0.0)
    tailing: tuple[float, float] = (0.0, 0.0)
    # dust specks: with this probability a strip gets one speck (Gaussian of sd speck_sigma px and
    # integrated OD speck_od) anywhere within ±(tolerance + line_width) of one of its lines
    p_speck: float = 0.0
    speck_od: tuple[float, float] = (0.3, 1.5)
    speck_sigma: tuple[float, float] = (0.7, 1.3)


@dataclass(frozen=True, slots=True)
class GoldTruth:
    """Exact ground truth of n generated strips with K test lines."""

    concentration: F64  # (n, K) mg/kg; NaN for lines without calibration
    control_od: F64  # (n,) integrated OD of the C line (0 when missing)
    test_od: F64  # (n, K) integrated OD of each T line
    ratio: F64  # (n, K) test_od / control_od of an intact strip (the kit's response)
    control_position: F64  # (n,) true C centre, px
    test_position: F64  # (n, K) true T centres, px
    sigma_px: F64  # (n,) Gaussian sd of the bands
    background: F64  # (n,) mean background reflectance
    noise_sd: F64  # (n,) additive reflectance noise sd
    control_missing: B  # (n,)
    control_weak: B  # (n,)
    control_offset: B  # (n,) control line outside its search window
    saturated: B  # (n,) a line darker than spec.saturation_reflectance
    verdict: I8  # (n, K) expected verdict code
    speck_position: F64  # (n,) centre of the strip's dust speck, px; NaN without one
    speck_od: F64  # (n,) its integrated OD (0 without one)

    @property
    def invalid(self) -> B:
        """(n,) strips that must be read as invalid."""
        out: B = self.control_missing | self.control_weak | self.control_offset | self.saturated
        return out


@dataclass(frozen=True, slots=True)
class Render:
    """Per-strip drawing parameters shared by the profile and image renderers."""

    centres: F64  # (n, 1 + K): control first
    amplitude: F64  # (n, 1 + K) peak OD
    sigma: F64  # (n,)
    level: F64  # (n,)
    drift: F64  # (n,)
    ripple: F64  # (n,)
    period: F64  # (n,)
    phase: F64  # (n,)
    noise: F64  # (n,)
    eta: F64  # (n,) Lorentzian fraction of the bands
    tail: F64  # (n,) far-side sd excess of the bands
    speck_position: F64  # (n,) NaN without a speck
    speck_od: F64  # (n,)
    speck_sigma: F64  # (n,)


def expected_verdict(spec: StripSpec, ratio: F64, invalid: B) -> I8:
    cut = np.array([ln.cutoff for ln in spec.lines])
    band = np.array([ln.suspect_band for ln in spec.lines])
    if spec.format == "competitive":
        pos = ratio < cut
        sus = ~pos & (ratio < cut + band)
    else:
        pos = ratio >= cut
        sus = ~pos & (ratio >= cut - band)
    v = np.where(pos, POSITIVE, np.where(sus, SUSPECT, NEGATIVE)).astype(np.int8)
    v[invalid] = INVALID
    return v


def draw_concentrations(spec: StripSpec, n: int, rng: np.random.Generator, cond: GoldConditions) -> F64:
    k = len(spec.lines)
    out = np.full((n, k), np.nan)
    for j, ln in enumerate(spec.lines):
        if ln.calibration is None:
            continue
        c = ln.calibration.c
        logs = rng.uniform(math.log(c / cond.conc_span), math.log(c * cond.conc_span), n)
        col = np.exp(logs)
        col[rng.random(n) < cond.zero_fraction] = 0.0
        out[:, j] = col
    return out


def draw_gold(
    spec: StripSpec,
    n: int,
    rng: np.random.Generator,
    concentrations: npt.ArrayLike | None,
    cond: GoldConditions,
    fault: GoldFault | None,
) -> tuple[GoldTruth, Render]:
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    k = len(spec.lines)
    if concentrations is None:
        conc = draw_concentrations(spec, n, rng, cond)
    else:
        given = np.array(concentrations, dtype=np.float64)
        if given.size != n * k:
            raise ValueError(f"concentrations must have shape ({n}, {k}) for {n} strips of {spec.name}")
        conc = given.reshape(n, k)
        if np.any(conc < 0) or not np.all(np.isfinite(conc)):
            raise ValueError("concentrations must be finite and ≥ 0 mg/kg")
    ratio = np.empty((n, k))
    for j, ln in enumerate(spec.lines):
        if ln.calibration is None:
            ratio[:, j] = rng.uniform(*cond.ratio_range, n)
            if concentrations is None:
                conc[:, j] = np.nan
        else:
            ratio[:, j] = four_pl(ln.calibration, conc[:, j])

    # faults: mutually exclusive per strip
    kinds = np.full(n, -1)
    if fault is not None:
        kinds[:] = GOLD_FAULTS.index(fault)
    else:
        probs = np.array(
            [cond.p_control_missing, cond.p_control_weak, cond.p_control_offset, cond.p_saturated]
        )
        if probs.sum() > 1.0:
            raise ValueError("fault probabilities sum to more than 1")
        u = rng.random(n)
        edges = np.cumsum(probs)
        kinds = np.where(u < edges[-1], np.searchsorted(edges, u, side="right"), -1)
    missing, weak, offset, saturated = (kinds == i for i in range(4))
    if spec.saturation_reflectance <= 0:
        saturated[:] = False

    mcs = spec.min_control_signal
    control_od = rng.uniform(*cond.control_od, n) * mcs
    test_od = ratio * control_od[:, None]  # T keeps its kit response even when the C line fails
    control_od = np.where(weak, rng.uniform(*cond.weak_control_od, n) * mcs, control_od)
    control_od = np.where(missing, 0.0, control_od)

    sigma = rng.uniform(*cond.sigma_frac, n) * spec.line_width
    level = rng.uniform(*cond.background, n)
    amp = np.concatenate([control_od[:, None], test_od], axis=1) / (sigma[:, None] * _SQRT_2PI)
    if spec.saturation_reflectance > 0:
        # intact strips stay clear of saturation: the darkest band keeps R ≥ 1.6 × the threshold even
        # where drift and ripple lower the background (both lines scale together, the ratio is kept)
        dim = 1.0 - cond.drift / 2 - cond.ripple
        a_max = np.log10(level * dim / (1.6 * spec.saturation_reflectance))
        scale = np.minimum(1.0, a_max / np.maximum(amp.max(axis=1), 1e-12))
        amp *= scale[:, None]
        control_od = control_od * scale
        test_od = test_od * scale[:, None]
    eta = rng.uniform(*cond.lorentz_fraction, n)
    tail = rng.uniform(*cond.tailing, n)
    if np.any(saturated):
        # the darkest band of the strip goes below the saturation reflectance (its peak is lower than a
        # Gaussian band's of the same amplitude when it is Lorentzian-mixed or tailing)
        which = np.argmax(amp, axis=1)
        rows = np.flatnonzero(saturated)
        peak = (1.0 - eta[rows]) * 2.0 / (2.0 + tail[rows]) + eta[rows] / math.sqrt(math.pi * math.log(2.0))
        target = np.log10(level[rows] / (0.3 * spec.saturation_reflectance)) / peak
        amp[rows, which[rows]] = np.maximum(amp[rows, which[rows]], target)
        control_od = amp[:, 0] * sigma * _SQRT_2PI
        test_od = amp[:, 1:] * sigma[:, None] * _SQRT_2PI

    nominal = np.array([spec.control_position, *(ln.position for ln in spec.lines)])
    tol = spec.tolerance
    shift = rng.uniform(-cond.strip_shift, cond.strip_shift, n) * tol
    centres = (
        nominal[None, :] + shift[:, None] + rng.uniform(-cond.line_jitter, cond.line_jitter, (n, k + 1)) * tol
    )
    if np.any(offset):
        # move the C line well outside its search window, away from the nearest T line
        tests = nominal[1:]
        nearest = tests[np.argmin(np.abs(tests - spec.control_position))]
        side = 1.0 if spec.control_position >= nearest else -1.0
        dist = tol + spec.line_width * rng.uniform(1.0, 1.5, n)
        lo, hi = 4 * sigma, spec.length - 4 * sigma
        cand = spec.control_position + side * dist
        other = spec.control_position - side * dist
        fits = (cand >= lo) & (cand <= hi)
        centres[:, 0] = np.where(offset, np.where(fits, cand, other), centres[:, 0])

    has_speck = rng.random(n) < cond.p_speck
    near = nominal[rng.integers(0, k + 1, n)]
    reach = spec.tolerance + spec.line_width
    speck_pos = np.where(has_speck, near + rng.uniform(-reach, reach, n), np.nan)
    speck_area = np.where(has_speck, rng.uniform(*cond.speck_od, n), 0.0)
    speck_sigma = rng.uniform(*cond.speck_sigma, n)

    truth = GoldTruth(
        concentration=conc,
        control_od=control_od,
        test_od=test_od,
        ratio=ratio,
        control_position=centres[:, 0].copy(),
        test_position=centres[:, 1:].copy(),
        sigma_px=sigma,
        background=level,
        noise_sd=rng.uniform(*cond.noise_sd, n),
        control_missing=missing,
        control_weak=weak,
        control_offset=offset,
        saturated=saturated,
        verdict=expected_verdict(spec, ratio, missing | weak | offset | saturated),
        speck_position=speck_pos,
        speck_od=speck_area,
    )
    render = Render(
        centres=centres,
        amplitude=amp,
        sigma=sigma,
        level=level,
        drift=rng.uniform(-cond.drift, cond.drift, n),
        ripple=rng.uniform(0.0, cond.ripple, n),
        period=rng.uniform(*cond.ripple_period_px, n),
        phase=rng.uniform(0.0, 2 * math.pi, n),
        noise=truth.noise_sd,
        eta=eta,
        tail=tail,
        speck_position=speck_pos,
        speck_od=speck_area,
        speck_sigma=speck_sigma,
    )
    return truth, render
