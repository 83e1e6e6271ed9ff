"""Strip images → profiles → interpretation, against the signal model's truth (smile, housing, dust)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_sim.signal_model import GoldConditions, generate_strip_images
from gateway.interpret import InputError, Verdict, interpret_strip_images, profiles_from_images
from kuaijian_schema.kits import DEMO_KITS


@pytest.mark.parametrize(
    ("kit", "rgb", "as_uint8", "n"),
    [
        ("imidacloprid-v1", False, False, 200),
        ("nitrofurans-card-v1", True, True, 100),
        ("peanut-allergen-v1", False, True, 200),
    ],
)
def test_images_with_smile_match_truth(kit: str, rgb: bool, as_uint8: bool, n: int) -> None:
    spec = DEMO_KITS[kit]
    cond = GoldConditions(p_control_missing=0.05, p_saturated=0.05)
    batch = generate_strip_images(
        spec, n, np.random.default_rng(9), rgb=rgb, as_uint8=as_uint8, smile_px=(2.0, 4.0), conditions=cond
    )
    assert batch.images.shape == ((n, 40, spec.length, 3) if rgb else (n, 40, spec.length))
    assert batch.images.dtype == (np.uint8 if as_uint8 else np.float64)
    res = interpret_strip_images(batch.images, spec)
    truth = batch.truth
    ok = ~truth.invalid
    err = np.abs(res.ratio[ok] - truth.ratio[ok])
    assert err.max() < 0.06, f"worst ratio error {err.max():.3f}"
    assert np.abs(res.control_signal[ok] / truth.control_od[ok] - 1).max() < 0.06
    assert (res.verdict[truth.invalid] == Verdict.INVALID).all()
    cut = np.array([ln.cutoff for ln in spec.lines])
    band = np.array([ln.suspect_band for ln in spec.lines])
    other = cut + band if spec.format == "competitive" else cut - band
    far = ok[:, None] & (np.abs(truth.ratio - cut) > 0.08) & (np.abs(truth.ratio - other) > 0.08)
    np.testing.assert_array_equal(res.verdict[far], truth.verdict[far])


def test_trimmed_mean_ignores_housing_and_dust() -> None:
    img = np.full((1, 20, 64), 0.8)
    img[:, :3] = 0.1  # housing rows are outside the central band
    img[:, 8, 30] = 0.05  # a dust speck inside it
    prof = profiles_from_images(img)
    np.testing.assert_allclose(prof, 0.8)
    assert profiles_from_images((img * 255).astype(np.uint8)).max() == pytest.approx(204 / 255)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([[[0.5]]], "numpy array"),
        (np.ones((2, 10)), "shape (N, H, W)"),
        (np.ones((2, 10, 64, 4)), "3 channels"),
        (np.ones((0, 10, 64)), "empty"),
        (np.ones((1, 10, 64), dtype=np.int32), "dtype int32"),
        (np.full((1, 10, 64), np.nan), "NaN"),
    ],
)
def test_bad_images(images: object, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        profiles_from_images(images)  # type: ignore[arg-type]
