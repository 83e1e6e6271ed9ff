"""The physical signal model: shapes, ranges, determinism and the consistency of its ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.signal_model import (
    DEMO_KITS,
    INVALID,
    NEGATIVE,
    POSITIVE,
    EnzymeConditions,
    GoldConditions,
    four_pl,
    generate_kinetics,
    generate_strip_images,
    generate_strips,
    one_enzyme_run,
    one_gold_profile,
)
from kuaijian_schema.specs import GB_T_5009_199, NY_T_448


@pytest.mark.parametrize("kit", sorted(DEMO_KITS))
def test_profiles_and_truth_are_consistent(kit: str) -> None:
    spec = DEMO_KITS[kit]
    cond = GoldConditions(p_control_missing=0.1, p_control_weak=0.1, p_control_offset=0.1, p_saturated=0.1)
    b = generate_strips(spec, 500, np.random.default_rng(1), conditions=cond)
    k = len(spec.lines)
    assert b.profiles.shape == (500, spec.length)
    assert b.profiles.dtype == np.float64
    assert (b.profiles > 0).all()
    assert (b.profiles <= 1).all()
    t = b.truth
    assert t.ratio.shape == t.test_od.shape == t.verdict.shape == t.concentration.shape == (500, k)
    intact = ~(t.control_missing | t.control_weak | t.saturated)
    np.testing.assert_allclose(t.test_od[intact] / t.control_od[intact, None], t.ratio[intact], rtol=1e-9)
    assert (t.control_od[t.control_missing] == 0).all()
    assert (t.control_od[t.control_weak] < spec.min_control_signal).all()
    assert (t.control_od[~t.invalid] >= 2 * spec.min_control_signal).all()
    assert (t.verdict[t.invalid] == INVALID).all()
    assert (t.verdict[~t.invalid] != INVALID).all()
    # faults are exclusive and all present
    kinds = np.stack([t.control_missing, t.control_weak, t.control_offset, t.saturated]).astype(int)
    assert kinds.sum(axis=0).max() == 1
    assert (kinds.sum(axis=1) > 20).all()
    # saturated strips really go below the threshold; intact ones stay clear of it
    assert (b.profiles[t.saturated].min(axis=1) < spec.saturation_reflectance).all()
    assert (b.profiles[~t.invalid].min(axis=1) > spec.saturation_reflectance).all()
    # in-place lines stay within the search tolerance, out-of-place controls well outside
    tol = spec.tolerance
    assert (np.abs(t.control_position[~t.control_offset] - spec.control_position) <= 0.6 * tol + 1e-9).all()
    assert (
        np.abs(t.control_position[t.control_offset] - spec.control_position) > tol + spec.line_width
    ).all()
    nominal = np.array([ln.position for ln in spec.lines])
    assert (np.abs(t.test_position - nominal) <= 0.6 * tol + 1e-9).all()
    for j, ln in enumerate(spec.lines):
        assert ln.calibration is not None
        np.testing.assert_allclose(t.ratio[:, j], four_pl(ln.calibration, t.concentration[:, j]))


def test_competitive_and_sandwich_respond_in_opposite_directions() -> None:
    for kit, sign in (("carbofuran-v1", -1), ("peanut-allergen-v1", 1)):
        spec = DEMO_KITS[kit]
        cal = spec.lines[0].calibration
        assert cal is not None
        conc = np.geomspace(cal.c / 100, cal.c * 100, 50)
        r = four_pl(cal, conc)
        assert (np.sign(np.diff(r)) == sign).all()
        b = generate_strips(spec, 50, np.random.default_rng(0), concentrations=conc[:, None])
        v = b.truth.verdict[:, 0]
        assert v[0] == NEGATIVE
        assert v[-1] == POSITIVE


def test_seeded_generation_is_deterministic() -> None:
    spec = DEMO_KITS["nitrofurans-card-v1"]
    a = generate_strips(spec, 20, np.random.default_rng(42))
    b = generate_strips(spec, 20, np.random.default_rng(42))
    np.testing.assert_array_equal(a.profiles, b.profiles)
    np.testing.assert_array_equal(a.truth.ratio, b.truth.ratio)


def test_bad_generator_arguments() -> None:
    spec = DEMO_KITS["imidacloprid-v1"]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):
        generate_strips(spec, 3, rng, concentrations=[1.0, 2.0])
    with pytest.raises(ValueError, match="≥ 0"):
        generate_strips(spec, 1, rng, concentrations=[[-1.0]])
    with pytest.raises(ValueError, match="sum to more than 1"):
        generate_strips(spec, 1, rng, conditions=GoldConditions(p_control_weak=0.6, p_saturated=0.6))
    with pytest.raises(ValueError, match="channels ≥ 2"):
        generate_kinetics(GB_T_5009_199, 1, 1, rng)


def test_images_shape_and_truth() -> None:
    spec = DEMO_KITS["carbendazim-v1"]
    b = generate_strip_images(spec, 6, np.random.default_rng(3), height=32, rgb=True, as_uint8=True)
    assert b.images.shape == (6, 32, spec.length, 3)
    assert b.images.dtype == np.uint8
    assert b.truth.ratio.shape == (6, 1)
    assert (np.abs(b.smile_px) <= 3.0).all()
    # the green channel shows the lines most: darkest column sits near a line
    g = b.images[0, 16, :, 1].astype(float)
    darkest = int(np.argmin(g))
    assert min(abs(darkest - spec.control_position), abs(darkest - spec.lines[0].position)) < 25


def test_one_gold_profile_for_simulators() -> None:
    spec = DEMO_KITS["nitrofurans-card-v1"]
    s = one_gold_profile(spec, np.random.default_rng(5), concentration=0.0)
    assert s.profile.shape == (1024,)
    assert s.concentration == (0.0, 0.0, 0.0)
    assert s.verdict == (NEGATIVE,) * 3
    assert s.fault is None
    f = one_gold_profile(spec, np.random.default_rng(5), fault="control_offset")
    assert f.fault == "control_offset"
    assert f.verdict == (INVALID,) * 3


@settings(max_examples=20, deadline=None)
@given(
    inhibition=st.lists(st.floats(min_value=0, max_value=100), min_size=7, max_size=7),
    control=st.integers(0, 7),
)
def test_kinetics_truth(inhibition: list[float], control: int) -> None:
    run = one_enzyme_run(
        GB_T_5009_199, 8, np.random.default_rng(0), inhibition=[0.0, *inhibition][:8], control_channel=control
    )
    assert run.absorbance.shape == (8, run.times_s.size)
    assert run.times_s[-1] >= GB_T_5009_199.window_end_s
    dc = run.delta_a[control]
    assert dc >= 1.5 * GB_T_5009_199.min_control_delta
    expected = dc * (1 - run.inhibition / 100)
    np.testing.assert_allclose(run.delta_a, expected)
    assert run.inhibition[control] == 0
    assert run.verdict[control] == NEGATIVE


def test_kinetics_faults() -> None:
    cond = EnzymeConditions(p_weak_control=0.2, p_falling=0.1, p_noisy=0.1)
    b = generate_kinetics(NY_T_448, 300, 6, np.random.default_rng(2), conditions=cond)
    assert b.absorbance.shape == (300, 6, b.times_s.size)
    assert (b.delta_a[np.arange(300), b.control][b.weak_control] < NY_T_448.min_control_delta).all()
    assert (b.delta_a[b.falling] < -NY_T_448.fall_tolerance).all()
    assert (b.verdict[b.weak_control] == INVALID).all()
    assert (b.verdict[b.falling] == INVALID).all()
    assert not b.falling[np.arange(300), b.control].any()
    assert (b.noise_sd[b.noisy] > b.noise_sd[~b.noisy].max()).mean() > 0.5
    forced = generate_kinetics(NY_T_448, 5, 4, np.random.default_rng(2), fault="falling")
    assert forced.falling.sum(axis=1).min() == 1
