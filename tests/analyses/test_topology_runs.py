"""Per-run rows of the topology stage (:mod:`analyses.topology.runs`): the change over training and
the within-run (partial) Spearman correlation with test accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses.topology.runs import metric_change, within_run_spearman


def test_within_run_spearman_and_partial() -> None:
    """Metric and accuracy that both follow a drift (as the weights' scale grows with training time)
    correlate strongly; controlling for the drift leaves little, and nothing at all when the metric
    is a monotone function of it."""
    rng = np.random.default_rng(2)
    steps = np.arange(60.0)
    drift = np.log1p(steps)
    accuracy = 1 - np.exp(-steps / 10) + 0.02 * rng.normal(size=60)
    metric = drift + 0.3 * rng.normal(size=60)
    assert within_run_spearman(metric, accuracy) > 0.6
    partial = within_run_spearman(metric, accuracy, np.column_stack([drift, drift ** 2]))
    assert partial is not None and abs(partial) < 0.35
    assert within_run_spearman(2 * drift, accuracy, drift[:, None]) == 0.0
    assert within_run_spearman(metric, 1 - 1 / (1 + drift), drift[:, None]) is None
    assert within_run_spearman(np.ones(60), accuracy) is None
    assert within_run_spearman(metric[:2], accuracy[:2]) is None


def test_metric_change() -> None:
    assert metric_change(0.5, 0.7, "normalized_entropy") == pytest.approx(0.2)
    assert metric_change(1.0, math.e, "mean_lifetime") == pytest.approx(1.0)
    assert metric_change(None, 1.0, "entropy") is None
    assert metric_change(0.0, 1.0, "mean_lifetime") is None


# --- the stage on the tiny corpus -----------------------------------------------------------------
