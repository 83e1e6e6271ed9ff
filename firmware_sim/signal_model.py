"""Physical signal model of the simulated analyzers, with exact ground truth.

Does:
- Colloidal gold: reflectance profiles ``(n, L)`` and strip images ``(n, H, L[, 3])`` for a `StripSpec`.
  Each line is a Gaussian optical-density (OD) band, R(x) = B(x)·10^(−OD(x)) + noise, where the
  background B has a level, a linear drift and a low-frequency ripple. The test-line OD follows the
  kit's 4PL calibration (competitive: falls with concentration; sandwich: rises), so the true T/C ratio
  of integrated ODs is known exactly. Faults: missing / weak / out-of-place control line, saturation.
  Positions jitter per strip (cassette placement) and per line; images add smile (curved lines),
  dark housing rows, per-pixel noise and dust specks. Optional (`GoldConditions`, off by default):
  pseudo-Voigt (Lorentzian-mix) and tailing band shapes with the same area, and on profiles a dust
  speck (a narrow Gaussian of known integrated OD) near a line; wider bands and stronger tilts are
  ranges of the existing `sigma_frac` and `drift`.
- Enzyme inhibition (AChE, 412 nm): re-exported from `firmware_sim.kinetics_model`, so simulators and
  tests import every model from here.

Ground-truth verdict codes are the integers of `gateway.interpret.Verdict`
(NEGATIVE=0, POSITIVE=1, SUSPECT=2, INVALID=3); this module does not import `gateway`.

Typical use by an instrument simulator::

    rng = np.random.default_rng(7)
    sample = one_gold_profile(DEMO_KITS["imidacloprid-v1"], rng, concentration=0.8)
    sample.profile            # (1024,) float64 reflectance in (0, 1]
    sample.verdict            # (1,) expected verdict per test line
    run = one_enzyme_run(GB_T_5009_199, 8, rng, inhibition=[0, 10, 55, 80, 0, 0, 30, 45])
    run.times_s, run.absorbance, run.control_channel

Does not: interpret anything (that is `gateway.interpret`), speak any protocol, or sleep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from firmware_sim.kinetics_model import (
    EnzymeConditions,
    EnzymeRun,
    KineticsBatch,
    generate_kinetics,
    one_enzyme_run,
)
from firmware_sim.truth import INVALID, NEGATIVE, POSITIVE, SUSPECT
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import Calibration4PL, StripSpec

__all__ = [
    "DEMO_KITS",
    "INVALID",
    "NEGATIVE",
    "POSITIVE",
    "SUSPECT",
    "EnzymeConditions",
    "EnzymeRun",
    "GoldBatch",
    "GoldConditions",
    "GoldImageBatch",
    "GoldSample",
    "GoldTruth",
    "KineticsBatch",
    "four_pl",
    "generate_kinetics",
    "generate_strip_images",
    "generate_strips",
    "one_enzyme_run",
    "one_gold_profile",
]

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]

GoldFault = Literal["control_missing", "control_weak", "control_offset", "saturated"]
_GOLD_FAULTS: Final[tuple[GoldFault, ...]] = (
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


# --------------------------------------------------------------------------------------------------
# Colloidal gold
# --------------------------------------------------------------------------------------------------


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
class GoldSample:
    """One strip: profile (L,) plus its truth row."""

    profile: F64
    concentration: tuple[float, ...]
    control_od: float
    test_od: tuple[float, ...]
    ratio: tuple[float, ...]
    verdict: tuple[int, ...]
    fault: GoldFault | None


@dataclass(frozen=True, slots=True)
class GoldBatch:
    """n reflectance profiles (n, L) float64 in (0, 1] and their truth."""

    profiles: F64
    truth: GoldTruth

    def sample(self, i: int) -> GoldSample:
        t = self.truth
        fault: GoldFault | None = None
        for name in _GOLD_FAULTS:
            if bool(getattr(t, name)[i]):
                fault = name
        return GoldSample(
            profile=self.profiles[i],
            concentration=tuple(float(v) for v in t.concentration[i]),
            control_od=float(t.control_od[i]),
            test_od=tuple(float(v) for v in t.test_od[i]),
            ratio=tuple(float(v) for v in t.ratio[i]),
            verdict=tuple(int(v) for v in t.verdict[i]),
            fault=fault,
        )


@dataclass(frozen=True, slots=True)
class GoldImageBatch:
    """n strip images (n, H, L) or (n, H, L, 3): float64 reflectance or uint8, and their truth."""

    images: npt.NDArray[np.float64] | npt.NDArray[np.uint8]
    truth: GoldTruth
    smile_px: F64  # (n,) line displacement at the strip edges relative to the centre row


@dataclass(frozen=True, slots=True)
class _Render:
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


def _expected_verdict(spec: StripSpec, ratio: F64, invalid: B) -> I8:
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


def _draw_concentrations(spec: StripSpec, n: int, rng: np.random.Generator, cond: GoldConditions) -> F64:
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


def _draw_gold(
    spec: StripSpec,
    n: int,
    rng: np.random.Generator,
    concentrations: npt.ArrayLike | None,
    cond: GoldConditions,
    fault: GoldFault | None,
) -> tuple[GoldTruth, _Render]:
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    k = len(spec.lines)
    if concentrations is None:
        conc = _draw_concentrations(spec, n, rng, cond)
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
        kinds[:] = _GOLD_FAULTS.index(fault)
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
        verdict=_expected_verdict(spec, ratio, missing | weak | offset | saturated),
        speck_position=speck_pos,
        speck_od=speck_area,
    )
    render = _Render(
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


def _background(r: _Render, rows: slice, x: F64) -> F64:
    length = x.shape[-1]
    lvl = r.level[rows, None]
    drift = 1.0 + r.drift[rows, None] * (x / length - 0.5)
    rip = 1.0 + r.ripple[rows, None] * np.sin(2 * math.pi * x / r.period[rows, None] + r.phase[rows, None])
    out: F64 = lvl * drift * rip
    return out


def _unit_band(d: F64, sig: F64, eta: F64, tail: F64) -> F64:
    """Unit-area band at displacement d (px): (1 − η)·split Gaussian (sd σ before the centre,
    σ·(1 + t) after it) + η·Lorentzian of the same FWHM as the Gaussian."""
    far = sig * (1.0 + tail)
    side = np.where(d > 0, far, sig)
    g = 2.0 / (_SQRT_2PI * (sig + far)) * np.exp(-0.5 * (d / side) ** 2)
    gamma = sig * math.sqrt(2.0 * math.log(2.0))
    out: F64 = (1.0 - eta) * g + eta * gamma / (math.pi * (d * d + gamma * gamma))
    return out


def _od(r: _Render, rows: slice, x: F64, smile: F64 | None = None) -> F64:
    """OD of rows `rows`; `smile` (m, H) adds a per-image-row displacement → (m, H, L).

    Each band is evaluated only over the columns within 7 sd of where it can be in these rows (the whole
    profile when some band has Lorentzian tails).
    """
    sig = r.sigma[rows]
    eta = r.eta[rows]
    tail = r.tail[rows]
    m = sig.shape[0]
    length = x.shape[0]
    reach = float(length) if eta.max() > 0 else 7.0 * float((sig * (1.0 + tail)).max())
    bend = 0.0 if smile is None else float(np.abs(smile).max())
    od = np.zeros((m, length) if smile is None else (m, smile.shape[1], length))
    area = r.amplitude[rows] * (sig[:, None] * _SQRT_2PI)  # (m, J)
    for j in range(r.centres.shape[1]):
        cj = r.centres[rows, j]
        lo = max(0, math.floor(cj.min() - bend - reach))
        hi = min(length, math.ceil(cj.max() + bend + reach) + 1)
        if lo >= hi:
            continue
        xs = x[lo:hi]
        if smile is None:
            d = xs[None, :] - cj[:, None]
            od[:, lo:hi] += area[:, j, None] * _unit_band(d, sig[:, None], eta[:, None], tail[:, None])
        else:
            d = xs[None, None, :] - (cj[:, None, None] + smile[:, :, None])
            od[:, :, lo:hi] += area[:, j, None, None] * _unit_band(
                d, sig[:, None, None], eta[:, None, None], tail[:, None, None]
            )
    return od


def _specks(r: _Render, rows: slice, x: F64) -> F64:
    """OD (m, L) of the dust specks of rows `rows` (zero without one)."""
    pos = r.speck_position[rows, None]
    has = ~np.isnan(pos)
    sd = r.speck_sigma[rows, None]
    z = (x[None, :] - np.where(has, pos, 0.0)) / sd
    out: F64 = np.where(has, r.speck_od[rows, None] / (sd * _SQRT_2PI) * np.exp(-0.5 * z * z), 0.0)
    return out


def generate_strips(
    spec: StripSpec,
    n: int,
    rng: np.random.Generator,
    *,
    concentrations: npt.ArrayLike | None = None,
    conditions: GoldConditions | None = None,
    fault: GoldFault | None = None,
) -> GoldBatch:
    """Generate n reflectance profiles (n, spec.length) for `spec` with exact truth.

    `concentrations` (n, K) mg/kg fixes the analyte levels (drawn log-uniformly around each line's 4PL
    inflection otherwise). `fault` forces one fault on every strip; otherwise faults occur with the
    probabilities in `conditions`.
    """
    cond = conditions or GoldConditions()
    truth, r = _draw_gold(spec, n, rng, concentrations, cond, fault)
    x = np.arange(spec.length, dtype=np.float64)
    out = np.empty((n, spec.length))
    step = 2048
    for s in range(0, n, step):
        rows = slice(s, min(n, s + step))
        od = _od(r, rows, x)
        if not np.isnan(r.speck_position[rows]).all():
            od += _specks(r, rows, x)
        refl = _background(r, rows, x) * 10.0 ** (-od)
        refl += rng.standard_normal(refl.shape) * r.noise[rows, None]
        out[rows] = np.clip(refl, cond.floor, 1.0)
    return GoldBatch(profiles=out, truth=truth)


def generate_strip_images(
    spec: StripSpec,
    n: int,
    rng: np.random.Generator,
    *,
    height: int = 40,
    smile_px: tuple[float, float] = (0.0, 3.0),
    rgb: bool = False,
    as_uint8: bool = False,
    concentrations: npt.ArrayLike | None = None,
    conditions: GoldConditions | None = None,
    fault: GoldFault | None = None,
) -> GoldImageBatch:
    """Generate n strip images (n, height, spec.length[, 3]) with the same truth as `generate_strips`.

    Lines are curved ("smile"): a line's centre moves by s·((y − yc)/(H/2))² px across the strip, with s
    drawn from `smile_px` (either sign). The outer 12 % of rows on each side are the dark cassette
    housing; a few dust specks darken random pixels. RGB images absorb mostly in green (gold ~525 nm).
    """
    if height < 8:
        raise ValueError(f"height must be ≥ 8 rows, got {height}")
    cond = conditions or GoldConditions()
    truth, r = _draw_gold(spec, n, rng, concentrations, cond, fault)
    x = np.arange(spec.length, dtype=np.float64)
    yy = (np.arange(height) - (height - 1) / 2) / (height / 2)
    smile = rng.uniform(*smile_px, n) * rng.choice([-1.0, 1.0], n)
    housing = max(1, round(0.12 * height))
    shape = (n, height, spec.length, 3) if rgb else (n, height, spec.length)
    out = np.empty(shape, dtype=np.uint8 if as_uint8 else np.float64)
    channel_od = np.array([0.3, 1.0, 0.55])
    channel_tint = np.array([1.0, 0.98, 0.93])
    step = 64
    for s in range(0, n, step):
        rows = slice(s, min(n, s + step))
        m = rows.stop - rows.start
        od = _od(r, rows, x, smile[rows, None] * yy[None, :] ** 2)  # (m, H, L)
        bg = _background(r, rows, x)[:, None, :]  # (m, 1, L)
        noise = r.noise[rows, None, None] * 1.5
        if rgb:
            refl = bg[..., None] * channel_tint * 10.0 ** (-od[..., None] * channel_od)
            refl += rng.standard_normal(refl.shape) * noise[..., None]
        else:
            refl = bg * 10.0 ** (-od)
            refl += rng.standard_normal(refl.shape) * noise
        refl[:, :housing] = 0.25
        refl[:, height - housing :] = 0.25
        specks = rng.integers(0, 4, m)
        for i in np.flatnonzero(specks):
            ys = rng.integers(housing, height - housing, specks[i])
            xs = rng.integers(0, spec.length, specks[i])
            refl[i, ys, xs] *= 0.3
        refl = np.clip(refl, cond.floor, 1.0)
        out[rows] = np.rint(refl * 255.0).astype(np.uint8) if as_uint8 else refl
    return GoldImageBatch(images=out, truth=truth, smile_px=smile)


def one_gold_profile(
    spec: StripSpec,
    rng: np.random.Generator,
    *,
    concentration: float | Sequence[float] | None = None,
    fault: GoldFault | None = None,
    conditions: GoldConditions | None = None,
) -> GoldSample:
    """One strip for a single instrument: `concentration` in mg/kg (one value per test line, or one value
    for every line; drawn when None). Returns the profile (L,) and its truth."""
    conc: F64 | None = None
    if concentration is not None:
        c = np.atleast_1d(np.asarray(concentration, dtype=np.float64))
        conc = np.broadcast_to(c, (len(spec.lines),)).reshape(1, -1) if c.size == 1 else c.reshape(1, -1)
    return generate_strips(spec, 1, rng, concentrations=conc, conditions=conditions, fault=fault).sample(0)
