"""The verdict rule and the interval estimators every stage's verdicts use."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest
from scipy import stats

from analyses.verdicts import (
    Verdict,
    cluster_bootstrap,
    decide,
    mean_ci,
    pearson_ci,
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
    r, lo, hi, p, n = pearson_ci(x, y)
    ref = stats.pearsonr(x[np.isfinite(y)], y[np.isfinite(y)])
    assert n == 199 and r == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert np.isnan(pearson_ci(np.ones(10), np.arange(10.0))[0])


def test_cluster_bootstrap_counts_clusters_not_rows():
    rng = np.random.default_rng(1)
    # 30 clusters with a shared offset each and 20 rows apiece: the row-level SE would be ~4.5x too small
    offsets = rng.normal(size=30)
    frame = pl.DataFrame({"run": np.repeat(np.arange(30), 20),
                          "v": np.repeat(offsets, 20) + 0.01 * rng.normal(size=600)})
    est, lo, hi, k = cluster_bootstrap(frame, "run", lambda f: float(f["v"].mean()), n_boot=500)
    assert k == 30
    se = offsets.std(ddof=1) / np.sqrt(30)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.3)
    assert lo < est < hi


def test_mean_and_wilson_intervals():
    m, lo, hi, n = mean_ci(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (m, n) == (2.0, 3) and (lo, hi) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-3)
    p, lo, hi = wilson_ci(8, 10)
    assert p == 0.8 and (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-3)


def test_write_verdicts_round_trip():
    con = duckdb.connect()
    v = Verdict("c1", "001 §5.5.5", "claim", "test", "r", "positive", 0.4, 0.1, 0.7, 12, "runs", p_value=0.01)
    write_verdicts(con, "toy", [v, Verdict("c2", "s", "claim 2", "t", "r", "negative", float("nan"),
                                            None, None, 2, "runs")])
    rows = con.execute("SELECT stage, claim_id, effect, verdict FROM analysis_toy_verdicts "
                       "ORDER BY claim_id").fetchall()
    assert rows == [("toy", "c1", 0.4, "supported"), ("toy", "c2", None, "inconclusive")]


def test_nonzero_claims_are_supported_on_either_side_and_refuted_by_a_negligible_interval() -> None:
    from analyses.verdicts import decide

    assert decide(0.2, 0.5, "nonzero") == decide(-0.5, -0.2, "nonzero") == "supported"
    assert decide(-0.1, 0.3, "nonzero") == "inconclusive"
    assert decide(-0.05, 0.05, "nonzero", negligible=0.1) == "not supported"


def test_row_bootstrap_interval_matches_the_normal_theory_one() -> None:
    import numpy as np

    from analyses.verdicts import mean_ci, row_bootstrap

    x = np.random.default_rng(0).normal(size=400)
    est, lo, hi, n = row_bootstrap(lambda idx: x[idx].mean(axis=-1), len(x))
    m, tlo, thi, _ = mean_ci(x)
    assert n == 400 and est == m
    assert abs(lo - tlo) < 0.02 and abs(hi - thi) < 0.02
    assert np.isnan(row_bootstrap(lambda idx: x[idx].mean(axis=-1), 3)[1])
