"""Colloidal gold against what the clean signal model never produces: dust specks, wide lines, tilts.

Each strip here is built the way an independent test built them (issue 10): a flat or tilted background,
Gaussian bands at the kit's positions, and a dust speck — a Gaussian of σ ≈ 1 px — multiplied in.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from firmware_sim.signal_model import GoldConditions, generate_strips
from gateway.interpret import GoldFlag, InputError, Verdict, interpret_strips
from gateway.interpret.lines import layout, running_median
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import StripSpec

KITS = sorted(DEMO_KITS)
SQRT_2PI = math.sqrt(2 * math.pi)


def band(length: int, centre: np.ndarray, area: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """OD (n, length) of Gaussian bands with integrated OD `area` (px·OD)."""
    x = np.arange(length)[None, :]
    c = np.asarray(centre, dtype=np.float64)[:, None]
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), c.shape[:1])[:, None]
    a = np.asarray(area, dtype=np.float64)[:, None]
    od: np.ndarray = a / (s * SQRT_2PI) * np.exp(-0.5 * ((x - c) / s) ** 2)
    return od


def speck_grid(spec: StripSpec, centre: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Speck centres every 0.25 px across ±(tolerance + line_width/2) of `centre` × integrated ODs
    0.3 … 3 × σ 0.6 … 1.3 px."""
    reach = spec.tolerance + spec.line_width / 2
    pos = np.arange(centre - reach, centre + reach + 0.01, 0.25)
    od = np.array([0.3, 0.6, 1.0, 1.5, 2.0, 3.0])
    sig = np.array([0.6, 1.0, 1.3])
    p, o, s = (a.ravel() for a in np.meshgrid(pos, od, sig, indexing="ij"))
    return p + rng.uniform(-0.1, 0.1, p.size), o, s


@pytest.mark.parametrize("median", [0, 5])
@pytest.mark.parametrize("kit", KITS)
def test_missing_control_with_a_speck_anywhere_in_its_window_is_always_invalid(kit: str, median: int) -> None:
    """Flat reflectance 0.8, no control line, test lines at their nominal positions, one speck of
    integrated OD up to 3 anywhere in the control window: never a verdict."""
    spec = DEMO_KITS[kit]
    rng = np.random.default_rng(10)
    p, o, s = speck_grid(spec, spec.control_position, rng)
    n = p.size
    od = band(spec.length, p, o, s)
    for ln in spec.lines:
        od += band(spec.length, np.full(n, ln.position), rng.uniform(0.2, 3.0, n), 0.15 * spec.line_width)
    profiles = np.clip(0.8 * 10.0**-od + rng.normal(0.0, 0.004, od.shape), 0.001, 1.0)
    res = interpret_strips(profiles, spec, median=median)
    valid = np.flatnonzero((res.verdict != Verdict.INVALID).any(axis=1))
    assert valid.size == 0, (
        f"{kit}: {valid.size}/{n} strips without a control line read as valid, e.g. speck at "
        f"{p[valid[0]]:.2f} px, OD {o[valid[0]]}, σ {s[valid[0]]} → {res.verdict_for(int(valid[0]))}"
    )
    strong = (o >= 1.5 * spec.min_control_signal) & (np.abs(p - spec.control_position) <= spec.tolerance)
    why = GoldFlag.CONTROL_SHAPE | GoldFlag.CONTROL_OUT_OF_PLACE | GoldFlag.SATURATED
    if median:  # the pre-filter removes most of a speck: what is left reads as a missing or weak control
        why |= GoldFlag.CONTROL_MISSING | GoldFlag.CONTROL_WEAK
    refused = (res.flags[:, 0] & why) != 0
    assert refused[strong].all(), "a strong speck is refused for its shape, place or darkness"


@pytest.mark.parametrize("kit", KITS)
def test_missing_control_with_a_speck_on_model_strips(kit: str) -> None:
    """The same on the signal model's own missing-control strips (drift, ripple, any test line)."""
    spec = DEMO_KITS[kit]
    rng = np.random.default_rng(20)
    p, o, s = speck_grid(spec, spec.control_position, rng)
    batch = generate_strips(spec, p.size, rng, fault="control_missing")
    profiles = batch.profiles * 10.0 ** -band(spec.length, p, o, s)
    res = interpret_strips(profiles, spec)
    assert (res.verdict == Verdict.INVALID).all()


