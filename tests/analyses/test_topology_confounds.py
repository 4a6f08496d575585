"""Topology verdicts against their confounds: a metric that tracks accuracy over training only because
both move with the step is not supported; one that tracks it beyond the step is; clouds below the
minimum size stay out of the verdicts."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.stats import Estimate, Verdict, assess
from analyses.topology.claims import MIN_CLOUD_POINTS, across_runs_data, eligible, mean_data
from analyses.topology.runs import within_run_spearman


def _over_training_runs(beyond: float, seed: int) -> pl.DataFrame:
    """40 runs in 5 data sets; per run 12 snapshots where accuracy and the metric both rise with the step,
    the metric plus ``beyond`` times accuracy's own wiggle (which the step does not explain)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(5):
        for r in range(8):
            step = np.arange(12.0)
            wiggle = rng.normal(0, 1, 12)
            accuracy = 0.3 * step + wiggle
            metric = 0.3 * step + beyond * wiggle + rng.normal(0, 1, 12)
            rows.append({"run_id": f"d{d}r{r}", "dataset": f"d{d}",
                         "spearman_over_training": within_run_spearman(metric, accuracy),
                         "spearman_beyond_time": within_run_spearman(metric, accuracy, step[:, None])})
    return pl.DataFrame(rows)


def _call(data, effect: float) -> str:
    a = assess(data, "nonzero", 0.0)
    est = Estimate(effect, a.effect_low, a.effect_high, a.n_runs, "runs")
    return Verdict.of(est, "topology.x", "003", "c", "t", "r", "nonzero", negligible=0.1, data=data).row("s", a)[
        "verdict"]


def test_a_metric_that_moves_with_accuracy_only_through_the_step_is_not_supported():
    runs = _over_training_runs(0.0, seed=0)
    data = mean_data(runs, "spearman_over_training", beyond_column="spearman_beyond_time", confound="training time")
    effect = float(runs["spearman_over_training"].mean())
    assert effect > 0.4  # the claim as stated looks strong
    assert _call(data, effect) in ("not supported", "inconclusive")


def test_a_metric_that_moves_with_accuracy_beyond_the_step_is_supported():
    runs = _over_training_runs(2.0, seed=1)
    data = mean_data(runs, "spearman_over_training", beyond_column="spearman_beyond_time", confound="training time")
    assert _call(data, float(runs["spearman_over_training"].mean())) == "supported"


def test_weight_scale_is_the_baseline_of_the_accuracy_correlation():
    # the metric is the weight variance in disguise: its r with accuracy is the variance's, nothing beyond it
    rng = np.random.default_rng(2)
    n = 60
    var = rng.lognormal(0, 1, n)
    acc = np.log(var) + rng.normal(0, 0.5, n)
    cls = pl.DataFrame({"run_id": [f"r{i}" for i in range(n)], "dataset": [f"d{i % 4}" for i in range(n)],
                        "architecture": "a", "final": np.log(var) + rng.normal(0, 0.05, n), "test_metric": acc,
                        "weight_variance": var, "weight_norm": rng.lognormal(0, 1, n)})
    data = across_runs_data(cls, "normalized_entropy", partial=False)
    a = assess(data, "nonzero", 0.0)
    assert a.effect_low > 0.5 and a.baseline_low > 0.5  # strong, and as strong as the weight scale
    assert a.decisive_low < 0.3  # what is left beyond the scale is small
    assert data.confound.startswith("weight scale")


def test_small_clouds_stay_out_of_the_verdicts():
    runs = pl.DataFrame({"run_id": ["a", "b", "c"], "final_points": [3, MIN_CLOUD_POINTS, None]})
    assert eligible(runs)["run_id"].to_list() == ["b"]
