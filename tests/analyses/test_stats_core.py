"""The statistics core against brute-force references: z-scores within groups, Pearson / Spearman /
partial correlations, the within-group correlation and its degrees of freedom, BH adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analyses.stats import (
    Estimate,
    bh_adjust,
    partial_residuals,
    pearson,
    pearson_rows,
    spearman,
    standardize_batched,
    standardize_within,
    stratified_bootstrap,
    stratified_resamples,
    within_group_pearson,
    within_group_r,
)

RNG = np.random.default_rng(7)


def test_standardize_within_is_a_per_group_z_score_and_maps_constant_groups_to_zero():
    x = RNG.normal(size=(40, 2)) * 3 + 1
    g = np.repeat(["a", "b", "c", "d"], 10)
    x[g == "c", 1] = 5.0  # constant within c: no within-group information
    z = standardize_within(x, g)
    for label in "abd":
        m = g == label
        assert z[m] == pytest.approx(stats.zscore(x[m], axis=0, ddof=0), abs=1e-12)
    assert np.all(z[g == "c", 1] == 0)
    assert standardize_within(x[:, 0], g) == pytest.approx(z[:, 0])
    single = standardize_within(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1]))
    assert single[0] == 0  # a group of one row


def test_the_batched_z_score_equals_one_sample_at_a_time():
    x = RNG.normal(size=(3, 12, 2))
    codes = RNG.integers(0, 3, size=(3, 12))
    offsets = np.arange(3)[:, None] * 3
    z = standardize_batched(x, codes + offsets, 9)
    for b in range(3):
        assert z[b] == pytest.approx(standardize_within(x[b], codes[b]), abs=1e-12)


def test_pearson_and_spearman_match_scipy():
    x, y = RNG.normal(size=30), RNG.normal(size=30)
    y[2] = np.nan
    ok = np.isfinite(y)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x[ok], y[ok]).statistic, abs=1e-12)
    assert spearman(x[ok], y[ok]) == pytest.approx(stats.spearmanr(x[ok], y[ok]).statistic, abs=1e-12)
    assert math.isnan(pearson(np.ones(5), np.arange(5.0)))
    assert math.isnan(pearson(x[:2], y[:2]))  # below min_n
    rows = pearson_rows(np.stack([x, -x]), np.stack([x, x]))
    assert rows == pytest.approx([1.0, -1.0])


def test_within_group_r_is_the_size_weighted_mean_of_group_correlations_with_reduced_dof():
    g = np.repeat([0, 1, 2], [10, 20, 30])
    x = RNG.normal(size=60) + 5 * g  # group means differ wildly: the pooled r would mostly see them
    y = 0.5 * x + RNG.normal(size=60) - 8 * g
    est = within_group_pearson(x, y, g)
    per_group = [stats.pearsonr(x[g == k], y[g == k]).statistic for k in range(3)]
    assert est.value == pytest.approx(np.average(per_group, weights=[10, 20, 30]), abs=1e-12)
    assert (est.n, est.groups) == (60, 3)
    dof = 60 - 3 - 1
    t = est.value * math.sqrt(dof / (1 - est.value ** 2))
    assert est.p == pytest.approx(2 * stats.t.sf(abs(t), dof))
    half = 1.959964 / math.sqrt(dof - 1)
    assert (est.low, est.high) == pytest.approx((math.tanh(math.atanh(est.value) - half),
                                                 math.tanh(math.atanh(est.value) + half)), abs=1e-6)


def test_partial_residuals_give_the_textbook_partial_correlation():
    z = RNG.normal(size=200)
    x, y = z + RNG.normal(size=200), z + 0.3 * RNG.normal(size=200)
    rxy, rxz, ryz = (stats.pearsonr(a, b).statistic for a, b in ((x, y), (x, z), (y, z)))
    textbook = (rxy - rxz * ryz) / math.sqrt((1 - rxz ** 2) * (1 - ryz ** 2))
    got = pearson(partial_residuals(x, z[:, None]), partial_residuals(y, z[:, None]))
    assert got == pytest.approx(textbook, abs=1e-10)


def test_within_group_r_with_a_bootstrap_interval_covers_its_estimate():
    g = np.repeat(["iris|small", "wine|small", "wine|large"], 20)
    x = RNG.normal(size=60)
    y = 0.6 * x + RNG.normal(size=60)
    est = within_group_r(x, y, g)
    assert isinstance(est, Estimate) and (est.n, est.groups, est.datasets, est.unit) == (60, 3, 2, "runs")
    assert est.value == pytest.approx(within_group_pearson(x, y, g).value, abs=1e-12)
    assert est.low < est.value < est.high
    small = within_group_r(x[:3], y[:3], g[:3])
    assert not small.has_interval


def test_bh_adjust_matches_statsmodels_and_keeps_nan():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    ok = np.isfinite(p)
    out = bh_adjust(p)
    assert np.isnan(out[1]) and out[ok] == pytest.approx(multipletests(p[ok], method="fdr_bh")[1])


def test_stratified_resamples_keep_every_group_and_its_size():
    groups = np.array(list("aaabbc"))
    res = stratified_resamples(groups, 50, seed=0)
    assert res.shape == (50, 6)
    assert all(sorted(groups[r]) == sorted(groups) for r in res)  # every resample keeps each data set's size
    x = RNG.normal(size=300)
    g = np.repeat(np.arange(3), 100)
    est = stratified_bootstrap(lambda idx: x[idx].mean(), g, n_boot=400, unit="models")
    se = x.std(ddof=1) / np.sqrt(300)
    assert (est.n, est.groups, est.unit) == (300, 3, "models") and est.low < est.value < est.high
    assert est.high - est.low == pytest.approx(2 * 1.96 * se, rel=0.25)
