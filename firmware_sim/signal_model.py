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

Layers: `gold_truth` says what a strip is and draws its parameters with their exact truth;
`gold_render` computes background and optical density from them; this module adds the pixel noise,
clips, builds images and is the public entry point.

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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firmware_sim.gold_render import background, band_od, speck_od
from firmware_sim.gold_truth import (
    GOLD_FAULTS,
    GoldConditions,
    GoldFault,
    GoldTruth,
    draw_gold,
    four_pl,
)
from firmware_sim.kinetics_model import (
    EnzymeConditions,
    EnzymeRun,
    KineticsBatch,
    generate_kinetics,
    one_enzyme_run,
)
from firmware_sim.truth import INVALID, NEGATIVE, POSITIVE, SUSPECT
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import StripSpec

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
        for name in GOLD_FAULTS:
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
    truth, r = draw_gold(spec, n, rng, concentrations, cond, fault)
    x = np.arange(spec.length, dtype=np.float64)
    out = np.empty((n, spec.length))
    step = 2048
    for s in range(0, n, step):
        rows = slice(s, min(n, s + step))
        od = band_od(r, rows, x)
        if not np.isnan(r.speck_position[rows]).all():
            od += speck_od(r, rows, x)
        refl = background(r, rows, x) * 10.0 ** (-od)
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
    truth, r = draw_gold(spec, n, rng, concentrations, cond, fault)
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
        od = band_od(r, rows, x, smile[rows, None] * yy[None, :] ** 2)  # (m, H, L)
        bg = background(r, rows, x)[:, None, :]  # (m, 1, L)
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
