"""The correlation stage's verdicts: run-level within-data-set correlations for the paper's rank,
spectral-spread and adjacent-layer claims (001 §5.5.1, §5.5.4, §5.5.7) and paper 004's flatness claim.

Each claim has two rows. The paper's test: Pearson r of the feature and the metric over runs (their
last spectral snapshot) within each data set, pooled across data sets by random effects. The
sharpened test (``<claim>.beyond_time``): the same r partial on ln steps, since training longer both
lowers ranks and spreads spectra and widens the gap. The final train loss is not partialled out: a
network that overfits fits its training set closely, so the train loss carries part of the effect
the claim is about (a mediator, not a confound)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl

from analyses.correlations.families import CONTROL_FOR_DATASET, float_column
from analyses.stats import (
    ClaimData,
    Correlation,
    Estimate,
    Verdict,
    within_group_pearson,
    within_group_r,
    within_partial_r,
)

#: |r| below this is a negligible correlation (verdict band).
NEGLIGIBLE_R = 0.1
BAND_UNITS = "correlation r"
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

#: What the sharpened row of every correlation claim controls, and its column (per run, last snapshot).
CONFOUND = "training time (ln steps, partialled out)"
CONFOUND_COLUMN = "ln_step"


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


def claim_data(runs: pl.DataFrame, feature: str, metric: str, sharpened: bool) -> ClaimData:
    """The runs (one row each) behind one claim: the within-data-set r of feature and metric (the
    paper's test) or, ``sharpened``, its partial r given ln steps (:data:`CONFOUND`), beside the
    confound's own within-data-set r with the metric."""
    x, y = float_column(runs, feature), float_column(runs, metric)
    rows = runs.select("run_id", "dataset")
    if not sharpened:
        return ClaimData(rows, Correlation(x, y))
    t = float_column(runs, CONFOUND_COLUMN)
    groups = runs["dataset"].to_numpy()
    return ClaimData(rows, Correlation(x, y, controls=t), confound=CONFOUND,
                     baseline=lambda i: within_partial_r(t[i], y[i], groups[i]),
                     baseline_name=f"within-data-set r(ln steps, {metric})")


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
    """Two verdicts per claim of :data:`CLAIMS` from snapshot rows (with ``stable_rank_ratio``): the
    paper's test and the sharpened one (module doc), pooled over tasks. The stage's own estimate beside
    each is the pooled within-data-set r over runs with its bootstrap interval (:func:`run_level_r`)."""
    runs = last_per_run(snaps)
    snaps = with_derived(snaps)
    groups = runs["dataset"].to_numpy() if CONTROL_FOR_DATASET else np.zeros(runs.height, int)
    snap_groups = snaps["dataset"].to_numpy() if CONTROL_FOR_DATASET else np.zeros(snaps.height, int)
    out = []
    for claim_id, source, claim, feature, metric, predicted in CLAIMS:
        x, y = float_column(runs, feature), float_column(runs, metric)
        est = run_level_r(x, y, groups)
        snapshot_r = within_group_pearson(float_column(snaps, feature), float_column(snaps, metric), snap_groups)
        detail = _detail(feature, x, y, est, runs, groups, snapshot_r)
        common = {"predicted": predicted, "null_value": 0.0, "negligible": NEGLIGIBLE_R, "band_units": BAND_UNITS}
        out.append(Verdict.of(
            est, claim_id, source, claim,
            test=(f"Pearson r of {feature} and {metric} over runs (last spectral snapshot) within each data set, "
                  "pooled across data sets by random effects on Fisher's z (the paper's test)"),
            effect_name=f"r({feature}, {metric})", data=claim_data(runs, feature, metric, False), detail=detail,
            **common))
        t = float_column(runs, CONFOUND_COLUMN)
        partial = within_group_r(x, y, groups, controls=t, seed=_SEED, unit="runs")
        out.append(Verdict.of(
            partial, f"{claim_id}.beyond_time", source, claim + " (beyond training time)",
            test=(f"partial Pearson r of {feature} and {metric} given ln steps, over runs within each data set, "
                  "pooled across data sets by random effects on Fisher's z (the sharpened test; the final "
                  "train loss, a mediator of overfitting, is not partialled out)"),
            effect_name=f"partial r({feature}, {metric} | ln steps)", data=claim_data(runs, feature, metric, True),
            role="sharpened", pair=claim_id, detail=detail, **common))
    return out
