"""The statistics core: the verdict rule and the interval estimators every stage's verdicts use."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest
from scipy import stats

from analyses.stats import (
    Estimate,
    Verdict,
    cluster_bootstrap,
    decide,
    mean_ci,
    pearson_ci,
    row_bootstrap,
    wilson_ci,
    write_verdicts,
)


@pytest.mark.parametrize(("lo", "hi", "predicted", "expected"), [
    (0.1, 0.5, "positive", "supported"),
    (-0.5, -0.1, "positive", "not supported"),
    (-0.5, -0.1, "negative", "supported"),
    (0.1, 0.5, "negative", "not supported"),
    (-0.1, 0.5, "positive", "inconclusive"),
    (None, 0.5, "positive", "inconclusive"),
    (float("nan"), 0.5, "positive", "inconclusive"),
])
def test_decide(lo, hi, predicted, expected):
    assert decide(lo, hi, predicted) == expected


def test_decide_against_a_null_and_a_negligible_band():
    assert decide(1.2, 1.5, "positive", null=1.0) == "supported"
    assert decide(0.8, 1.1, "positive", null=1.0) == "inconclusive"
    assert decide(-0.01, 0.02, "positive", negligible=0.05) == "not supported"


def test_pearson_ci_matches_scipy_and_fisher_z():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    y[3] = np.nan
    est = pearson_ci(x, y)
    r, lo, hi, p, n = est.value, est.low, est.high, est.p, est.n
    ref = stats.pearsonr(x[np.isfinite(y)], y[np.isfinite(y)])
    assert n == 199 and r == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert np.isnan(pearson_ci(np.ones(10), np.arange(10.0)).value)


def test_cluster_bootstrap_counts_clusters_not_rows():
    rng = np.random.default_rng(1)
    # 30 clusters with a shared offset each and 20 rows apiece: the row-level SE would be ~4.5x too small
    offsets = rng.normal(size=30)
    frame = pl.DataFrame({"run": np.repeat(np.arange(30), 20),
                          "v": np.repeat(offsets, 20) + 0.01 * rng.normal(size=600)})
    boot = cluster_bootstrap(frame, "run", lambda f: float(f["v"].mean()), n_boot=500, unit="runs")
    est, lo, hi = boot.value, boot.low, boot.high
    assert (boot.n, boot.unit) == (30, "runs")
    se = offsets.std(ddof=1) / np.sqrt(30)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.3)
    assert lo < est < hi


def test_mean_and_wilson_intervals():
    est = mean_ci(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (est.value, est.n) == (2.0, 3) and (est.low, est.high) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-3)
    assert est.p == pytest.approx(stats.ttest_1samp([1.0, 2.0, 3.0], 0.0).pvalue)
    est = wilson_ci(8, 10)
    assert est.value == 0.8 and (est.low, est.high) == pytest.approx((0.4902, 0.9433), abs=1e-3)


def test_write_verdicts_round_trip():
    con = duckdb.connect()
    v = Verdict("c1", "001 §5.5.5", "claim", "test", "r", "positive", 0.4, 0.1, 0.7, 12, "runs", p_value=0.01)
    write_verdicts(con, "toy", [v, Verdict("c2", "s", "claim 2", "t", "r", "negative", float("nan"),
                                            None, None, 2, "runs")])
    rows = con.execute("SELECT stage, claim_id, effect, verdict FROM analysis_toy_verdicts "
                       "ORDER BY claim_id").fetchall()
    assert rows == [("toy", "c1", 0.4, "supported"), ("toy", "c2", None, "inconclusive")]


def test_nonzero_claims_are_supported_on_either_side_and_refuted_by_a_negligible_interval() -> None:
    assert decide(0.2, 0.5, "nonzero") == decide(-0.5, -0.2, "nonzero") == "supported"
    assert decide(-0.1, 0.3, "nonzero") == "inconclusive"
    assert decide(-0.05, 0.05, "nonzero", negligible=0.1) == "not supported"


def test_row_bootstrap_interval_matches_the_normal_theory_one() -> None:
    x = np.random.default_rng(0).normal(size=400)
    boot = row_bootstrap(lambda idx: x[idx].mean(axis=-1), len(x))
    t = mean_ci(x)
    assert boot.n == 400 and boot.value == t.value
    assert abs(boot.low - t.low) < 0.02 and abs(boot.high - t.high) < 0.02
    assert not row_bootstrap(lambda idx: x[idx].mean(axis=-1), 3).has_interval


def test_a_verdict_of_an_estimate_carries_its_interval_n_unit_and_p() -> None:
    est = Estimate(0.4, 0.1, 0.7, 12, "runs", p=0.01)
    v = Verdict.of(est, "c1", "001", "claim", "test", "r", "positive", detail="d")
    assert (v.effect, v.ci_low, v.ci_high, v.n, v.n_unit, v.p_value, v.verdict) == (
        0.4, 0.1, 0.7, 12, "runs", 0.01, "supported")
    assert Verdict.of(est, "c1", "001", "claim", "test", "r", "positive", with_p=False).p_value is None
