"""The correlation stage's verdicts: run-level within-data-set correlations for the paper's rank,
spectral-spread and adjacent-layer claims (001 §5.5.1, §5.5.4, §5.5.7)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl

from analyses.correlations.families import CONTROL_FOR_DATASET, float_column
from analyses.stats import ClaimData, Estimate, Verdict, within_group_pearson, within_group_r, within_partial_r

#: |r| below this is a negligible correlation (verdict band).
NEGLIGIBLE_R = 0.1
#: Fewest runs (with a finite feature and metric) for a verdict interval.
MIN_RUNS = 6
_SEED = 0

#: (claim_id, source, claim, feature column, metric, predicted)
CLAIMS = (
    ("correlations.s5_5_1_weight_rank", "001 §5.5.1",
     "Lower numerical rank of the weight matrices goes with stronger overfitting",
     "weight_rank_ratio", "gap_loss", "negative"),
    ("correlations.s5_5_1_weight_stable_rank", "001 §5.5.1",
     "Lower (stable) rank of the weight matrices goes with stronger overfitting",
     "stable_rank_ratio", "gap_loss", "negative"),
    ("correlations.s5_5_1_local_hessian_rank", "001 §5.5.1",
     "Lower effective rank of the local Hessian goes with stronger overfitting",
     "local_effective_rank_ratio", "gap_loss", "negative"),
    ("correlations.s5_5_4_hessian_std", "001 §5.5.4",
     "A small standard deviation of the Hessian spectrum goes with worse generalization",
     "loss_std", "gap_loss", "negative"),
    ("correlations.s5_5_4_hessian_relative_std", "001 §5.5.4",
     "A small spread of the Hessian spectrum (std over mean |eigenvalue|) goes with worse generalization",
     "loss_relative_std", "gap_loss", "negative"),
    ("correlations.s5_5_7_adjacent_similarity", "001 §5.5.7",
     "Adjacent layers' weights are alike in healthy networks (similarity goes with quality)",
     "adjacent_similarity", "primary_metric", "positive"),
    ("correlations.004_flatness_top_eigenvalue", "004",
     "Flatter minima generalize better: a smaller loss-Hessian top eigenvalue goes with a smaller gap",
     "ln_loss_top", "gap_loss", "positive"),
    ("correlations.004_flatness_trace", "004",
     "Flatter minima generalize better: a smaller loss-Hessian trace goes with a smaller gap",
     "ln_loss_trace", "gap_loss", "positive"),
)

#: What the baseline of every correlation claim controls, and its columns (per run, last snapshot).
CONFOUND = "fit and training time (final train loss, ln steps)"
CONFOUND_COLUMNS = ("train_loss", "ln_step")


def last_per_run(snaps: pl.DataFrame) -> pl.DataFrame:
    """One row per run: its last spectral snapshot, with ``ln_step`` = ln(1 + step) and the logs of the
    loss-Hessian top eigenvalue and trace (NaN where not positive)."""
    last = snaps.sort(["run_id", "step"]).group_by("run_id", maintain_order=True).last()
    return with_derived(last)


def with_derived(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with ln_step, ln_loss_top and ln_loss_trace (the flatness features, log scale: they
    span orders of magnitude between models)."""
    def ln(c: str) -> pl.Expr:
        col = pl.col(c).cast(pl.Float64)
        return pl.when(col > 0).then(col.log()).otherwise(None)

    return frame.with_columns((pl.col("step").cast(pl.Float64) + 1).log().alias("ln_step"),
                              ln("loss_top").alias("ln_loss_top"), ln("loss_trace").alias("ln_loss_trace"))


def claim_data(runs: pl.DataFrame, feature: str, metric: str, groups: np.ndarray) -> ClaimData:
    """The runs (one row each) behind one claim: the within-group r of feature and metric; the baseline,
    the confound's own within-group r with the metric (final train loss); and the effect beyond it, the
    partial r given final train loss and ln steps (:data:`CONFOUND`)."""
    x, y = float_column(runs, feature), float_column(runs, metric)
    c = np.column_stack([float_column(runs, col) for col in CONFOUND_COLUMNS])
    return ClaimData(runs.select("run_id", "dataset"), lambda i: within_partial_r(x[i], y[i], groups[i]),
                     confound=CONFOUND, baseline=lambda i: within_partial_r(c[i, 0], y[i], groups[i]),
                     baseline_name=f"r(final train loss, {metric})",
                     beyond=lambda i: within_partial_r(x[i], y[i], groups[i], c[i]),
                     beyond_name="partial r given final train loss and ln steps")


