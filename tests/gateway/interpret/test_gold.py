"""Colloidal-gold interpretation against the signal model's exact ground truth."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.signal_model import GoldBatch, GoldConditions, generate_strips, one_gold_profile
from gateway.interpret import (
    GOLD_ALGORITHM,
    GoldFlag,
    InputError,
    InterpretError,
    SpecMismatchError,
    StripResults,
    Verdict,
    gold,
    interpret_strips,
)
from gateway.interpret.codes import flag_names
from gateway.interpret.gold import WIRE_NAMES
from gateway.interpret.reference import naive_interpret_strips
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import StripSpec

KITS = sorted(DEMO_KITS)
FAULTY = GoldConditions(p_control_missing=0.05, p_control_weak=0.05, p_control_offset=0.05, p_saturated=0.05)
MARGIN = 0.08  # ratio distance from every decision boundary beyond which verdicts must agree


def _away_from_boundaries(spec: StripSpec, ratio: np.ndarray) -> np.ndarray:
    cut = np.array([ln.cutoff for ln in spec.lines])
    band = np.array([ln.suspect_band for ln in spec.lines])
    other = cut + band if spec.format == "competitive" else cut - band
    far: np.ndarray = (np.abs(ratio - cut) > MARGIN) & (np.abs(ratio - other) > MARGIN)
    return far


@pytest.fixture(scope="module", params=KITS)
def kit_run(request: pytest.FixtureRequest) -> tuple[StripSpec, GoldBatch, StripResults]:
    spec = DEMO_KITS[request.param]
    batch = generate_strips(
        spec, 3000, np.random.default_rng(zlib.crc32(request.param.encode())), conditions=FAULTY
    )
    return spec, batch, interpret_strips(batch.profiles, spec)


def test_ratio_accuracy_across_generator_range(kit_run: tuple[StripSpec, GoldBatch, StripResults]) -> None:
    spec, batch, res = kit_run
    truth = batch.truth
    ok = ~truth.invalid
    assert ok.sum() > 2000
    err = res.ratio[ok] - truth.ratio[ok]
    assert np.isfinite(err).all()
    assert truth.ratio[ok].min() < 0.1, "generator range not covered"
    assert truth.ratio[ok].max() > 0.9, "generator range not covered"
    assert np.abs(err).max() < 0.08, f"{spec.name}: worst ratio error {np.abs(err).max():.3f}"
    assert np.abs(err).mean() < 0.008
    assert abs(err.mean()) < 0.004, f"{spec.name}: ratio bias {err.mean():.4f}"
    rel = res.control_signal[ok] / truth.control_od[ok] - 1
    assert np.abs(rel).max() < 0.08
    assert np.abs(res.control_position[ok] - truth.control_position[ok]).max() < 1.0
    present = truth.ratio[ok] > 0.3
    assert np.abs(res.test_position[ok][present] - truth.test_position[ok][present]).max() < 1.0


def test_verdicts_agree_away_from_cutoff(kit_run: tuple[StripSpec, GoldBatch, StripResults]) -> None:
    spec, batch, res = kit_run
    truth = batch.truth
    far = _away_from_boundaries(spec, truth.ratio) & ~truth.invalid[:, None]
    assert far.sum() > 1500
    disagree = np.argwhere(far & (res.verdict != truth.verdict))
    assert disagree.size == 0, f"{spec.name}: {len(disagree)} verdicts differ, first {disagree[:3].tolist()}"
    # every verdict kind occurs, so the comparison is not vacuous
    assert set(np.unique(res.verdict[far])) >= {Verdict.NEGATIVE, Verdict.POSITIVE}


def test_invalid_strips_are_invalid_never_negative(
    kit_run: tuple[StripSpec, GoldBatch, StripResults],
) -> None:
    spec, batch, res = kit_run
    truth = batch.truth
    for fault in ("control_missing", "control_weak", "control_offset", "saturated"):
        rows = getattr(truth, fault)
        assert rows.sum() > 50, fault
        assert (res.verdict[rows] == Verdict.INVALID).all(), f"{spec.name}: {fault} strips not invalid"
    assert (res.flags[truth.control_missing] & GoldFlag.CONTROL_MISSING).all()
    assert (res.flags[truth.saturated] & GoldFlag.SATURATED).all()
    assert np.isnan(res.ratio[truth.control_missing]).all()
    assert np.isnan(res.concentration[truth.invalid]).all()
    # and intact strips are never declared invalid
    assert (res.verdict[~truth.invalid] != Verdict.INVALID).all()


@pytest.mark.parametrize("kit", KITS)
def test_control_missing_is_never_negative_whatever_the_test_line(kit: str) -> None:
    spec = DEMO_KITS[kit]
    rng = np.random.default_rng(11)
    k = len(spec.lines)
    conc = np.zeros((400, k))  # competitive: blank sample, the T line is strongest
    conc[200:] = 1e6  # saturating analyte: T line absent (competitive) / strongest (sandwich)
    batch = generate_strips(spec, 400, rng, concentrations=conc, fault="control_missing")
    res = interpret_strips(batch.profiles, spec)
    assert (res.verdict == Verdict.INVALID).all()
    assert not (res.verdict == Verdict.NEGATIVE).any()


def test_concentration_by_4pl_inverse(kit_run: tuple[StripSpec, GoldBatch, StripResults]) -> None:
    spec, batch, res = kit_run
    truth = batch.truth
    for k, line in enumerate(spec.lines):
        cal = line.calibration
        assert cal is not None
        frac = (truth.ratio[:, k] - cal.d) / (cal.a - cal.d)
        mid = ~truth.invalid & (frac > 0.15) & (frac < 0.85)
        assert mid.sum() > 300
        log_err = np.log(res.concentration[mid, k] / truth.concentration[mid, k])
        assert np.abs(log_err).max() < 0.45, (
            f"{spec.name}/{line.analyte}: conc error ×{np.exp(np.abs(log_err).max()):.2f}"
        )
        assert abs(log_err.mean()) < 0.03
        blank = ~truth.invalid & (truth.concentration[:, k] == 0)
        flagged = (res.flags[blank, k] & GoldFlag.BELOW_CALIBRATION) != 0
        # a blank sample is at the zero-concentration asymptote: half the noise lands beyond it
        assert np.isnan(res.concentration[blank, k][flagged]).all()
        assert flagged.mean() > 0.2


@settings(max_examples=25, deadline=None)
@given(
    kit=st.sampled_from(KITS),
    conc_rel=st.floats(min_value=0.05, max_value=20.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_noise_free_strip_recovers_ratio_and_concentration(kit: str, conc_rel: float, seed: int) -> None:
    spec = DEMO_KITS[kit]
    quiet = GoldConditions(noise_sd=(0.0, 0.0))
    cals = [ln.calibration for ln in spec.lines]
    conc = [conc_rel * c.c for c in cals if c is not None]
    sample = one_gold_profile(spec, np.random.default_rng(seed), concentration=conc, conditions=quiet)
    res = interpret_strips(sample.profile[None], spec)
    assert np.allclose(res.ratio[0], sample.ratio, atol=0.01)
    assert np.allclose(res.control_signal[0], sample.control_od, rtol=0.01)
    for k, cal in enumerate(cals):
        assert cal is not None
        frac = (sample.ratio[k] - cal.d) / (cal.a - cal.d)
        if 0.05 < frac < 0.95:
            assert res.concentration[0, k] == pytest.approx(conc[k], rel=0.1)


@settings(max_examples=20, deadline=None)
@given(factor=st.floats(min_value=0.6, max_value=1.0), seed=st.integers(0, 2**32 - 1))
def test_illumination_scale_does_not_change_signals(factor: float, seed: int) -> None:
    spec = DEMO_KITS["nitrofurans-card-v1"]
    batch = generate_strips(spec, 64, np.random.default_rng(seed))
    a = interpret_strips(batch.profiles, spec)
    b = interpret_strips(batch.profiles * factor, spec)
    assert np.allclose(a.control_signal, b.control_signal, atol=2e-3)
    assert np.allclose(a.test_signal, b.test_signal, atol=2e-3)


def test_small_blocks_and_chunks_give_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DEMO_KITS["nitrofurans-card-v1"]
    batch = generate_strips(spec, 300, np.random.default_rng(6), conditions=FAULTY)
    whole = interpret_strips(batch.profiles, spec)
    monkeypatch.setattr(gold, "_BLOCK_BYTES", 1)  # 64-strip blocks
    monkeypatch.setattr(gold, "_GATHER_BYTES", 1)  # 16-strip gather chunks
    monkeypatch.setattr(gold, "_WORK_BYTES", 1)  # 16-strip work chunks
    small = interpret_strips(batch.profiles, spec)
    np.testing.assert_array_equal(small.verdict, whole.verdict)
    np.testing.assert_array_equal(small.flags, whole.flags)
    np.testing.assert_allclose(small.ratio, whole.ratio, atol=1e-4)


def test_rows_are_independent_of_batching_and_order() -> None:
    spec = DEMO_KITS["imidacloprid-v1"]
    rng = np.random.default_rng(5)
    batch = generate_strips(spec, 700, rng, conditions=FAULTY)  # > one work chunk
    whole = interpret_strips(batch.profiles, spec)
    perm = rng.permutation(700)
    shuffled = interpret_strips(batch.profiles[perm], spec)
    # float32 BLAS blocking depends on the batch size, so sums agree to rounding, decisions exactly
    for name in ("control_signal", "test_signal", "test_position", "ratio"):
        np.testing.assert_allclose(
            getattr(shuffled, name), getattr(whole, name)[perm], atol=1e-4, err_msg=name
        )
    for name in ("verdict", "flags"):
        np.testing.assert_array_equal(getattr(shuffled, name), getattr(whole, name)[perm], err_msg=name)
    single = interpret_strips(batch.profiles[123:124].copy(), spec)
    assert single.test_signal[0, 0] == pytest.approx(whole.test_signal[123, 0], abs=1e-4)
    f32 = interpret_strips(batch.profiles.astype(np.float32), spec)
    np.testing.assert_allclose(f32.control_signal, whole.control_signal, atol=1e-3)
    f16 = interpret_strips(batch.profiles.astype(np.float16), spec)  # 11-bit mantissa: coarse but valid
    np.testing.assert_allclose(f16.control_signal, whole.control_signal, rtol=0.05, atol=0.05)


def test_sandwich_and_competitive_verdict_rules() -> None:
    spec = DEMO_KITS["peanut-allergen-v1"]
    line = spec.lines[0]
    cal = line.calibration
    assert cal is not None
    quiet = GoldConditions(noise_sd=(0.0, 0.0))
    rng = np.random.default_rng(3)
    high = one_gold_profile(spec, rng, concentration=50.0, conditions=quiet)
    zero = one_gold_profile(spec, rng, concentration=0.0, conditions=quiet)
    res = interpret_strips(np.stack([high.profile, zero.profile]), spec)
    assert res.verdict_for(0) == "positive"  # sandwich: a strong T line is positive
    assert res.verdict_for(1) == "negative"
    comp = DEMO_KITS["carbendazim-v1"]
    high = one_gold_profile(comp, rng, concentration=50.0, conditions=quiet)
    zero = one_gold_profile(comp, rng, concentration=0.0, conditions=quiet)
    res = interpret_strips(np.stack([high.profile, zero.profile]), comp)
    assert res.verdict_for(0) == "positive"  # competitive: the T line vanishes
    assert res.verdict_for(1) == "negative"


def test_suspect_band() -> None:
    spec = DEMO_KITS["imidacloprid-v1"]
    line = spec.lines[0]
    cal = line.calibration
    assert cal is not None
    target = line.cutoff + line.suspect_band / 2  # inside the retest band
    conc = cal.c * ((cal.a - cal.d) / (target - cal.d) - 1) ** (1 / cal.b)
    sample = one_gold_profile(
        spec, np.random.default_rng(4), concentration=conc, conditions=GoldConditions(noise_sd=(0.0, 0.0))
    )
    assert sample.ratio[0] == pytest.approx(target)
    res = interpret_strips(sample.profile[None], spec)
    assert res.verdict_for(0) == "suspect"


def test_wire_helpers() -> None:
    spec = DEMO_KITS["nitrofurans-card-v1"]
    rng = np.random.default_rng(8)
    ok = one_gold_profile(spec, rng, concentration=[0.0, 0.0009, 1.0])
    bad = one_gold_profile(spec, rng, fault="control_missing")
    res = interpret_strips(np.stack([ok.profile, bad.profile]), spec)
    assert res.algorithm == GOLD_ALGORITHM == "gold/2.2"
    assert res.analytes == ("AOZ", "AMOZ", "SEM")
    v = res.values_for(0, 1)
    assert set(v) == {
        "ratio",
        "control_signal",
        "test_signal",
        "concentration_mg_kg",
        "control_offset_px",
        "test_offset_px",
        "control_snr",
        "test_snr",
        "ratio_sd",
        "margin_sd",
    }
    assert all(isinstance(x, float) for x in v.values())
    assert v["control_snr"] is not None
    assert v["control_snr"] > 20
    assert v["ratio_sd"] is not None
    assert 0 < v["ratio_sd"] < 0.05
    assert v["ratio"] == pytest.approx(ok.ratio[1], abs=0.05)
    assert res.verdict_for(0, 2) == "positive"
    assert (
        "below_calibration" in res.flags_for(0, 0) or res.values_for(0, 0)["concentration_mg_kg"] is not None
    )
    assert res.verdict_for(1, 0) == "invalid"
    assert "control_missing" in res.flags_for(1, 0)
    assert res.values_for(1, 0)["ratio"] is None
    assert res.values_for(1, 0)["concentration_mg_kg"] is None


def test_agrees_with_the_naive_per_strip_reference() -> None:
    """The loop-per-strip reference (no matrix products) reproduces the core to rounding, also on strips
    with specks, wide, Lorentzian and tailing bands, tilts and every fault."""
    hard = GoldConditions(
        p_control_missing=0.05,
        p_control_weak=0.05,
        p_control_offset=0.05,
        p_saturated=0.05,
        p_speck=0.3,
        sigma_frac=(0.13, 0.34),
        lorentz_fraction=(0.0, 1.0),
        tailing=(0.0, 1.5),
        drift=0.3,
    )
    for kit in ("procymidone-v1", "nitrofurans-card-v1", "peanut-allergen-v1"):
        spec = DEMO_KITS[kit]
        for cond in (FAULTY, hard):
            batch = generate_strips(spec, 150, np.random.default_rng(21), conditions=cond)
            fast = interpret_strips(batch.profiles, spec)
            control, ratio, verdict = naive_interpret_strips(batch.profiles, spec)
            np.testing.assert_allclose(control, fast.control_signal, atol=1e-4)
            np.testing.assert_allclose(ratio, fast.ratio, atol=1e-4)
            np.testing.assert_array_equal(verdict, fast.verdict)
            assert (verdict[batch.truth.invalid] == Verdict.INVALID).all()


# ------------------------------------------------------------------------------------------ bad input

SPEC = DEMO_KITS["imidacloprid-v1"]
GOOD = generate_strips(SPEC, 4, np.random.default_rng(0)).profiles


def _with(value: float, row: int = 2, col: int = 10) -> np.ndarray:
    x = GOOD.copy()
    x[row, col] = value
    return x


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (GOOD.tolist(), InputError, "numpy array"),
        ((GOOD * 4095).astype(np.uint16), InputError, "raw counts"),
        (GOOD[0], InputError, "shape (N, L)"),
        (GOOD[None], InputError, "shape (N, L)"),
        (np.empty((0, 1024)), InputError, "empty"),
        (_with(np.nan), InputError, "profile 2 contains NaN"),
        (_with(np.inf, row=3, col=1000), InputError, "profile 3 contains NaN or inf"),
        (_with(-0.5, col=480), InputError, "expected reflectance"),
        (GOOD * 4095.0, InputError, "expected reflectance in [0, 1.5]"),
        (GOOD[:, :1000], SpecMismatchError, "expects profiles of 1024 px"),
        (np.zeros((2, 1024), dtype=np.complex128), InputError, "dtype complex128"),
    ],
)
def test_bad_input_gives_clear_errors(data: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        interpret_strips(data, SPEC)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert isinstance(info.value, InterpretError)


def test_spec_with_a_line_off_the_profile() -> None:
    spec = SPEC.model_copy(update={"control_position": 1100.0})  # model_copy skips validation
    with pytest.raises(SpecMismatchError, match="outside the 1024 px profile"):
        interpret_strips(GOOD, spec)


@pytest.mark.parametrize("kit", KITS)
def test_wire_table_is_the_one_by_one_wire_values(kit: str) -> None:
    """The whole-array wire form (what the gateway's pipeline encodes) is exactly `verdict_for` /
    `values_for` / `flags_for` of every strip and test line — faulty strips (NaN → None) included."""
    spec = DEMO_KITS[kit]
    batch = generate_strips(spec, 96, np.random.default_rng(15), conditions=FAULTY)
    res = interpret_strips(batch.profiles, spec)
    verdicts, table, flags = res.wire_table()
    k = len(spec.analytes)
    assert table.shape == (96 * k, len(WIRE_NAMES))
    assert list(WIRE_NAMES) == sorted(res.values_for(0, 0))
    assert {Verdict(v).wire for row in verdicts for v in row} >= {"negative", "invalid"}
    assert not np.isfinite(table).all()
    for i in range(96):
        assert len(verdicts[i]) == len(flags[i]) == k
        for j in range(k):
            assert Verdict(verdicts[i][j]).wire == res.verdict_for(i, j)
            assert flag_names(GoldFlag, flags[i][j]) == res.flags_for(i, j)
            row = table[i * k + j].tolist()
            values = {n: (v if math.isfinite(v) else None) for n, v in zip(WIRE_NAMES, row, strict=True)}
            assert values == res.values_for(i, j)
