"""The within-group correlation of the statistics core (:func:`analyses.stats.within_group_r`) and its
batched z-scores, against scipy, the textbook partial correlation and the analytic within-group r."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analyses.stats import standardize_batched, standardize_within, within_group_pearson, within_group_r


def test_one_group_r_matches_scipy_and_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200) * math.sqrt(0.75)  # true r = 0.5
    one = np.zeros(200)
    e = within_group_r(x, y, one)
    assert e.value == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12) and (e.n, e.groups) == (200, 1)
    assert e.p < 1e-6 and e.p == pytest.approx(stats.pearsonr(x, y).pvalue, rel=1e-6)
    assert e.low < 0.5 < e.high and e.high - e.low < 0.3
    rs = within_group_r(x, y, one, method="spearman")
    assert rs.value == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_partial_correlation_separates_topology_from_variance() -> None:
    """A metric that is a function of variance correlates with accuracy but has no partial r; one that
    carries its own signal keeps it."""
    rng = np.random.default_rng(1)
    n = 300
    one = np.zeros(n)
    variance = rng.normal(size=n)
    norm = variance + 0.3 * rng.normal(size=n)
    signal = rng.normal(size=n)
    accuracy = variance + signal + 0.5 * rng.normal(size=n)
    proxy = 2 * variance + 0.05 * rng.normal(size=n)
    informative = signal + 0.2 * rng.normal(size=n)
    controls = np.column_stack([variance, norm])
    r = within_group_r(proxy, accuracy, one)
    partial = within_group_r(proxy, accuracy, one, controls)
    assert r.value > 0.5 and partial.low < 0 < partial.high and abs(partial.value) < 0.15
    partial = within_group_r(informative, accuracy, one, controls)
    assert partial.value > 0.7 and partial.low > 0.6 and partial.p < 1e-10


def test_within_group_r_degenerate_inputs() -> None:
    e = within_group_r(np.ones(10), np.arange(10.0), np.zeros(10))
    assert math.isnan(e.value) and math.isnan(e.low) and e.n == 10
    e = within_group_r(np.array([1.0, 2.0, np.nan]), np.array([1.0, 3.0, 2.0]), np.zeros(3))
    assert math.isnan(e.value) and e.n == 2


def test_within_group_correlation_ignores_differences_between_groups() -> None:
    """Groups differing in both accuracy and metric level give a large pooled r but no within r;
    a single-run group carries no within information and does not count."""
    rng = np.random.default_rng(4)
    groups = np.repeat(["a|small", "b|small", "b|medium"], 30)
    offset = np.repeat([0.0, 5.0, 10.0], 30)
    metric = offset + rng.normal(size=90)
    accuracy = offset + rng.normal(size=90)
    assert np.corrcoef(metric, accuracy)[0, 1] > 0.9
    e = within_group_r(metric, accuracy, groups)
    assert e.low < 0 < e.high and abs(e.value) < 0.25 and (e.n, e.groups, e.datasets) == (90, 3, 2)
    planted = accuracy + 2 * (metric - offset)
    e = within_group_r(metric, planted, groups, method="spearman")
    assert e.value > 0.8 and e.low > 0.7 and e.p < 1e-10
    controls = rng.normal(size=(91, 2))
    e = within_group_r(np.append(metric, 1.0), np.append(planted, 0.0), np.append(groups, "single"), controls)
    assert (e.n, e.groups) == (90, 3) and e.value > 0.8 and e.low > 0.7 and e.p < 1e-10


def test_within_group_r_matches_the_analytic_within_group_r_and_the_residual_formula() -> None:
    """Without controls it is the analytic within-group r (:func:`within_group_pearson`); with them, the
    textbook partial r of the within-group z-scores; its bootstrap redoes the z-scoring per resample (so
    resampling only within-group structure, the interval still covers the estimate)."""
    rng = np.random.default_rng(6)
    groups = np.repeat(["a", "b", "c", "d"], 25)
    x, y, c = rng.normal(size=100), rng.normal(size=100), rng.normal(size=(100, 2))
    y = y + 0.5 * x + c[:, 0]
    e = within_group_r(x, y, groups)
    ref = within_group_pearson(x, y, groups)
    assert e.value == pytest.approx(ref.value, abs=1e-12) and e.p == pytest.approx(ref.p, rel=1e-9)
    assert e.low < e.value < e.high
    partial = within_group_r(x, y, groups, c)
    z = standardize_within(np.column_stack([x, y, c]), groups)
    design = np.column_stack([np.ones(100), z[:, 2:]])
    res = [v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (z[:, 0], z[:, 1])]
    assert partial.value == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-10)


def test_standardize_batched_equals_per_group_z_scores() -> None:
    """Each batch row z-scored within its groups (ddof 0), as :func:`standardize_within` and scipy's
    zscore per group give it; a group of one row maps to 0."""
    rng = np.random.default_rng(8)
    values = rng.normal(size=(3, 12, 2))
    codes = rng.integers(0, 4, size=(3, 12))
    codes[0, :] = 0
    codes[0, 5] = 1  # a group of one row
    out = standardize_batched(values, codes + np.arange(3)[:, None] * 4, 12)
    for b in range(3):
        np.testing.assert_allclose(out[b], standardize_within(values[b], codes[b]), atol=1e-12)
        for g in np.unique(codes[b]):
            m = codes[b] == g
            want = np.zeros((m.sum(), 2)) if m.sum() == 1 else stats.zscore(values[b][m], axis=0, ddof=0)
            np.testing.assert_allclose(out[b][m], want, atol=1e-12)
