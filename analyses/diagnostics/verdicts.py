"""The seven verdicts on the claims the rules rest on (001 Claim 2, §5.2, §5.5.2, §5.5.3, §5.5.5, §5.5.6).

Correlations over layer snapshots resample whole runs (:func:`clustered_correlation`): a run's
snapshots are not independent, so n counts runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from analyses.stats import Estimate, Verdict, cluster_bootstrap, mean_ci, pearson, pearson_ci

#: Verdict §5.5.5: the band around the null ratio 1 inside which a precisely measured bias share
#: counts as "no more than its baseline" (10% of the baseline).
NEGLIGIBLE_BIAS_RATIO = 0.1


def finite_pairs(data: pl.DataFrame, x: str, y: str, cluster: str = "run_id") -> pl.DataFrame:
    """The rows of ``data`` (cluster, x, y) where both x and y are finite."""
    return data.select(cluster, x, y).filter(pl.col(x).is_finite() & pl.col(y).is_finite())


def clustered_correlation(data: pl.DataFrame, x: str, y: str, cluster: str = "run_id", seed: int = 0) -> Estimate:
    """Pearson r(x, y) over the rows of ``data`` where both are finite, with a percentile interval from a
    cluster bootstrap over ``cluster`` (n = the number of clusters, in runs); no estimate below 4 rows."""
    data = finite_pairs(data, x, y, cluster)
    if data.height < 4:
        return Estimate.missing(data.select(pl.col(cluster).n_unique()).item(), "runs")
    return cluster_bootstrap(data, cluster, lambda f: pearson(f[x].to_numpy(), f[y].to_numpy()), seed=seed,
                             unit="runs")


def verdict_saturation(frame: pl.DataFrame) -> Verdict:
    """001 Claim 2 / §5.2: r(saturation_fraction, local_excess_near_zero) over ``local_eligible``
    layer snapshots, cluster bootstrap by run; predicted positive."""
    data = frame.filter(pl.col("local_eligible").fill_null(False))
    x, y = "saturation_fraction", "local_excess_near_zero"
    return Verdict.of(
        clustered_correlation(data, x, y), "diagnostics.saturation_near_zero", "001 Claim 2 / §5.2",
        "Saturated layers show local-Hessian eigenvalues piled near zero",
        "Pearson r between saturation fraction and the local Hessian's non-structural near-zero eigenvalue "
        "fraction over non-ReLU hidden-layer snapshots; 95% CI by cluster bootstrap over runs",
        "r(saturation, near-zero fraction)", "positive", detail=f"{finite_pairs(data, x, y).height} layer snapshots")


def verdict_normalization(comparison: pl.DataFrame) -> Verdict:
    """001 §5.2 normalization: (saturation with norm - without) per matched pair, averaged per unnormalized
    twin first (pairs sharing a twin are not independent), then a t interval over twins; predicted negative."""
    pairs = comparison.filter((pl.col("metric") == "saturation_fraction") & pl.col("difference").is_finite())
    per_twin = pairs.group_by("twin_run_id").agg(pl.col("difference").mean()) if pairs.height else pairs
    estimate = mean_ci(per_twin["difference"].to_numpy() if pairs.height else np.array([]), "unnormalized twins")
    datasets = sorted(set(comparison["dataset"].to_list()))
    return Verdict.of(
        estimate, "diagnostics.normalization_saturation", "001 §5.2",
        "Normalization layers keep activations out of saturation",
        "difference in run-mean hidden-layer saturation fraction between a normalized run and the identical run "
        "without normalization, averaged per unnormalized twin; t interval over twins",
        "mean saturation difference (with - without)", "negative", with_p=False,
        detail=f"{pairs.height} matched pairs; data sets: {', '.join(datasets) or 'none'}")


def run_means(frame: pl.DataFrame, column: str, rows: pl.Expr) -> np.ndarray:
    """Per run, the mean of ``column`` over the rows selected by ``rows`` (finite values)."""
    return (frame.filter(rows.fill_null(False) & pl.col(column).is_finite())
            .group_by("run_id").agg(pl.col(column).mean()).sort("run_id")[column].to_numpy())


def verdict_bias(frame: pl.DataFrame, kind: str) -> Verdict:
    """001 §5.5.5 for ``kind`` in (local, loss): mean over runs of the run-mean bias_share_ratio
    (local: ``local_eligible`` layers; loss: every layer) against the null 1, the share bias
    coordinates would carry with no structure; predicted positive (more than the baseline), t interval
    over runs, negligible band NEGLIGIBLE_BIAS_RATIO. The verdict rests on the interval; p_value stays NULL."""
    rows = pl.col("local_eligible") if kind == "local" else pl.lit(True)
    what = "non-ReLU hidden layers" if kind == "local" else "all layers"
    return Verdict.of(
        mean_ci(run_means(frame, f"{kind}_bias_share_ratio", rows), "runs"), f"diagnostics.bias_share_{kind}",
        "001 §5.5.5", "Bias parameters carry a real share of the Hessian spectrum (more than their coordinate count)",
        f"mean over runs of the run-mean {kind}-Hessian bias share over its no-structure baseline 1/(d+1) "
        f"({what}); t interval over runs",
        f"mean {kind} bias share ratio", "positive", with_p=False, null_value=1.0, negligible=NEGLIGIBLE_BIAS_RATIO)


def verdict_saddle(frame: pl.DataFrame) -> Verdict:
    """001 §5.5.6: r(loss_symmetry, log10 relative_grad_norm) over hidden layers with an indefinite
    loss-Hessian block (``local_eligible``; ReLU blocks are PSD, symmetry identically 2), first snapshot
    excluded; cluster bootstrap by run; predicted positive."""
    data = frame.filter(pl.col("local_eligible").fill_null(False) & ~pl.col("is_first_snapshot")
                        & (pl.col("relative_grad_norm") > 0)).with_columns(
        log_relative_grad=pl.col("relative_grad_norm").log10())
    x, y = "loss_symmetry", "log_relative_grad"
    return Verdict.of(
        clustered_correlation(data, x, y), "diagnostics.symmetry_gradient", "001 §5.5.6",
        "A spectrum symmetric about zero marks a saddle with small gradients",
        "Pearson r between loss-Hessian symmetry W1(λ,-λ)/mean|λ| (0 = symmetric) and log10 of the layer's "
        "gradient norm over its first-snapshot norm, non-ReLU hidden layers after the first snapshot; "
        "cluster bootstrap over runs",
        "r(symmetry, log relative gradient)", "positive", detail=f"{finite_pairs(data, x, y).height} layer snapshots")


def verdict_last_layers(pairs: pl.DataFrame, snapshots: pl.DataFrame) -> Verdict:
    """001 §5.5.2: at each run's last snapshot, r(last minus first hidden layer local-Hessian excess
    near-zero fraction, gap_loss), Fisher-z interval over runs; predicted positive.
    pairs: :func:`analyses.diagnostics.rules.last_minus_first_near_zero`; snapshots: run_id, step, gap_loss."""
    last = pairs.sort("step").group_by("run_id").agg(pl.col("step").last(), pl.col("difference").last())
    data = last.join(snapshots.select("run_id", "step", "gap_loss"), on=["run_id", "step"], how="inner")
    # one row per run: the Fisher-z interval's n counts runs
    estimate = dataclasses.replace(pearson_ci(data["difference"].to_numpy(), data["gap_loss"].to_numpy()), unit="runs")
    return Verdict.of(
        estimate, "diagnostics.last_layer_near_zero_gap", "001 §5.5.2",
        "Small local-Hessian eigenvalues concentrated in the last layers go with worse generalization",
        "Pearson r between (last hidden layer minus layer 0) local-Hessian excess near-zero fraction and the "
        "test-train loss gap, at each run's last snapshot (networks with >= 2 non-ReLU hidden layers)",
        "r(near-zero difference, gap_loss)", "positive")


def loss_decrease_pairs(snapshots: pl.DataFrame) -> pl.DataFrame:
    """Consecutive snapshot pairs per run: (run_id, step, interval, alignment at k, decrease_rate =
    (L_k - L_{k+1}) / L_k / (ln(s_{k+1} + 1) - ln(s_k + 1)), the relative train-loss decrease per e-fold
    of steps, so intervals of the log-spaced schedule compare), and both z-scored across runs within the
    interval index k (``alignment_z``, ``decrease_z``): alignment and loss decrease both drift over
    training, and comparing runs at the same point of training keeps that drift out of the correlation.
    snapshots: run_id, step, alignment, train_loss."""
    s = snapshots.sort("run_id", "step").with_columns(
        next_loss=pl.col("train_loss").shift(-1).over("run_id"),
        next_step=pl.col("step").shift(-1).over("run_id"),
        interval=pl.col("step").rank("ordinal").over("run_id"))
    s = (s.filter(pl.col("next_loss").is_not_null() & (pl.col("train_loss") > 0))
         .with_columns(decrease_rate=(pl.col("train_loss") - pl.col("next_loss")) / pl.col("train_loss")
                       / ((pl.col("next_step") + 1).log() - (pl.col("step") + 1).log())))

    # z-scores by the sample std within each interval index; an interval with one run or no spread gives
    # NULL/NaN and drops out (stats.standardize_within divides by the population std and maps those to 0:
    # with intervals of unequal size that reweights them and changes r)
    def z(c: str) -> pl.Expr:
        return ((pl.col(c) - pl.col(c).mean().over("interval")) / pl.col(c).std().over("interval")).alias(f"{c}_z")

    return (s.filter(pl.col("alignment").is_finite() & pl.col("decrease_rate").is_finite())
            .with_columns(z("alignment"), z("decrease_rate").alias("decrease_z"))
            .select("run_id", "step", "interval", "alignment", "decrease_rate", "alignment_z", "decrease_z"))


def verdict_rigid(snapshots: pl.DataFrame) -> Verdict:
    """001 §5.5.3: r(layer-mean alignment at snapshot k, train-loss decrease per e-fold of steps from k to
    k+1), both z-scored within the interval index across runs; cluster bootstrap by run; predicted negative."""
    data = loss_decrease_pairs(snapshots)
    x, y = "alignment_z", "decrease_z"
    return Verdict.of(
        clustered_correlation(data, x, y), "diagnostics.alignment_progress", "001 §5.5.3",
        "High weight-gradient alignment marks a rigid direction where the optimizer stalls",
        "Pearson r between the snapshot's layer-mean weight-gradient alignment and the relative train-loss "
        "decrease per e-fold of steps to the next spectral snapshot, both z-scored across runs at the same "
        "snapshot index (keeps the common drift over training out); cluster bootstrap over runs",
        "r(alignment, loss decrease rate | snapshot index)", "negative",
        detail=f"{finite_pairs(data, x, y).height} snapshot intervals")
