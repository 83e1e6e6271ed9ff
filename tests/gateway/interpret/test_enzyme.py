"""Enzyme-inhibition interpretation against the kinetics model's exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.signal_model import EnzymeConditions, generate_kinetics, one_enzyme_run
from gateway.interpret import (
    ENZYME_ALGORITHM,
    EnzymeFlag,
    InputError,
    SpecMismatchError,
    Verdict,
    interpret_kinetics,
)
from gateway.interpret.reference import naive_interpret_kinetics
from kuaijian_schema.specs import GB_T_5009_199, NY_T_448, EnzymeSpec

FAULTY = EnzymeConditions(p_weak_control=0.08, p_falling=0.05, p_noisy=0.05)


@pytest.mark.parametrize("spec", [GB_T_5009_199, NY_T_448], ids=["gb5009", "ny448"])
def test_accuracy_and_verdicts(spec: EnzymeSpec) -> None:
    batch = generate_kinetics(spec, 2000, 8, np.random.default_rng(4), conditions=FAULTY)
    res = interpret_kinetics(batch.times_s, batch.absorbance, batch.control, spec)
    valid = batch.verdict != Verdict.INVALID
    quiet = valid & ~batch.noisy
    assert np.abs(res.delta_a - batch.delta_a)[~batch.noisy].max() < 0.02
    err = np.abs(res.inhibition - batch.inhibition)[quiet]
    assert err.max() < 2.5, f"worst inhibition error {err.max():.2f} %"
    assert err.mean() < 0.3
    # verdicts agree away from the thresholds (2.5 % points), and every fault is invalid
    inh = batch.inhibition
    far = valid & (np.abs(inh - spec.positive_pct) > 2.5) & (np.abs(inh - spec.suspect_low_pct) > 2.5)
    np.testing.assert_array_equal(res.verdict[far], batch.verdict[far])
    assert set(np.unique(res.verdict[far])) == {Verdict.NEGATIVE, Verdict.POSITIVE, Verdict.SUSPECT}
    assert (res.verdict[batch.weak_control] == Verdict.INVALID).all()
    assert (res.verdict[batch.falling] == Verdict.INVALID).all()
    assert (res.flags[batch.weak_control] & EnzymeFlag.CONTROL_WEAK).all()
    assert (res.flags[batch.falling] & EnzymeFlag.FALLING).all()
    assert (res.verdict[valid] != Verdict.INVALID).all()
    runs = np.arange(len(res))
    assert (res.flags[runs, res.control] & EnzymeFlag.CONTROL_CHANNEL).all()
    finite = np.isfinite(res.inhibition)
    assert (res.inhibition[finite] >= 0).all()
    assert (res.inhibition[finite] <= 100).all()


def test_ny448_is_stricter_than_gb5009() -> None:
    run = one_enzyme_run(GB_T_5009_199, 4, np.random.default_rng(2), inhibition=[0, 55, 65, 75])
    a = run.absorbance[None]
    gb = interpret_kinetics(run.times_s, a, run.control_channel, GB_T_5009_199)
    ny = interpret_kinetics(run.times_s, a, run.control_channel, NY_T_448)
    assert [gb.verdict_for(0, c) for c in (1, 2, 3)] == ["positive", "positive", "positive"]
    assert [ny.verdict_for(0, c) for c in (1, 2, 3)] == ["negative", "suspect", "positive"]


def test_falling_control_invalidates_run_and_negative_inhibition_is_clamped() -> None:
    rng = np.random.default_rng(3)
    run = one_enzyme_run(GB_T_5009_199, 3, rng, inhibition=[0, 0, 30])
    a = run.absorbance.copy()
    a[1] = a[0] + (run.times_s - run.times_s[0]) * 0.0005  # sample faster than control
    res = interpret_kinetics(run.times_s, a[None], 0, GB_T_5009_199)
    assert res.inhibition[0, 1] == 0.0
    assert res.verdict_for(0, 1) == "negative"
    a[0] = 1.0 - run.times_s * 0.001  # the control itself falls
    res = interpret_kinetics(run.times_s, a[None], 0, GB_T_5009_199)
    assert (res.verdict[0] == Verdict.INVALID).all()
    assert "control_falling" in res.flags_for(0, 2)


def test_agrees_with_per_channel_polyfit() -> None:
    batch = generate_kinetics(GB_T_5009_199, 200, 6, np.random.default_rng(6), conditions=FAULTY)
    res = interpret_kinetics(batch.times_s, batch.absorbance, batch.control, GB_T_5009_199)
    delta, inh, verdict = naive_interpret_kinetics(
        batch.times_s, batch.absorbance, batch.control, GB_T_5009_199
    )
    np.testing.assert_allclose(res.delta_a, delta, atol=1e-9)
    np.testing.assert_array_equal(res.verdict, verdict)
    ok = np.isfinite(res.inhibition)
    np.testing.assert_allclose(res.inhibition[ok], inh[ok], atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(
    slope=st.floats(min_value=-0.01, max_value=0.01),
    offset=st.floats(min_value=0.0, max_value=2.0),
    start=st.floats(min_value=0.0, max_value=60.0),
)
def test_slope_is_exact_on_straight_lines(slope: float, offset: float, start: float) -> None:
    spec = GB_T_5009_199.model_copy(update={"window_start_s": start})
    t = np.arange(0.0, 200.0, 2.5)
    a = np.stack([offset + 0.004 * t, offset + slope * t])[None]
    res = interpret_kinetics(t, a, 0, spec)
    span = spec.window_end_s - start
    assert res.delta_a[0, 1] == pytest.approx(slope * span, abs=1e-9)
    assert res.delta_a_control[0] == pytest.approx(0.004 * span)


def test_wire_helpers() -> None:
    run = one_enzyme_run(NY_T_448, 4, np.random.default_rng(1), inhibition=[0, 10, 80, 0], control_channel=3)
    res = interpret_kinetics(run.times_s, run.absorbance[None], np.array([3]), NY_T_448)
    assert res.algorithm == ENZYME_ALGORITHM == "enzyme/1.1"
    assert res.spec_name == "NY/T 448"
    v = res.values_for(0, 2)
    assert set(v) == {"inhibition_pct", "delta_a_sample", "delta_a_control"}
    assert v["inhibition_pct"] == pytest.approx(80, abs=2)
    assert res.verdict_for(0, 2) == "positive"
    assert res.is_control(0, 3)
    assert res.flags_for(0, 3) == ("control_channel",)
    assert res.flags_for(0, 1) == ()


T = np.arange(0.0, 190.0, 3.0)
A = np.zeros((2, 4, T.size)) + 0.1 + 0.003 * T


@pytest.mark.parametrize(
    ("times", "absorbance", "control", "error", "message"),
    [
        (T.tolist(), A, 0, InputError, "times_s must be a numpy array"),
        (T, A[0], 0, InputError, "absorbance[None]"),
        (T, A[:, :, :0], 0, InputError, "empty"),
        (T, A.astype(np.complex64), 0, InputError, "dtype complex64"),
        (T[:-1], A, 0, InputError, "64 time points but times_s has 63"),
        (T[::-1].copy(), A, 0, InputError, "strictly increasing"),
        (T, A, np.array([0, 4]), InputError, "must be in [0, 4)"),
        (T, A, np.array([0, 1, 2]), InputError, "3 entries for 2 runs"),
        (T, A, 0.5, InputError, "integer channel"),
        (T, A[:, :1], 0, InputError, "need ≥ 2"),
        (T + 500, A, 0, SpecMismatchError, "holds 0 samples"),
    ],
)
def test_bad_input(
    times: object, absorbance: object, control: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        interpret_kinetics(times, absorbance, control, GB_T_5009_199)  # type: ignore[arg-type]
    assert message in str(info.value)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["before_window", "in_window", "after_window"])
def test_non_finite_sample_invalidates_only_its_channel(dtype: type, bad: float, where: str) -> None:
    """Finiteness is checked through the slopes (no extra pass): NaN/inf outside the detection window,
    where the least-squares weight is 0, must be caught too (NaN·0 = NaN, inf·0 = NaN). Only that
    channel becomes invalid; every other cell is exactly what it is without the bad value."""
    spec = EnzymeSpec(name="window", window_start_s=30.0, window_end_s=120.0)
    t = np.arange(0.0, 181.0, 3.0)
    a = np.random.default_rng(1).uniform(0.2, 1.0, (6, 4, t.size)).astype(dtype)
    a += (0.004 * t).astype(dtype)  # rising: valid controls
    clean = interpret_kinetics(t, a, 0, spec)
    pos = {"before_window": 2, "in_window": 20, "after_window": t.size - 1}[where]
    a[4, 2, pos] = bad
    res = interpret_kinetics(t, a, 0, spec)
    assert res.verdict_for(4, 2) == "invalid"
    assert res.flags_for(4, 2) == ("not_finite",)
    assert res.values_for(4, 2)["inhibition_pct"] is None
    assert res.values_for(4, 2)["delta_a_sample"] is None
    others = np.ones(res.verdict.shape, dtype=bool)
    others[4, 2] = False
    np.testing.assert_array_equal(res.verdict[others], clean.verdict[others])
    np.testing.assert_array_equal(res.flags[others], clean.flags[others])
    np.testing.assert_array_equal(res.inhibition[others], clean.inhibition[others])


def test_one_nan_run_leaves_the_rest_of_the_batch_unchanged() -> None:
    """A NaN in one run's control channel invalidates that run only (flag control_not_finite); the
    other 999 runs keep exactly the results they have without it."""
    spec = GB_T_5009_199
    batch = generate_kinetics(spec, 1000, 8, np.random.default_rng(12))
    clean = interpret_kinetics(batch.times_s, batch.absorbance, batch.control, spec)
    a = batch.absorbance.copy()
    r = 417
    a[r, batch.control[r], 30] = np.nan
    res = interpret_kinetics(batch.times_s, a, batch.control, spec)
    assert (res.verdict[r] == Verdict.INVALID).all()
    assert all("control_not_finite" in res.flags_for(r, c) for c in range(8))
    assert np.isnan(res.inhibition[r]).all()
    rest = np.arange(1000) != r
    np.testing.assert_array_equal(res.verdict[rest], clean.verdict[rest])
    np.testing.assert_array_equal(res.flags[rest], clean.flags[rest])
    np.testing.assert_array_equal(res.inhibition[rest], clean.inhibition[rest])
    np.testing.assert_array_equal(res.delta_a[rest], clean.delta_a[rest])
    assert (res.verdict[rest] != Verdict.INVALID).sum() > 7000
