"""The seven verdicts on the claims the rules rest on (001 Claim 2, §5.2, §5.5.2, §5.5.3, §5.5.5, §5.5.6).

Correlations over layer snapshots resample whole runs (:func:`clustered_correlation`): a run's
snapshots are not independent, so n counts runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from analyses.stats import (
    ClaimData,
    Estimate,
    Verdict,
    cluster_bootstrap,
    mean_ci,
    partial_residuals,
    pearson,
    pearson_ci,
)

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


#: |r| below this is a negligible correlation (the band of the four correlation verdicts, as elsewhere).
NEGLIGIBLE_R = 0.1
#: The confound of the correlations over layer snapshots: both sides drift with training time.
TIME = "training time (ln(1 + step), partialled out)"


def _partial(x: np.ndarray, y: np.ndarray, controls: np.ndarray) -> float:
    """Pearson r of the residuals of x and y (n,) on [1, controls (n, c)]; NaN below 4 rows."""
    if len(x) < 4:
        return float("nan")
    return pearson(partial_residuals(x, controls), partial_residuals(y, controls))


def snapshot_claim_data(data: pl.DataFrame, x: str, y: str) -> ClaimData | None:
    """Layer snapshots (rows with run_id, dataset, step and finite x, y; a run's rows resample together):
    the pooled Pearson r(x, y) as the claim, and beyond it the partial r given ln(1 + step) (:data:`TIME`)."""
    rows = data.filter(pl.col(x).is_finite() & pl.col(y).is_finite())
    if rows.height < 4 or "dataset" not in rows.columns:
        return None
    a, b = rows[x].to_numpy().astype(float), rows[y].to_numpy().astype(float)
    t = np.log1p(rows["step"].cast(pl.Float64).to_numpy())[:, None]
    return ClaimData(rows.select("run_id", "dataset"), lambda i: pearson(a[i], b[i]), confound=TIME,
                     beyond=lambda i: _partial(a[i], b[i], t[i]), beyond_name="partial r given ln(1 + step)")


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
        "r(saturation, near-zero fraction)", "positive", negligible=NEGLIGIBLE_R, data=snapshot_claim_data(data, x, y),
        detail=f"{finite_pairs(data, x, y).height} layer snapshots")


def verdict_normalization(comparison: pl.DataFrame) -> Verdict:
    """001 §5.2 normalization: (saturation with norm - without) per matched pair, averaged per unnormalized
    twin first (pairs sharing a twin are not independent), then a t interval over twins; predicted negative."""
    pairs = comparison.filter((pl.col("metric") == "saturation_fraction") & pl.col("difference").is_finite())
    per_twin = (pairs.group_by("twin_run_id", maintain_order=True).agg(pl.col("dataset").first(),
                                                                       pl.col("difference").mean())
                if pairs.height else pairs)
    estimate = mean_ci(per_twin["difference"].to_numpy() if pairs.height else np.array([]), "unnormalized twins")
    twin_data = None
    if per_twin.height:
        d = per_twin["difference"].to_numpy().astype(float)
        twin_data = ClaimData(per_twin.select(pl.col("twin_run_id").alias("run_id"), "dataset"),
                              lambda i: float(d[i].mean()), confound="twins (identical runs without normalization)")
    datasets = sorted(set(comparison["dataset"].to_list()))
    return Verdict.of(
        estimate, "diagnostics.normalization_saturation", "001 §5.2",
        "Normalization layers keep activations out of saturation",
        "difference in run-mean hidden-layer saturation fraction between a normalized run and the identical run "
        "without normalization, averaged per unnormalized twin; t interval over twins",
        "mean saturation difference (with - without)", "negative", with_p=False, data=twin_data,
        detail=f"{pairs.height} matched pairs; data sets: {', '.join(datasets) or 'none'}")


def run_means(frame: pl.DataFrame, column: str, rows: pl.Expr) -> np.ndarray:
    """Per run, the mean of ``column`` over the rows selected by ``rows`` (finite values)."""
    return (frame.filter(rows.fill_null(False) & pl.col(column).is_finite())
            .group_by("run_id").agg(pl.col(column).mean()).sort("run_id")[column].to_numpy())


def bias_runs(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Per run (run_id, dataset, trained, untrained): the mean ``<kind>_bias_share_ratio`` over the run's
    layers at its snapshots after the first (trained) and at its first snapshot, the untrained network
    (untrained), over the rows of :func:`verdict_bias`; runs with both."""
    rows = pl.col("local_eligible").fill_null(False) if kind == "local" else pl.lit(True)
    col = f"{kind}_bias_share_ratio"
    f = frame.filter(rows & pl.col(col).is_finite())
    trained = f.filter(~pl.col("is_first_snapshot")).group_by("run_id").agg(
        pl.col("dataset").first(), pl.col(col).mean().alias("trained"))
    untrained = f.filter(pl.col("is_first_snapshot")).group_by("run_id").agg(pl.col(col).mean().alias("untrained"))
    return trained.join(untrained, on="run_id", how="inner").sort("run_id")


def verdict_bias(frame: pl.DataFrame, kind: str) -> Verdict:
    """001 §5.5.5 for ``kind`` in (local, loss): the mean over runs of the trained layers' bias share
    ratio (snapshots after the first; ratio to the no-structure share 1/(d+1)), null 1, predicted
    positive, t interval over runs, negligible band NEGLIGIBLE_BIAS_RATIO. The ratio of an untrained
    network is already far above 1 (a random layer's structure), so the confound is initialization: the
    baseline is the same layers' ratio at the run's first snapshot and the verdict rests on trained minus
    untrained per run (null 0, two-level interval). p_value stays NULL (the interval decides)."""
    runs = bias_runs(frame, kind)
    what = "non-ReLU hidden layers" if kind == "local" else "all layers"
    trained, untrained = runs["trained"].to_numpy(), runs["untrained"].to_numpy()
    data = None
    if runs.height:
        data = ClaimData(runs.select("run_id", "dataset"), lambda i: float(trained[i].mean()),
                         confound="initialization (the untrained network's own bias share)",
                         baseline=lambda i: float(untrained[i].mean()),
                         baseline_name=f"mean {kind} bias share ratio at the first snapshot",
                         beyond_name="mean trained minus untrained bias share ratio")
    return Verdict.of(
        mean_ci(trained, "runs"), f"diagnostics.bias_share_{kind}",
        "001 §5.5.5", "Bias parameters carry a real share of the Hessian spectrum (more than their coordinate count)",
        f"mean over runs of the run-mean {kind}-Hessian bias share over its no-structure baseline 1/(d+1) "
        f"({what}, snapshots after the first); t interval over runs; against the same layers untrained",
        f"mean {kind} bias share ratio", "positive", with_p=False, null_value=1.0, negligible=NEGLIGIBLE_BIAS_RATIO,
        data=data, detail=f"{runs.height} runs with a first and a later snapshot")


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
        "r(symmetry, log relative gradient)", "positive", negligible=NEGLIGIBLE_R, data=snapshot_claim_data(data, x, y),
        detail=f"{finite_pairs(data, x, y).height} layer snapshots")