def run_level_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Estimate:
    """Within-group r of x, y (n,) over runs (one row each) in groups (n,).

    r, p (nu = n - k - 1), n and k are those of :func:`analyses.stats.within_group_pearson`; the interval
    is the percentile bootstrap over runs of :func:`analyses.stats.within_group_r` (z-scores redone in
    every resample). No interval when r is undefined or fewer than :data:`MIN_RUNS` runs have both values.
    """
    est = replace(within_group_pearson(x, y, groups), unit="runs")
    finite = int((np.isfinite(x) & np.isfinite(y)).sum())
    if not math.isfinite(est.value) or finite < MIN_RUNS:
        return replace(est, low=math.nan, high=math.nan)
    boot = within_group_r(x, y, groups, seed=_SEED, unit="runs")
    return replace(est, low=boot.low, high=boot.high)


def _detail(feature: str, x: np.ndarray, y: np.ndarray, est: Estimate, runs: pl.DataFrame, groups: np.ndarray,
            snapshot_r: Estimate) -> str:
    """How many runs and data sets, why r is undefined if it is, r per task and r over all snapshots."""
    ok = np.isfinite(x) & np.isfinite(y)
    parts = [f"{est.n} runs in {est.groups} data sets (last spectral snapshot; data sets with < 2 runs dropped)"]
    if ok.sum() and np.ptp(x[ok]) == 0:
        parts.append(f"{feature} is constant ({x[ok][0]:.3g}) in every run, so r is undefined")
    for task in ("classification", "regression"):
        sel = ok & (runs["task"].to_numpy() == task)
        task_r = within_group_pearson(x[sel], y[sel], groups[sel])
        parts.append(f"{task}: r = {task_r.value:.3f} (n = {task_r.n})" if math.isfinite(task_r.value)
                     else f"{task}: r n/a (n = {task_r.n})")
    parts.append(f"over all {snapshot_r.n} snapshots (descriptive, mixes training time): r = {snapshot_r.value:.3f}"
                 if math.isfinite(snapshot_r.value) else "over all snapshots: r n/a")
    return "; ".join(parts)


def claim_verdicts(snaps: pl.DataFrame) -> list[Verdict]:
    """One verdict per claim of :data:`CLAIMS` from snapshot rows (with ``stable_rank_ratio``): r over
    runs (their last snapshot) by :func:`run_level_r`, pooled over tasks."""
    runs = last_per_run(snaps)
    snaps = with_derived(snaps)
    groups = runs["dataset"].to_numpy() if CONTROL_FOR_DATASET else np.zeros(runs.height, int)
    snap_groups = snaps["dataset"].to_numpy() if CONTROL_FOR_DATASET else np.zeros(snaps.height, int)
    control = "z-scored within data set, " if CONTROL_FOR_DATASET else ""
    out = []
    for claim_id, source, claim, feature, metric, predicted in CLAIMS:
        x, y = float_column(runs, feature), float_column(runs, metric)
        est = run_level_r(x, y, groups)
        snapshot_r = within_group_pearson(float_column(snaps, feature), float_column(snaps, metric), snap_groups)
        out.append(Verdict.of(
            est, claim_id, source, claim,
            test=(f"Pearson r of {feature} and {metric} over runs (last spectral snapshot), both {control}"
                  "pooled over tasks; 95% CI by bootstrap over runs"),
            effect_name=f"r({feature}, {metric})", predicted=predicted, null_value=0.0, negligible=NEGLIGIBLE_R,
            data=claim_data(runs, feature, metric, groups),
            detail=_detail(feature, x, y, est, runs, groups, snapshot_r)))
    return out
