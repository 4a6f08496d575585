"""The rows behind each topology verdict, for the claim assessment (per data set, pooled across data
sets, with leave-one-out ranges): one row per run (or per train-fraction sweep) with its data set, and
the estimand that decides the call.

A verdict reads only layers whose cloud has at least :data:`MIN_CLOUD_POINTS` distinct neurons at the
run's last snapshot. H0 persistence of n points has n - 1 finite bars, so the normalized entropy of a
3-point cloud is the entropy of two lifetimes (one number in [0, 1] fixed by their ratio) and its mean
lifetime the mean of two distances: such a "topology" is a statement about two pairwise distances.
Eight points (seven bars) is the smallest cloud whose bar distribution has a shape; the verdicts'
detail gives the same estimate at :data:`ALT_MIN_CLOUD_POINTS` so the call can be seen not to hinge on
the exact minimum.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.stats import ClaimData, Concordance, Correlation, Mean
from analyses.topology.runs import CONTROLS, pearson_scale

#: Fewest distinct points (at the last snapshot) of a layer cloud that enters a verdict.
MIN_CLOUD_POINTS = 8
#: The alternative minimum reported beside it.
ALT_MIN_CLOUD_POINTS = 5
#: What the weight-scale rows control.
WEIGHT_SCALE = "weight scale (ln weight variance and norm, partialled out)"


def eligible(runs: pl.DataFrame, min_points: int = MIN_CLOUD_POINTS) -> pl.DataFrame:
    """The rows of ``analysis_topology_runs`` whose cloud had at least ``min_points`` points at the end."""
    return runs.filter(pl.col("final_points").fill_null(0) >= min_points)


def across_runs_data(cls: pl.DataFrame, metric: str, partial: bool) -> ClaimData:
    """Classification runs (one row each) of one (metric, position): the Pearson r of the final metric
    (its Pearson scale) with test accuracy within (data set, architecture) groups, per data set; with
    ``partial``, the partial r given ln weight variance and norm (beside the variance's own r with
    accuracy)."""
    x = pearson_scale(cls["final"].to_numpy(), metric)
    acc = cls["test_metric"].cast(pl.Float64).to_numpy()
    controls = np.column_stack([pearson_scale(cls[c].to_numpy(), c) for c in CONTROLS])
    rows, strata = cls.select("run_id", "dataset"), cls["architecture"].to_numpy()
    if not partial:
        return ClaimData(rows, Correlation(x, acc, strata=strata))
    base = Correlation(controls[:, 0], acc, strata=(cls["dataset"] + "|" + cls["architecture"]).to_numpy())
    return ClaimData(rows, Correlation(x, acc, controls=controls, strata=strata), confound=WEIGHT_SCALE,
                     baseline=lambda i: base.value(i), baseline_name="r(ln weight variance, accuracy)")


def mean_data(frame: pl.DataFrame, column: str, confound: str = "", unit_column: str = "run_id",
              bounds: tuple[float, float] | None = (-1.0, 1.0)) -> ClaimData | None:
    """One row per unit (``unit_column`` as the run id, with ``dataset``) with a finite ``column``; the
    estimand is its mean, its interval clipped to ``bounds`` (a mean of correlations stays in [-1, 1];
    None for an unbounded column)."""
    kept = frame.filter(pl.col(column).is_not_null() & pl.col(column).is_finite())
    if kept.height == 0:
        return None
    v = kept[column].cast(pl.Float64).to_numpy()
    return ClaimData(kept.select(pl.col(unit_column).alias("run_id"), "dataset"), Mean(v, bounds=bounds),
                     confound=confound)


def sign_data(frame: pl.DataFrame, column: str, confound: str = "", unit_column: str = "run_id") -> ClaimData | None:
    """One row per unit with a finite ``column`` (a correlation over a few points, such as a sweep's five
    fractions, where every unit can agree): the share of units with a positive value (ties at 0 half),
    with a Wilson interval on the effective number of units."""
    kept = frame.filter(pl.col(column).is_not_null() & pl.col(column).is_finite())
    if kept.height == 0:
        return None
    return ClaimData(kept.select(pl.col(unit_column).alias("run_id"), "dataset"),
                     Concordance(kept[column].cast(pl.Float64).to_numpy(), +1), confound=confound)