def verdict_last_layers(pairs: pl.DataFrame, snapshots: pl.DataFrame) -> Verdict:
    """001 §5.5.2: at each run's last snapshot, r(last minus first hidden layer local-Hessian excess
    near-zero fraction, gap_loss), Fisher-z interval over runs; predicted positive.
    pairs: :func:`analyses.diagnostics.rules.last_minus_first_near_zero`; snapshots: run_id, step, gap_loss."""
    last = pairs.sort("step").group_by("run_id").agg(pl.col("step").last(), pl.col("difference").last())
    keep = [c for c in ("run_id", "step", "gap_loss", "train_loss", "dataset") if c in snapshots.columns]
    data = last.join(snapshots.select(keep), on=["run_id", "step"], how="inner")
    # one row per run: the Fisher-z interval's n counts runs
    estimate = dataclasses.replace(pearson_ci(data["difference"].to_numpy(), data["gap_loss"].to_numpy()), unit="runs")
    claim = None
    if "dataset" in data.columns and data.height >= 4:
        x, y = data["difference"].to_numpy().astype(float), data["gap_loss"].to_numpy().astype(float)
        c = np.column_stack([data["train_loss"].cast(pl.Float64).to_numpy(),
                             np.log1p(data["step"].cast(pl.Float64).to_numpy())])
        claim = ClaimData(data.select("run_id", "dataset"), lambda i: pearson(x[i], y[i]),
                          confound="fit and training time (final train loss, ln steps)",
                          baseline=lambda i: pearson(c[i, 0], y[i]), baseline_name="r(final train loss, gap_loss)",
                          beyond=lambda i: _partial(x[i], y[i], c[i]),
                          beyond_name="partial r given final train loss and ln steps")
    return Verdict.of(
        estimate, "diagnostics.last_layer_near_zero_gap", "001 §5.5.2",
        "Small local-Hessian eigenvalues concentrated in the last layers go with worse generalization",
        "Pearson r between (last hidden layer minus layer 0) local-Hessian excess near-zero fraction and the "
        "test-train loss gap, at each run's last snapshot (networks with >= 2 non-ReLU hidden layers)",
        "r(near-zero difference, gap_loss)", "positive", negligible=NEGLIGIBLE_R, data=claim)


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
            .select(*(["dataset"] if "dataset" in s.columns else []), "run_id", "step", "interval", "alignment",
                    "decrease_rate", "alignment_z", "decrease_z"))


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
        "r(alignment, loss decrease rate | snapshot index)", "negative", negligible=NEGLIGIBLE_R,
        data=_pooled_claim_data(data, x, y),
        detail=f"{finite_pairs(data, x, y).height} snapshot intervals")


def _pooled_claim_data(data: pl.DataFrame, x: str, y: str) -> ClaimData | None:
    """Rows (run_id, dataset, finite x, y) whose pooled Pearson r is the claim, training time held by
    design (both sides z-scored within the snapshot index)."""
    rows = data.filter(pl.col(x).is_finite() & pl.col(y).is_finite())
    if rows.height < 4 or "dataset" not in rows.columns:
        return None
    a, b = rows[x].to_numpy().astype(float), rows[y].to_numpy().astype(float)
    return ClaimData(rows.select("run_id", "dataset"), lambda i: pearson(a[i], b[i]),
                     confound="training time (z-scored within the snapshot index, by design)")
