"""The pressure stage's pooled within-run rank correlation (000) on synthetic layers with planted
bottlenecks, reversed ones and none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analyses.pressure.rank_correlation import pooled_rank_correlation
from analyses.stats import decide, spearman
from tests.analyses.pressure_inputs import layers


def test_spearman_matches_scipy():
    """The stage's per-run ρ is the stats core's spearman."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=9), rng.normal(size=9)
    y[3] = y[5]  # a tie
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert spearman([1.0, 2.0], [5.0, 3.0]) == -1.0


def test_planted_negative_rank_correlation_is_supported_and_reversed_is_not():
    planted = pooled_rank_correlation(*layers(sign=-1.0), n_perm=500)
    assert planted.effect.value < -0.9 and planted.effect.n == 30 and planted.n_3plus == 30
    assert planted.effect.p < 0.01
    assert decide(planted.effect.low, planted.effect.high, "negative") == "supported"
    reversed_ = pooled_rank_correlation(*layers(sign=1.0), n_perm=500)
    assert reversed_.effect.value > 0.9
    assert decide(reversed_.effect.low, reversed_.effect.high, "negative") == "not supported"


def test_no_relation_gives_an_interval_around_zero():
    runs, p, _ = layers(n_runs=40)
    y = np.random.default_rng(9).normal(size=len(p))
    s = pooled_rank_correlation(runs, p, y, n_perm=500)
    assert s.effect.low < 0 < s.effect.high and s.effect.p > 0.05


def test_two_layer_runs_count_as_signs_and_single_layers_are_skipped():
    runs = np.array(["a", "a", "b", "b", "c"])
    x = np.array([1.0, 2.0, 1.0, 2.0, 1.0])
    y = np.array([2.0, 1.0, 1.0, 2.0, 3.0])
    s = pooled_rank_correlation(runs, x, y, n_perm=100)
    assert s.rho == {"a": -1.0, "b": 1.0} and s.effect.value == 0.0 and s.effect.n == 2
    assert np.isnan(s.effect.low)  # fewer than 3 runs: no interval
