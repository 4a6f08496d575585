"""Topology verdicts against their confounds, over simulated corpora: a metric that tracks accuracy over
training only because both move with the step holds as stated but is supported beyond the step in at most
5 % of corpora; one that tracks it beyond the step is supported; a metric that is the weight scale in
disguise is never supported beyond the weight scale; clouds below the minimum size stay out."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.stats import Estimate, Verdict, assess
from analyses.topology.claims import MIN_CLOUD_POINTS, across_runs_data, eligible, mean_data
from analyses.topology.runs import within_run_spearman

CORPORA = 40


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


def _call(data) -> str:
    a = assess(data, "nonzero", 0.0)
    return Verdict.of(Estimate.missing(a.n_runs, "runs"), "topology.x", "003", "c", "t", "r", "nonzero",
                      negligible=0.1, band_units="r", data=data).row("s", a)["verdict"]


def test_a_metric_that_moves_with_accuracy_only_through_the_step_is_not_supported_beyond_it():
    runs = _over_training_runs(0.0, seed=0)
    assert _call(mean_data(runs, "spearman_over_training")) == "supported"  # the claim as stated holds
    calls = [_call(mean_data(_over_training_runs(0.0, seed=s), "spearman_beyond_time", confound="training time"))
             for s in range(CORPORA)]
    assert calls.count("supported") <= 0.05 * CORPORA


def test_a_metric_that_moves_with_accuracy_beyond_the_step_is_supported():
    runs = _over_training_runs(2.0, seed=1)
    assert _call(mean_data(runs, "spearman_beyond_time", confound="training time")) == "supported"


def _scale_runs(seed: int) -> pl.DataFrame:
    """The metric is the weight variance in disguise: its r with accuracy is the variance's, nothing more."""
    rng = np.random.default_rng(seed)
    n = 72
    var = rng.lognormal(0, 1, n)
    acc = np.log(var) + rng.normal(0, 0.5, n)
    return pl.DataFrame({"run_id": [f"r{i}" for i in range(n)], "dataset": [f"d{i % 6}" for i in range(n)],
                         "architecture": "a", "final": np.log(var) + rng.normal(0, 0.05, n), "test_metric": acc,
                         "weight_variance": var, "weight_norm": rng.lognormal(0, 1, n)})


def test_weight_scale_in_disguise_holds_as_stated_but_never_beyond_the_scale():
    cls = _scale_runs(2)
    paper = across_runs_data(cls, "normalized_entropy", partial=False)
    sharp = across_runs_data(cls, "normalized_entropy", partial=True)
    a, b = assess(paper, "nonzero", 0.0), assess(sharp, "nonzero", 0.0)
    assert a.low > 0.5 and b.baseline > 0.5  # strong, and as strong as the weight scale
    assert sharp.confound.startswith("weight scale")
    calls = [_call(across_runs_data(_scale_runs(s), "normalized_entropy", partial=True)) for s in range(CORPORA)]
    assert calls.count("supported") <= 0.05 * CORPORA


def test_small_clouds_stay_out_of_the_verdicts():
    runs = pl.DataFrame({"run_id": ["a", "b", "c"], "final_points": [3, MIN_CLOUD_POINTS, None]})
    assert eligible(runs)["run_id"].to_list() == ["b"]


def test_the_fixed_step_train_fraction_row_reads_only_fixed_step_sweeps_on_the_scale_free_lifetime():
    """Two designs of the same sweeps: at fixed epochs the raw lifetime grows with the fraction (more steps,
    larger weights); at fixed steps the scale-free lifetime does not. The paper's row sees the first, the
    sharpened row reads only the second."""
    from analyses.topology.verdicts import claim_data

    rng = np.random.default_rng(5)
    rows, fixed = [], set()
    for d in range(6):
        for design in ("epochs", "steps"):
            for s in range(3):
                sweep = f"d{d}-{design}-{s}"
                for f in (0.1, 0.25, 0.5, 1.0):
                    run = f"{sweep}-{f}"
                    if design == "steps":
                        fixed.add(run)
                    grow = np.log(f) if design == "epochs" else 0.0
                    for metric, value in (("mean_lifetime", np.exp(grow + 0.1 * rng.normal())),
                                          ("mean_lifetime_scaled", np.exp(0.3 * rng.normal()))):
                        rows.append({"run_id": run, "dataset": f"d{d}", "sweep": sweep, "train_fraction": f,
                                     "metric": metric, "position": "first", "final": value,
                                     "task": "classification", "test_metric": 0.9})
    runs = pl.DataFrame(rows)
    paper = claim_data(runs, "mean_lifetime", "first", "train_fraction", fixed)
    sharp = claim_data(runs, "mean_lifetime", "first", "train_fraction.fixed_steps", fixed)
    assert paper.rows.height == 36 and sharp.rows.height == 18  # every sweep, then the fixed-step ones
    assert sharp.confound.startswith("optimizer steps")

    def share_call(data) -> str:  # a share of sweeps with r > 0 against one half
        a = assess(data, "nonzero", 0.5)
        return Verdict.of(Estimate.missing(a.n_runs, "sweeps"), "topology.x", "003", "c", "t", "share", "nonzero",
                          null_value=0.5, negligible=0.05, band_units="share", data=data).row("s", a)["verdict"]

    assert share_call(paper) == "supported" and share_call(sharp) != "supported"
