"""Correlations stage verdicts: the run-level r takes r and p from the analytic within-group r and its
interval from the bootstrap over runs, and has no interval below MIN_RUNS runs or without an r."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.correlations.verdicts import MIN_RUNS, run_level_r
from analyses.stats import within_group_pearson, within_group_r


def test_run_level_r_is_the_analytic_r_with_the_bootstrap_interval() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat(["a", "b", "c"], 12)
    x = rng.normal(size=36) + np.repeat([0.0, 3.0, 6.0], 12)
    y = 0.6 * x + rng.normal(size=36)
    est = run_level_r(x, y, groups)
    analytic, boot = within_group_pearson(x, y, groups), within_group_r(x, y, groups)
    assert (est.value, est.p, est.n, est.groups, est.unit) == (analytic.value, analytic.p, 36, 3, "runs")
    assert (est.low, est.high) == (boot.low, boot.high)
    assert est.low < est.value < est.high
    assert est.value == pytest.approx(boot.value, abs=1e-12)


def test_run_level_r_needs_min_runs_and_an_r() -> None:
    x, y = np.arange(MIN_RUNS - 1.0), np.array([0.0, 2.0, 1.0, 4.0, 3.0])
    est = run_level_r(x, y, np.zeros(MIN_RUNS - 1, int))
    assert np.isfinite(est.value) and np.isnan([est.low, est.high]).all()
    est = run_level_r(np.ones(10), np.arange(10.0), np.zeros(10, int))  # constant feature: no r
    assert np.isnan([est.value, est.low, est.high]).all() and est.n == 10
