"""The band shape of gold/2.2 (step 6): where a Gaussian does not fit the control line, the control's
shape (split Gaussian + Lorentzian) is fitted and every line of the strip is measured with it.

`lines.SHAPE_CHI2 = inf` keeps the Gaussian template on every strip, i.e. gold/2.1's ratio on the same
strips, so the comparisons below are paired.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from firmware_sim.signal_model import GoldConditions, generate_strips
from gateway.interpret import Verdict, interpret_strips
from gateway.interpret import lines as lines_mod
from gateway.interpret.areas import Shape, fit_areas, fit_shape, fit_width
from kuaijian_schema.kits import DEMO_KITS

SHAPES = {
    "lorentzian": replace(GoldConditions(), lorentz_fraction=(0.5, 1.0)),
    "tailing": replace(GoldConditions(), tailing=(0.75, 1.5)),
}


def _errors(kit: str, condition: str, seed: int) -> np.ndarray:
    spec = DEMO_KITS[kit]
    batch = generate_strips(spec, 4000, np.random.default_rng(seed), conditions=SHAPES[condition])
    res = interpret_strips(batch.profiles, spec)
    ok = ~(res.verdict == Verdict.INVALID).any(axis=1)
    err: np.ndarray = np.abs(res.ratio - batch.truth.ratio)[ok]
    return err


@pytest.mark.parametrize(
    ("kit", "condition", "seed", "p95_gain"),
    [
        ("carbendazim-v1", "lorentzian", 31, 0.99),
        ("peanut-allergen-v1", "lorentzian", 32, 0.97),
        ("nitrofurans-card-v1", "tailing", 33, 0.93),
        ("imidacloprid-v1", "tailing", 34, 0.93),
    ],
)
def test_the_fitted_band_shape_beats_the_gaussian_template(
    kit: str, condition: str, seed: int, p95_gain: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    shaped = _errors(kit, condition, seed)
    monkeypatch.setattr(lines_mod, "SHAPE_CHI2", math.inf, raising=False)  # gold/2.1: Gaussian everywhere
    gaussian = _errors(kit, condition, seed)
    med, med_g = float(np.median(shaped)), float(np.median(gaussian))
    p95, p95_g = float(np.percentile(shaped, 95)), float(np.percentile(gaussian, 95))
    assert med < 0.9 * med_g, f"{kit} {condition}: median {med:.4f} vs Gaussian template {med_g:.4f}"
    assert p95 < p95_gain * p95_g, f"{kit} {condition}: p95 {p95:.4f} vs Gaussian template {p95_g:.4f}"


def _band(x: np.ndarray, centre: float, left: float, right: float, eta: float) -> np.ndarray:
    """The signal model's band: split Gaussian (sd `left` before the centre, `right` after it) mixed with
    a Lorentzian of the left side's FWHM, unit area."""
    u = x - centre
    sd = np.where(u < 0, left, right)
    gauss = 2.0 / (math.sqrt(2 * math.pi) * (left + right)) * np.exp(-0.5 * (u / sd) ** 2)
    hwhm = left * math.sqrt(2 * math.log(2))
    out: np.ndarray = (1 - eta) * gauss + eta * hwhm / (math.pi * (u * u + hwhm * hwhm))
    return out


@pytest.mark.parametrize(("eta", "tail"), [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.8, 1.4)])
def test_the_control_shape_gives_test_lines_their_area_ratio(eta: float, tail: float) -> None:
    """Control lines of area 4 OD·px and test lines of the same shape and area 1.6 (ratio 0.4) on a tilted
    baseline with little noise; the located centres are 0.4 px off and the starting width is the
    Gaussian fit's. Two Gauss–Newton steps on the control find its Lorentzian fraction and sides, and
    the test lines, measured with that shape and the control's centre correction, keep the ratio to
    2 % (the paired comparison with the Gaussian template on noisy strips is the test above)."""
    half, rows, sd = 36, 64, 3.6
    rng = np.random.default_rng(int(10 * eta + 100 * tail))
    x = np.arange(-half, half + 1, dtype=np.float64)
    centres = rng.uniform(-0.5, 0.5, (2, rows))
    windows, fracs = [], []
    for area, centre in zip((4.0, 1.6), centres, strict=True):
        od = area * np.stack([_band(x, c, sd, sd * (1 + tail), eta) for c in centre])
        od += 0.05 + 2e-4 * x[None, :] + rng.normal(0.0, 2e-4, od.shape)
        windows.append((-od / math.log10(2.0)).astype(np.float32))  # log2 R
        fracs.append((centre + 0.4).astype(np.float32))
    signal = np.full(rows, 4.0)
    s0 = np.full(rows, sd * (1 + tail / 2))
    rel, _ = fit_width(windows[0], fracs[0], s0, signal, half)
    s1 = np.clip(s0 * (1 + rel), 2.4, 9.6)
    shape = fit_shape(windows[0], fracs[0], s1, signal, half, 2.4, 9.6)
    assert np.abs(shape.eta - eta).max() < 0.15, shape.eta
    assert np.abs(np.minimum(shape.left, shape.right) / sd - 1).max() < 0.12, (shape.left, shape.right)
    moved = shape.d - fracs[0]
    c_area, _, _ = fit_areas(windows[0], shape, signal, half)
    test = Shape(d=fracs[1] + moved, left=shape.left, right=shape.right, eta=shape.eta)
    t_area, _, _ = fit_areas(windows[1], test, 0.4 * signal, half)
    ratio = t_area / c_area
    assert np.abs(ratio / 0.4 - 1).max() < 0.02, ratio
    if eta < 1 and tail <= 1:  # a pure Lorentzian has no split-Gaussian sides to find; a side
        # 2.4× as wide as the start is reached only after more steps (each ≤ 30 %), the ratio already holds
        wide = np.maximum(shape.left, shape.right) / (sd * (1 + tail))
        assert np.abs(wide - 1).max() < 0.15, wide
