"""Correlations stage statistics: the within-data-set Pearson r it uses (analyses.stats) against scipy,
and BH against statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analyses.stats import bh_adjust, pearson_ci, within_group_pearson


def test_one_group_is_plain_pearson() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    est = within_group_pearson(x, y)
    ref = stats.pearsonr(x, y)
    assert est.value == pytest.approx(ref.statistic, abs=1e-12)
    assert est.p == pytest.approx(ref.pvalue, rel=1e-9)
    ref_ci = pearson_ci(x, y)
    assert (est.low, est.high) == pytest.approx((ref_ci.low, ref_ci.high), abs=1e-9)
    assert (est.n, est.groups) == (40, 1)


def test_within_group_r_removes_data_set_offsets() -> None:
    """Inside each data set y falls with x, but data sets with larger x have larger y: the pooled r is
    positive, the within-data-set r negative and equal to the size-weighted mean of per-group r."""
    rng = np.random.default_rng(1)
    xs, ys, gs = [], [], []
    for g, (size, offset) in enumerate([(30, 0.0), (20, 5.0), (25, 10.0)]):
        x = rng.normal(size=size)
        xs.append(x + offset)
        ys.append(-0.7 * x + 0.5 * rng.normal(size=size) + offset)
        gs.append(np.full(size, g))
    x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
    assert stats.pearsonr(x, y).statistic > 0.8
    est = within_group_pearson(x, y, g)
    per = [stats.pearsonr(x[g == i], y[g == i]).statistic for i in range(3)]
    sizes = [30, 20, 25]
    assert est.value == pytest.approx(np.dot(per, sizes) / sum(sizes), abs=1e-12)
    assert est.value < -0.5 and est.high < 0 and est.p < 1e-6 and (est.n, est.groups) == (75, 3)


def test_degenerate_inputs_give_nan() -> None:
    est = within_group_pearson(np.ones(10), np.arange(10.0))
    assert np.isnan([est.value, est.low, est.high, est.p]).all() and est.n == 10
    est = within_group_pearson(np.arange(4.0), np.arange(4.0), np.array([0, 0, 1, 1]))
    assert np.isnan(est.value)  # n - k - 2 = 0
    assert np.isnan(within_group_pearson(np.array([]), np.array([])).value)


def test_bh_matches_statsmodels_and_keeps_nan() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    adj = bh_adjust(p)
    ref = multipletests(p[~np.isnan(p)], method="fdr_bh")[1]
    np.testing.assert_allclose(adj[~np.isnan(p)], ref)
    assert np.isnan(adj[1])
