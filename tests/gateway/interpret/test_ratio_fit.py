"""The ratio's line areas (step 6, since gold/2.1): weighted least squares against the robust Gaussian sums.

The signal model's noise is additive in reflectance, so larger in OD at a band's dark centre. The
least-squares areas weight each pixel by its inverse OD variance; a strip whose fit fails the χ² bound
(a dust speck) falls back to the Gaussian-weighted sums of gold/2.0. Setting the bound below zero sends
every strip to that fallback, i.e. reproduces gold/2.0's ratio on the same strips.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from firmware_sim.signal_model import GoldConditions, generate_strips
from gateway.interpret import Verdict, interpret_strips
from gateway.interpret import lines as lines_mod
from kuaijian_schema.kits import DEMO_KITS

CONDITIONS = {
    "clean": GoldConditions(),
    "lorentz": replace(GoldConditions(), lorentz_fraction=(0.0, 1.0)),
    "specks": replace(GoldConditions(), p_speck=0.3),
}


def _errors(kit: str, condition: str, seed: int) -> np.ndarray:
    spec = DEMO_KITS[kit]
    batch = generate_strips(spec, 4000, np.random.default_rng(seed), conditions=CONDITIONS[condition])
    res = interpret_strips(batch.profiles, spec)
    ok = ~(res.verdict == Verdict.INVALID).any(axis=1)
    err: np.ndarray = np.abs(res.ratio - batch.truth.ratio)[ok]
    return err


@pytest.mark.parametrize(
    ("kit", "condition", "seed"),
    [
        ("imidacloprid-v1", "clean", 11),
        ("carbendazim-v1", "lorentz", 12),
        ("nitrofurans-card-v1", "clean", 13),
    ],
)
def test_least_squares_areas_beat_the_gaussian_sums(
    kit: str, condition: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted = _errors(kit, condition, seed)
    monkeypatch.setattr(lines_mod, "FIT_CHI2", -1.0, raising=False)  # every strip falls back
    summed = _errors(kit, condition, seed)
    p95_fit, p95_sum = np.percentile(fitted, 95), np.percentile(summed, 95)
    assert p95_fit < 0.95 * p95_sum, f"{kit} {condition}: p95 {p95_fit:.4f} vs Gaussian sums {p95_sum:.4f}"
    assert np.median(fitted) < 0.97 * np.median(summed), (
        f"{kit} {condition}: median {np.median(fitted):.4f} vs Gaussian sums {np.median(summed):.4f}"
    )


def test_a_speck_sends_its_strip_to_the_robust_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    gated = _errors("carbendazim-v1", "specks", 14)
    monkeypatch.setattr(lines_mod, "FIT_CHI2", np.inf, raising=False)  # the fit alone, followed by specks
    ungated = _errors("carbendazim-v1", "specks", 14)
    monkeypatch.setattr(lines_mod, "FIT_CHI2", -1.0, raising=False)  # the Gaussian sums alone
    summed = _errors("carbendazim-v1", "specks", 14)
    p95 = {
        name: float(np.percentile(e, 95))
        for name, e in (("gated", gated), ("fit", ungated), ("sums", summed))
    }
    assert p95["gated"] < 1.1 * p95["sums"], p95
    assert p95["fit"] > 1.25 * p95["gated"], p95
