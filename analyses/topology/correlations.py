"""The tests of ``analysis_topology_correlations``, per (metric, layer position), from the per-run rows.

Across classification runs (one row per run, its last snapshot), within (data set, architecture)
groups (:func:`analyses.stats.within_group_r`); within runs, the mean of the per-run Spearman r over
training; within train-fraction sweeps, the mean of the per-sweep Spearman r between fraction and
final metric. Means of correlations carry t intervals over runs or sweeps, clipped to [-1, 1].
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl

from analyses.kit.features import POSITIONS
from analyses.stats import Estimate, bh_adjust, mean_ci, spearman, within_group_r
from analyses.topology.runs import CONTROLS, METRICS, pearson_scale
from analyses.topology.schema import polars_schema

#: Fewest distinct train fractions for a group of runs to count as a sweep.
MIN_SWEEP_FRACTIONS = 3


def sweep_spearman(frame: pl.DataFrame) -> pl.DataFrame:
    """Per sweep (rows of one metric and position with ``sweep``, ``train_fraction``, ``final``), the
    Spearman r between train fraction and the final metric, for sweeps with at least
    MIN_SWEEP_FRACTIONS distinct fractions and a finite, non-constant metric."""
    rows = []
    for (sweep,), g in frame.filter(pl.col("final").is_not_null()).group_by(["sweep"], maintain_order=True):
        frac, value = g["train_fraction"].to_numpy(), g["final"].to_numpy().astype(float)
        ok = np.isfinite(value)
        if len(np.unique(frac[ok])) < MIN_SWEEP_FRACTIONS or np.ptp(value[ok]) == 0:
            continue
        rows.append({"sweep": sweep, "dataset": g["dataset"][0],
                     "spearman": spearman(frac[ok], value[ok])})
    return pl.DataFrame(rows, schema={"sweep": pl.Utf8, "dataset": pl.Utf8, "spearman": pl.Float64})


def mean_r(values: np.ndarray, unit: str, datasets: int) -> Estimate:
    """Mean of correlations (n,) with its t interval (:func:`analyses.stats.mean_ci`) clipped to [-1, 1]
    (a mean of r cannot leave it), over the finite values."""
    e = mean_ci(values, unit)
    return dataclasses.replace(e, low=max(e.low, -1.0) if math.isfinite(e.low) else e.low,
                               high=min(e.high, 1.0) if math.isfinite(e.high) else e.high, datasets=datasets)


def _row(metric: str, position: str, analysis: str, method: str, e: Estimate) -> dict:
    return {"metric": metric, "position": position, "analysis": analysis, "method": method, "estimate": e.value,
            "ci_low": e.low, "ci_high": e.high, "p_value": e.p, "n": e.n, "n_unit": e.unit, "n_groups": e.groups,
            "n_datasets": e.datasets}


def _across_runs(metric: str, position: str, cls: pl.DataFrame) -> list[dict]:
    """The across-runs and within-run rows of one (metric, position) over its classification runs."""
    # Like with like: accuracy and the weights' scale both differ by data set and by model.
    groups = (cls["dataset"] + "|" + cls["architecture"]).to_numpy()
    x = pearson_scale(cls["final"].to_numpy(), metric)
    acc = cls["test_metric"].to_numpy().astype(float)
    controls = np.column_stack([pearson_scale(cls[c].to_numpy(), c) for c in CONTROLS])
    out = [_row(metric, position, "accuracy_across_runs", method, within_group_r(x, acc, groups, method=method))
           for method in ("pearson", "spearman")]
    out.append(_row(metric, position, "accuracy_beyond_variance", "partial", within_group_r(x, acc, groups, controls)))
    out.append(_row(metric, position, "metric_vs_ln_variance", "pearson", within_group_r(x, controls[:, 0], groups)))
    if metric == METRICS[0]:  # the baselines' own relation with accuracy, once per position
        for j, control in enumerate(CONTROLS):
            out.append(_row(control, position, "accuracy_across_runs", "pearson",
                            within_group_r(controls[:, j], acc, groups)))
    for column, analysis, method in (
            ("spearman_over_training", "accuracy_over_training", "mean within-run spearman"),
            ("partial_spearman_over_training", "accuracy_over_training_beyond_variance",
             "mean within-run partial spearman")):
        values = cls[column].cast(pl.Float64).fill_null(math.nan).to_numpy()
        kept = cls.filter(pl.col(column).is_not_null())
        out.append(_row(metric, position, analysis, method, mean_r(values, "runs", kept["dataset"].n_unique())))
    return out


def correlation_table(runs: pl.DataFrame) -> pl.DataFrame:
    """``analysis_topology_correlations`` from ``analysis_topology_runs``: per metric of METRICS and layer
    position present, the across-runs and within-run rows (classification runs with a final metric and
    test accuracy) and the train-fraction row (every task); ``p_adjusted`` is Benjamini-Hochberg over
    every finite p of the table. NaN is stored as NULL."""
    rows = []
    positions = [p for p in POSITIONS if p in set(runs["position"].to_list())]
    for metric in METRICS:
        for position in positions:
            g = runs.filter((pl.col("metric") == metric) & (pl.col("position") == position))
            cls = g.filter((pl.col("task") == "classification") & pl.col("final").is_not_null()
                           & pl.col("test_metric").is_not_null())
            if cls.height:
                rows += _across_runs(metric, position, cls)
            per = sweep_spearman(g)
            rows.append(_row(metric, position, "train_fraction", "mean within-sweep spearman",
                             mean_r(per["spearman"].to_numpy(), "sweeps", per["dataset"].n_unique())))
    adjusted = bh_adjust(np.array([r["p_value"] for r in rows], float))
    for r, a in zip(rows, adjusted, strict=True):
        r["p_adjusted"] = float(a)
    return pl.DataFrame(rows, schema=polars_schema("analysis_topology_correlations")).with_columns(
        pl.col(pl.Float64).fill_nan(None))
