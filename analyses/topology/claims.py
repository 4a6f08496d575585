"""The rows behind each topology verdict, for the claim assessment (two-level intervals, baselines,
leave-one-out): one row per run (or per train-fraction sweep) with its data set, and the statistics
recomputed on any resample of them.

A verdict reads only layers whose cloud has at least :data:`MIN_CLOUD_POINTS` distinct neurons at the
run's last snapshot. H0 persistence of n points has n - 1 finite bars, so the normalized entropy of a
3-point cloud is the entropy of two lifetimes (one number in [0, 1] fixed by their ratio) and its mean
lifetime the mean of two distances: such a "topology" is a statement about two pairwise distances.
Eight points (seven bars) is the smallest cloud whose bar distribution has a shape; the verdicts'
detail gives the same estimate at :data:`ALT_MIN_CLOUD_POINTS` so the call can be seen not to hinge on
the exact minimum.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.stats import ClaimData, within_partial_r
from analyses.topology.runs import CONTROLS, pearson_scale

#: Fewest distinct points (at the last snapshot) of a layer cloud that enters a verdict.
MIN_CLOUD_POINTS = 8
#: The alternative minimum reported beside it.
ALT_MIN_CLOUD_POINTS = 5


def eligible(runs: pl.DataFrame, min_points: int = MIN_CLOUD_POINTS) -> pl.DataFrame:
    """The rows of ``analysis_topology_runs`` whose cloud had at least ``min_points`` points at the end."""
    return runs.filter(pl.col("final_points").fill_null(0) >= min_points)


def _within_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray, controls: np.ndarray | None) -> float:
    return within_partial_r(x, y, groups, controls)


def across_runs_data(cls: pl.DataFrame, metric: str, partial: bool) -> ClaimData:
    """Classification runs (one row each) of one (metric, position): the within-(data set, architecture)
    Pearson r of the final metric (its Pearson scale) with test accuracy. ``partial``: the claim is the r
    beyond ln weight variance and norm (controlled in the statistic); otherwise the plain r, with the
    controls' own r as the baseline and the partial r as the effect beyond it."""
    groups = (cls["dataset"] + "|" + cls["architecture"]).to_numpy()
    x = pearson_scale(cls["final"].to_numpy(), metric)
    acc = cls["test_metric"].cast(pl.Float64).to_numpy()
    controls = np.column_stack([pearson_scale(cls[c].to_numpy(), c) for c in CONTROLS])
    rows = cls.select("run_id", "dataset")
    if partial:
        return ClaimData(rows, lambda i: _within_r(x[i], acc[i], groups[i], controls[i]),
                         confound="weight scale (ln weight variance and norm, partialled in the statistic)")
    return ClaimData(rows, lambda i: _within_r(x[i], acc[i], groups[i], None),
                     confound="weight scale (ln weight variance and norm)",
                     baseline=lambda i: _within_r(controls[i, 0], acc[i], groups[i], None),
                     baseline_name="r(ln weight variance, accuracy)",
                     beyond=lambda i: _within_r(x[i], acc[i], groups[i], controls[i]),
                     beyond_name="partial r given ln weight variance and norm")


def mean_data(frame: pl.DataFrame, column: str, beyond_column: str | None = None, confound: str = "",
              unit_column: str = "run_id") -> ClaimData | None:
    """One row per unit (``unit_column`` as the run id, with ``dataset``) with a finite ``column``; the
    statistic is its mean. With ``beyond_column``, the mean of that column over the same units is the
    effect beyond ``confound``."""
    kept = frame.filter(pl.col(column).is_not_null() & pl.col(column).is_finite())
    if kept.height == 0:
        return None
    v = kept[column].cast(pl.Float64).to_numpy()
    rows = kept.select(pl.col(unit_column).alias("run_id"), "dataset")
    if beyond_column is None:
        return ClaimData(rows, lambda i: float(v[i].mean()), confound=confound)
    b = kept[beyond_column].cast(pl.Float64).fill_null(math.nan).to_numpy()

    def beyond(i: np.ndarray) -> float:
        w = b[i]
        return float(np.nanmean(w)) if np.isfinite(w).any() else math.nan

    return ClaimData(rows, lambda i: float(v[i].mean()), confound=confound, beyond=beyond,
                     beyond_name=f"mean {beyond_column}")
