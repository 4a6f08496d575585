"""The random-effects pool: Paule-Mandel tau^2 and the HKSJ interval against a brute-force reference,
its robust floor, the Knapp-Hartung floor below five data sets, I^2, and the equal-weight fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from analyses.stats.meta import KH_MODIFICATION_BELOW, random_effects, t_interval


def _reference(y: np.ndarray, v: np.ndarray, modified: bool) -> dict:
    """Paule-Mandel by root-finding the generalized Q statistic (sum w (y - mu_w)^2 = k - 1), then HKSJ."""
    k = len(y)

    def q(tau2: float) -> float:
        w = 1 / (v + tau2)
        mu = (w * y).sum() / w.sum()
        return float((w * (y - mu) ** 2).sum()) - (k - 1)

    tau2 = 0.0 if q(0.0) <= 0 else optimize.brentq(q, 0.0, 1e3, xtol=1e-14)
    w = 1 / (v + tau2)
    mu = (w * y).sum() / w.sum()
    var = (w * (y - mu) ** 2).sum() / ((k - 1) * w.sum())
    var = max(var, k / (k - 1) * (w * w * (y - mu) ** 2).sum() / w.sum() ** 2)  # the robust (sandwich) floor
    if modified:
        var = max(var, 1 / w.sum())
    half = stats.t.ppf(0.975, k - 1) * math.sqrt(var)
    wf = 1 / v
    qf = (wf * (y - (wf * y).sum() / wf.sum()) ** 2).sum()
    return {"mu": mu, "tau2": tau2, "low": mu - half, "high": mu + half, "i2": max(0.0, (qf - (k - 1)) / qf)}


@pytest.mark.parametrize("k", [3, 6, 12])
def test_random_effects_equals_paule_mandel_and_hksj(k: int) -> None:
    rng = np.random.default_rng(k)
    v = rng.uniform(0.01, 0.05, k)
    y = 0.3 + rng.normal(0, 0.2, k) + rng.normal(0, np.sqrt(v))
    got, ref = random_effects(y, v), _reference(y, v, modified=k < KH_MODIFICATION_BELOW)
    assert got.value == pytest.approx(ref["mu"], abs=1e-6)
    assert got.tau2 == pytest.approx(ref["tau2"], rel=1e-3, abs=1e-6)  # statsmodels iterates to |Q - (k-1)| < 1e-5
    assert (got.low, got.high) == pytest.approx((ref["low"], ref["high"]), abs=1e-5)
    assert got.i2 == pytest.approx(ref["i2"], abs=1e-12)
    assert got.df == k - 1 and got.k == k
    t = (got.value - 0.0) / got.se
    assert got.p == pytest.approx(2 * stats.t.sf(abs(t), k - 1))
    assert got.low < got.low90 < got.value < got.high90 < got.high


def test_homogeneous_estimates_give_zero_tau2_and_the_modification_floors_the_interval() -> None:
    y, v = np.array([0.50, 0.5001, 0.4999]), np.full(3, 0.04)
    got = random_effects(y, v)
    assert got.tau2 == 0.0 and got.i2 == 0.0
    # the HKSJ variance of three near-equal estimates is ~0; the floor keeps the plain variance 1 / sum w
    assert got.se == pytest.approx(math.sqrt(0.04 / 3))


def test_missing_within_variances_weigh_data_sets_equally() -> None:
    y = np.array([0.1, 0.4, 0.3, 0.2])
    got = random_effects(y, np.array([0.01, np.nan, 0.02, 0.01]))
    ref = stats.ttest_1samp(y, 0.0)
    assert got.value == pytest.approx(y.mean()) and got.p == pytest.approx(ref.pvalue)
    assert (got.low, got.high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert math.isnan(got.tau2) and "equal-weight" in got.method


def test_too_few_or_identical_estimates_give_no_interval() -> None:
    assert math.isnan(random_effects(np.array([0.2]), np.array([0.01])).low)
    same = random_effects(np.array([0.2, 0.2, 0.2]), np.full(3, np.nan))  # equal weights, no spread
    assert math.isnan(same.low) and math.isnan(same.high)
    assert math.isnan(t_interval(0.3, 0.0, 4).low)  # never a zero-width interval
