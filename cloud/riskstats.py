"""The statistics behind risk early warning (风险预警): pure functions on counts, no database.

Does: the exact one-sided binomial tail P(X ≥ x | n, p) in log space (`binom_sf`); a baseline rate shrunk
towards a reference rate (`shrunk_rate`, an empirical-Bayes beta prior worth `prior_tests` pseudo-tests); the
rise test that `cloud.risk` applies to every analyte × product × place cell (`rise_test`); and a cell's
priority estimate for next period's tasks (`priority`).

The rule (docs/risk.md has the long form): in the current ISO week a cell has x positives among n valid tests;
its trailing baseline (the `baseline_weeks` weeks before) has X among N. The expected rate is
p0 = max(floor, (X + m·r) / (N + m)), where r is the reference rate (the analyte's county-wide rate over the
same baseline) and m = `prior_tests` — so a cell with little history is compared with the county, a cell with
a long history with itself. Because p0 is an estimate from N + m (pseudo-)tests, the week is tested against the
beta-binomial predictive distribution, rate ~ Beta(p0·(N + m), (1 − p0)·(N + m)): the exact tail
P(X ≥ x) < alpha alerts, provided x ≥ min_positives and x/n ≥ min_ratio · p0 (a rise that matters, not only one
that is unlikely). Severity: high when the tail is below alpha / 100, else medium.

Does not: read results, bucket time, decide scope or store alerts (cloud.risk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _log_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_sf(x: int, n: int, p: float) -> float:
    """P(X ≥ x) for X ~ Binomial(n, p), exact (summed in log space), in [0, 1]."""
    if n < 0 or x < 0:
        raise ValueError("n and x must be non-negative")
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    logs = [_log_pmf(k, n, p) for k in range(x, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def betabinom_sf(x: int, n: int, a: float, b: float) -> float:
    """P(X ≥ x) for X ~ BetaBinomial(n, a, b): a binomial whose rate is itself uncertain, Beta(a, b)."""
    if n < 0 or x < 0 or a <= 0 or b <= 0:
        raise ValueError("need n, x ≥ 0 and a, b > 0")
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    base = math.lgamma(n + 1) - _log_beta(a, b)
    logs = [
        base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + _log_beta(k + a, n - k + b)
        for k in range(x, n + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def shrunk_rate(events: int, trials: int, reference: float, prior_tests: float) -> float:
    """(events + prior_tests·reference) / (trials + prior_tests): the baseline pulled towards `reference`."""
    if trials < 0 or events < 0 or events > trials:
        raise ValueError("need 0 ≤ events ≤ trials")
    if prior_tests <= 0:
        return events / trials if trials else reference
    return (events + prior_tests * reference) / (trials + prior_tests)


@dataclass(frozen=True)
class RiseParams:
    alpha: float = 0.001
    min_positives: int = 3
    min_ratio: float = 2.0
    prior_tests: float = 20.0
    floor_rate: float = 0.005
    """lower bound of p0: a pair never seen positive is not 'infinitely' surprising at its first positive"""


@dataclass(frozen=True)
class RiseTest:
    observed: int
    tests: int
    expected_rate: float
    p_value: float
    alert: bool
    severity: str | None  # "high" | "medium" | None

    @property
    def expected(self) -> float:
        return self.expected_rate * self.tests

    @property
    def relative_risk(self) -> float | None:
        if self.tests == 0 or self.expected_rate <= 0:
            return None
        return (self.observed / self.tests) / self.expected_rate


def rise_test(
    observed: int, tests: int, base_events: int, base_tests: int, reference: float, params: RiseParams
) -> RiseTest:
    """The documented rise rule for one cell (see the module docstring)."""
    p0 = max(params.floor_rate, shrunk_rate(base_events, base_tests, reference, params.prior_tests))
    p0 = min(p0, 0.999)
    # The baseline is itself an estimate: test against the beta-binomial predictive distribution of a rate
    # Beta(p0·w, (1 − p0)·w) with w = baseline tests + prior weight, not a binomial with p0 taken as exact.
    weight = base_tests + params.prior_tests
    p_value = betabinom_sf(observed, tests, p0 * weight, (1.0 - p0) * weight)
    alert = (
        tests > 0
        and observed >= params.min_positives
        and observed / tests >= params.min_ratio * p0
        and p_value < params.alpha
    )
    severity = None
    if alert:
        severity = "high" if p_value < params.alpha / 100 else "medium"
    return RiseTest(observed, tests, p0, p_value, alert, severity)


def priority(positives: int, tests: int, reference: float, prior_tests: float) -> float:
    """A cell's estimated positive rate for planning (the shrunk rate over the planning window)."""
    return shrunk_rate(positives, tests, reference, prior_tests)
