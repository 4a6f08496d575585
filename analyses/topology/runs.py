"""Per run: the train-fraction sweep a run belongs to, and each (run, layer, metric)'s change over training
and within-run Spearman correlation with test accuracy (``analysis_topology_runs``)."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
from scipy import stats

from analyses.stats import partial_residuals, pearson_rows, spearman
from analyses.topology.schema import polars_schema

#: Metrics of ``layer_topology`` the stage studies; the paper's two first.
METRICS = ("normalized_entropy", "mean_lifetime", "mean_lifetime_scaled", "entropy", "normalized_entropy_log_total")
#: Metrics read on a log scale by Pearson r and by the change over training (ln ratio).
LOG_METRICS = ("mean_lifetime", "mean_lifetime_scaled")
#: The baseline's controls, read on a log scale like LOG_METRICS.
CONTROLS = ("weight_variance", "weight_norm")


def sweep_id(config_json: str) -> str:
    """The run's configuration without ``train_fraction``: runs sharing it form one train-fraction sweep."""
    config = json.loads(config_json)
    config.pop("train_fraction", None)
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def pearson_scale(values: np.ndarray, metric: str) -> np.ndarray:
    """``values`` (n,) on the scale Pearson r reads ``metric`` on: ln for LOG_METRICS and CONTROLS (NaN
    where not positive), as they are otherwise."""
    v = np.asarray(values, float)
    if metric in LOG_METRICS or metric in CONTROLS:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
    return v


def metric_change(initial: float | None, final: float | None, metric: str) -> float | None:
    """The change of a metric over training: final - initial, or ln(final / initial) for LOG_METRICS."""
    if initial is None or final is None or not (math.isfinite(initial) and math.isfinite(final)):
        return None
    if metric in LOG_METRICS:
        return math.log(final / initial) if initial > 0 and final > 0 else None
    return final - initial


def within_run_spearman(metric: np.ndarray, accuracy: np.ndarray,
                        controls: np.ndarray | None = None) -> float | None:
    """Spearman r over one run's snapshots (arrays (s,)) between a metric and test accuracy; with
    ``controls`` (s, k), the partial Spearman r: Pearson r of the ranks' residuals on the controls'
    ranks, 0 when the metric's ranks are wholly explained by the controls'. None with fewer than
    3 + k finite snapshots, a constant series, or an accuracy wholly explained by the controls."""
    c = np.zeros((len(metric), 0)) if controls is None else np.asarray(controls, float).reshape(len(metric), -1)
    ok = np.isfinite(metric) & np.isfinite(accuracy) & np.isfinite(c).all(axis=1)
    k = c.shape[1]
    if ok.sum() < 3 + k or np.ptp(metric[ok]) == 0 or np.ptp(accuracy[ok]) == 0:
        return None
    if k == 0:
        return spearman(metric[ok], accuracy[ok])
    ranks = stats.rankdata(c[ok], axis=0)
    res_metric = partial_residuals(stats.rankdata(metric[ok]), ranks)
    res_accuracy = partial_residuals(stats.rankdata(accuracy[ok]), ranks)
    if not np.any(res_accuracy):
        return None  # accuracy itself is a function of the controls: nothing left to explain
    if not np.any(res_metric):
        return 0.0  # the metric's ranks are the controls': it carries no information beyond them
    return float(pearson_rows(res_metric, res_accuracy))


def run_rows(snapshots: pl.DataFrame) -> pl.DataFrame:
    """``analysis_topology_runs`` from ``analysis_topology_snapshots``: one row per (run, layer, metric) of
    METRICS, in the order the (run, layer) pairs first appear. The within-run correlations are for
    classification runs only (NULL otherwise); their controls are ln weight variance and ln weight norm, and
    for ``spearman_beyond_time`` the step (training time, which drives both the metric and accuracy).
    ``final_points`` is the cloud's size at the last snapshot."""
    rows = []
    for (run_id, layer_index), g in snapshots.group_by(["run_id", "layer_index"], maintain_order=True):
        g = g.sort("step")
        first, last = g.row(0, named=True), g.row(g.height - 1, named=True)
        accuracy = g["test_metric"].cast(pl.Float64).fill_null(math.nan).to_numpy()
        controls = np.column_stack([pearson_scale(g[c].to_numpy(), c) for c in CONTROLS])
        steps = g["step"].cast(pl.Float64).to_numpy()
        classification = last["task"] == "classification"
        for metric in METRICS:
            values = g[metric].cast(pl.Float64).fill_null(math.nan).to_numpy()
            rows.append({
                "run_id": run_id, "layer_index": layer_index, "position": last["position"], "metric": metric,
                "dataset": last["dataset"], "task": last["task"], "size": last["size"],
                "architecture": last["architecture"], "train_fraction": last["train_fraction"],
                "seed": last["seed"], "sweep": last["sweep"], "final_step": last["step"],
                "n_snapshots": g.height, "initial": first[metric], "final": last[metric],
                "change": metric_change(first[metric], last[metric], metric),
                "spearman_over_training": within_run_spearman(values, accuracy) if classification else None,
                "partial_spearman_over_training": (within_run_spearman(values, accuracy, controls)
                                                   if classification else None),
                "spearman_beyond_time": (within_run_spearman(values, accuracy, steps[:, None])
                                         if classification else None),
                "final_points": last["n_points"],
                "weight_variance": last["weight_variance"], "weight_norm": last["weight_norm"],
                "test_metric": last["test_metric"], "test_metric_name": last["test_metric_name"]})
    return pl.DataFrame(rows, schema=polars_schema("analysis_topology_runs"))