def _absent_test_line_strips(
    spec: StripSpec, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Model strips whose test line k is absent (competitive: analyte far above the cutoff; sandwich:
    analyte absent), other lines drawn, plus a speck next to line k."""
    line = spec.lines[k]
    p, o, s = speck_grid(spec, line.position, rng)
    n = p.size
    conc = np.empty((n, len(spec.lines)))
    for j, ln in enumerate(spec.lines):
        assert ln.calibration is not None
        conc[:, j] = rng.uniform(0.0, 3.0 * ln.calibration.c, n)
    assert line.calibration is not None
    conc[:, k] = 1e4 * line.calibration.c if spec.format == "competitive" else 0.0
    batch = generate_strips(spec, n, rng, concentrations=conc)
    profiles = batch.profiles * 10.0 ** -band(spec.length, p, o, s)
    return profiles, p, o, batch.truth.verdict[:, k]


@pytest.mark.parametrize("kit", KITS)
def test_a_speck_next_to_an_absent_test_line_never_gives_the_unsafe_verdict(kit: str) -> None:
    """Competitive: an absent T line is positive; a speck beside it must never make it negative.
    Sandwich: an absent T line is negative; a speck must never make it positive. (Suspect is fine.)"""
    spec = DEMO_KITS[kit]
    rng = np.random.default_rng(30)
    unsafe = Verdict.NEGATIVE if spec.format == "competitive" else Verdict.POSITIVE
    expected = Verdict.POSITIVE if spec.format == "competitive" else Verdict.NEGATIVE
    for k in range(len(spec.lines)):
        profiles, p, o, truth = _absent_test_line_strips(spec, k, rng)
        assert (truth == expected).all()
        res = interpret_strips(profiles, spec)
        v = res.verdict[:, k]
        bad = np.flatnonzero(v == unsafe)
        assert bad.size == 0, (
            f"{kit}/{spec.lines[k].analyte}: {bad.size}/{v.size} absent lines read "
            f"{Verdict(unsafe).wire}, e.g. speck at {p[bad[0]]:.2f} px (line at {spec.lines[k].position}), "
            f"OD {o[bad[0]]}, ratio {res.ratio[bad[0], k]:.3f}"
        )
        # the speck turns the verdict to suspect (retest) — it is not simply ignored everywhere
        assert (v == Verdict.SUSPECT).any()
        suspect = v == Verdict.SUSPECT
        assert ((res.flags[suspect, k] & GoldFlag.TEST_SHAPE) != 0).mean() > 0.5


def test_running_median_prefilter_is_the_median_and_is_checked() -> None:
    spec = DEMO_KITS["nitrofurans-card-v1"]
    lay = layout(spec)
    g = np.random.default_rng(0).random((5, len(lay.nominal) * lay.width)).astype(np.float32)
    for width in (3, 5):
        h = g.copy()
        running_median(h, lay, width)
        k = width // 2
        reg, out = g.reshape(-1, lay.width), h.reshape(-1, lay.width)
        expected = np.median(np.lib.stride_tricks.sliding_window_view(reg, width, axis=1), axis=2)
        np.testing.assert_array_equal(out[:, k : lay.width - k], expected)
        np.testing.assert_array_equal(out[:, :k], reg[:, :k])
    profiles = generate_strips(spec, 4, np.random.default_rng(1)).profiles
    with pytest.raises(InputError, match="median must be one of"):
        interpret_strips(profiles, spec, median=7)


@pytest.mark.parametrize("kit", ["imidacloprid-v1", "nitrofurans-card-v1", "peanut-allergen-v1"])
def test_wide_bands_are_integrated_whole(kit: str) -> None:
    """Bands as wide as FWHM 0.7–0.8 × line_width with a control just above the minimum: the window
    adapts (wider than line_width/2 each side), no intact strip is read invalid, ratios stay accurate.
    gold/1.0's fixed window cut these controls below min_control_signal on 1.7 % of strips."""
    spec = DEMO_KITS[kit]
    cond = GoldConditions(sigma_frac=(0.30, 0.34), control_od=(1.3, 1.8))
    batch = generate_strips(spec, 2000, np.random.default_rng(5), conditions=cond)
    res = interpret_strips(batch.profiles, spec)
    assert not (res.verdict == Verdict.INVALID).any()
    assert (res.window > spec.line_width + 1).mean() > 0.9
    err = np.abs(res.ratio - batch.truth.ratio)
    assert np.percentile(err, 95) < 0.06
    assert np.median(err) < 0.02


@pytest.mark.parametrize("kit", ["imidacloprid-v1", "nitrofurans-card-v1"])
def test_the_control_lines_baseline_for_every_width_at_once_is_the_one_width_by_width(kit: str) -> None:
    """`lines.finish` takes the control line's baseline and core for every candidate window width in one
    set of element-wise steps (the widths as an axis): the same numbers, bit for bit, as one width at a
    time — with sub-flanks that agree and sub-flanks a speck spoiled (both branches of the baseline)."""
    from gateway.interpret import lines as lines_mod

    lay = layout(DEMO_KITS[kit])
    nh, per_h, m = len(lay.hs), lines_mod._PER_H, 257
    rng = np.random.default_rng(5)
    sigma = rng.uniform(0.001, 0.02, m)
    stats = rng.normal(0.0, 0.01, (per_h, nh, m))
    stats[rng.random((per_h, nh, m)) < 0.2] += 0.5  # specks: some sub-flanks far from the others
    stats[2, :, :40] = stats[1, :, :40]  # ties between sub-flanks
    cores = rng.normal(0.1, 0.05, (2 * lines_mod.CORE_SHIFT + 1, m))
    b0, slope = lines_mod._baseline(stats, lay.sub_pos.T[:, :, None], sigma, lay.f)
    core = lines_mod._core(cores, b0, slope)
    spoiled = 0
    for i in range(nh):
        b0_i, slope_i = lines_mod._baseline(stats[:, i], lay.sub_pos[i], sigma, lay.f)
        assert np.array_equal(b0[i], b0_i), f"width {i}"
        assert np.array_equal(slope[i], slope_i), f"width {i}"
        assert np.array_equal(core[i], lines_mod._core(cores, b0_i, slope_i)), f"width {i}"
        a, b, c = stats[1:4, i]
        spoiled += int((np.maximum(np.maximum(a, b), c) - np.minimum(np.minimum(a, b), c) > 0.1).sum())
    assert 0 < spoiled < nh * m  # both branches taken
