"""The verdicts on the claims the rules rest on (001 Claim 2, §5.2, §5.5.2, §5.5.3, §5.5.5, §5.5.6).

Correlations over layer snapshots are decided within data sets with their variance from leaving whole
runs out (a run's snapshots are not independent); the stage's own estimate beside them resamples whole
runs (:func:`clustered_correlation`). Four claims have two rows, the paper's test and the sharpened
one: saturation and symmetry (beyond training time), the bias share (beyond the untrained network's)
and the last-layer correlation (beyond training time).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from analyses.stats import (
    ClaimData,
    Correlation,
    Estimate,
    Mean,
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
RATIO_UNITS = "ratio of the bias share to 1/(d+1)"


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


#: |r| below this is a negligible correlation (the band of the correlation verdicts, as elsewhere).
NEGLIGIBLE_R = 0.1
R_UNITS = "correlation r"
#: Band of the normalization comparison: a difference of 0.02 in saturation fraction (2 % of the
#: (unit, probe point) pairs).
NEGLIGIBLE_SATURATION = 0.02
#: The confound of the correlations over layer snapshots: both sides drift with training time.
TIME = "training time (ln(1 + step), partialled out)"


def _partial(x: np.ndarray, y: np.ndarray, controls: np.ndarray) -> float:
    """Pearson r of the residuals of x and y (n,) on [1, controls (n, c)]; NaN below 4 rows."""
    if len(x) < 4:
        return float("nan")
    return pearson(partial_residuals(x, controls), partial_residuals(y, controls))


def snapshot_claim_data(data: pl.DataFrame, x: str, y: str, sharpened: bool = False) -> ClaimData | None:
    """Layer snapshots (rows with run_id, dataset, step and finite x, y; several per run): r(x, y) within
    each data set, or ``sharpened`` the partial r given ln(1 + step) (:data:`TIME`)."""
    rows = data.filter(pl.col(x).is_finite() & pl.col(y).is_finite())
    if rows.height < 4 or "dataset" not in rows.columns:
        return None
    a, b = rows[x].to_numpy().astype(float), rows[y].to_numpy().astype(float)
    if not sharpened:
        return ClaimData(rows.select("run_id", "dataset"), Correlation(a, b))
    t = np.log1p(rows["step"].cast(pl.Float64).to_numpy())
    return ClaimData(rows.select("run_id", "dataset"), Correlation(a, b, controls=t), confound=TIME,
                     baseline=lambda i: pearson(t[i], b[i]), baseline_name=f"r(ln(1 + step), {y})")


def _snapshot_pair(data: pl.DataFrame, x: str, y: str, claim_id: str, source: str, claim: str, test: str,
                   effect_name: str, predicted: str) -> list[Verdict]:
    """The paper's test and the sharpened one (beyond training time) of a correlation over layer
    snapshots; the stage's estimate beside the first is pooled over the snapshots with a cluster
    bootstrap over runs, beside the second the pooled partial r alone."""
    n_rows = finite_pairs(data, x, y).height
    common = {"predicted": predicted, "negligible": NEGLIGIBLE_R, "band_units": R_UNITS,
              "detail": f"{n_rows} layer snapshots"}
    rows = data.filter(pl.col(x).is_finite() & pl.col(y).is_finite())
    partial = Estimate.missing(rows["run_id"].n_unique() if rows.height else 0, "runs")
    if rows.height >= 4:
        t = np.log1p(rows["step"].cast(pl.Float64).to_numpy())[:, None]
        partial = Estimate.missing(partial.n, "runs", _partial(rows[x].to_numpy().astype(float),
                                                               rows[y].to_numpy().astype(float), t))
    return [
        Verdict.of(clustered_correlation(data, x, y), claim_id, source, claim,
                   test + " within each data set, pooled across data sets by random effects (the paper's test)",
                   effect_name, data=snapshot_claim_data(data, x, y), **common),
        Verdict.of(partial, f"{claim_id}.beyond_time", source, claim + " (beyond training time)",
                   test + "; partial r given ln(1 + step), within each data set, pooled by random effects (the "
                   "sharpened test)", f"partial {effect_name} given ln(1 + step)",
                   data=snapshot_claim_data(data, x, y, sharpened=True), role="sharpened", pair=claim_id, **common),
    ]


def verdict_saturation(frame: pl.DataFrame) -> list[Verdict]:
    """001 Claim 2 / §5.2: r(saturation_fraction, local_excess_near_zero) over ``local_eligible``
    layer snapshots, and beyond training time; predicted positive."""
    data = frame.filter(pl.col("local_eligible").fill_null(False))
    return _snapshot_pair(
        data, "saturation_fraction", "local_excess_near_zero", "diagnostics.saturation_near_zero",
        "001 Claim 2 / §5.2", "Saturated layers show local-Hessian eigenvalues piled near zero",
        "Pearson r between saturation fraction and the local Hessian's non-structural near-zero eigenvalue "
        "fraction over non-ReLU hidden-layer snapshots", "r(saturation, near-zero fraction)", "positive")


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
        twin_data = ClaimData(per_twin.select(pl.col("twin_run_id").alias("run_id"), "dataset"), Mean(d),
                              confound="twins (identical runs without normalization)")
    datasets = sorted(set(comparison["dataset"].to_list()))
    return Verdict.of(
        estimate, "diagnostics.normalization_saturation", "001 §5.2",
        "Normalization layers keep activations out of saturation",
        "difference in run-mean hidden-layer saturation fraction between a normalized run and the identical run "
        "without normalization, averaged per unnormalized twin; t interval over twins",
        "mean saturation difference (with - without)", "negative", with_p=False, data=twin_data,
        negligible=NEGLIGIBLE_SATURATION, band_units="saturation fraction",
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


def verdict_bias(frame: pl.DataFrame, kind: str) -> list[Verdict]:
    """001 §5.5.5 for ``kind`` in (local, loss), two rows. The paper's test: the mean over runs of the
    trained layers' bias share ratio (snapshots after the first; ratio to the no-structure share
    1/(d+1)), null 1, predicted positive. The sharpened test: an untrained layer already scores far above
    1 (a random layer's structure), so beyond initialization the effect is trained minus untrained (the
    same layers at the run's first snapshot) per run, null 0. Both within data sets, pooled by random
    effects; band NEGLIGIBLE_BIAS_RATIO."""
    runs = bias_runs(frame, kind)
    what = "non-ReLU hidden layers" if kind == "local" else "all layers"
    trained, untrained = runs["trained"].to_numpy(), runs["untrained"].to_numpy()
    rows = runs.select("run_id", "dataset")
    paper = sharp = None
    if runs.height:
        paper = ClaimData(rows, Mean(trained))
        sharp = ClaimData(rows, Mean(trained - untrained),
                          confound="initialization (the untrained network's own bias share)",
                          baseline=lambda i: float(untrained[i].mean()),
                          baseline_name=f"mean {kind} bias share ratio at the first snapshot")
    claim = "Bias parameters carry a real share of the Hessian spectrum (more than their coordinate count)"
    detail = f"{runs.height} runs with a first and a later snapshot"
    common = {"negligible": NEGLIGIBLE_BIAS_RATIO, "band_units": RATIO_UNITS, "with_p": False, "detail": detail}
    return [
        Verdict.of(
            mean_ci(trained, "runs"), f"diagnostics.bias_share_{kind}", "001 §5.5.5", claim,
            f"mean over runs of the run-mean {kind}-Hessian bias share over its no-structure baseline 1/(d+1) "
            f"({what}, snapshots after the first), within each data set, pooled by random effects (the paper's "
            "test)", f"mean {kind} bias share ratio", "positive", null_value=1.0, data=paper, **common),
        Verdict.of(
            mean_ci(trained - untrained, "runs"), f"diagnostics.bias_share_{kind}.beyond_init", "001 §5.5.5",
            claim + " (beyond what an untrained layer has)",
            f"per run, the trained layers' mean {kind}-Hessian bias share ratio minus the same layers' at the first "
            "snapshot (untrained); mean within each data set, pooled by random effects (the sharpened test)",
            "mean trained minus untrained bias share ratio", "positive", null_value=0.0, data=sharp,
            role="sharpened", pair=f"diagnostics.bias_share_{kind}", **common),
    ]


def verdict_saddle(frame: pl.DataFrame) -> list[Verdict]:
    """001 §5.5.6: r(loss_symmetry, log10 relative_grad_norm) over hidden layers with an indefinite
    loss-Hessian block (``local_eligible``; ReLU blocks are PSD, symmetry identically 2), first snapshot
    excluded, and beyond training time; predicted positive."""
    data = frame.filter(pl.col("local_eligible").fill_null(False) & ~pl.col("is_first_snapshot")
                        & (pl.col("relative_grad_norm") > 0)).with_columns(
        log_relative_grad=pl.col("relative_grad_norm").log10())
    return _snapshot_pair(
        data, "loss_symmetry", "log_relative_grad", "diagnostics.symmetry_gradient", "001 §5.5.6",
        "A spectrum symmetric about zero marks a saddle with small gradients",
        "Pearson r between loss-Hessian symmetry W1(λ,-λ)/mean|λ| (0 = symmetric) and log10 of the layer's "
        "gradient norm over its first-snapshot norm, non-ReLU hidden layers after the first snapshot",
        "r(symmetry, log relative gradient)", "positive")


def verdict_last_layers(pairs: pl.DataFrame, snapshots: pl.DataFrame) -> list[Verdict]:
    """001 §5.5.2: at each run's last snapshot, r(last minus first hidden layer local-Hessian excess
    near-zero fraction, gap_loss) within data sets (the paper's test), and its partial r given ln steps
    (the sharpened test; the final train loss, a mediator of overfitting, is not partialled); predicted
    positive. pairs: :func:`analyses.diagnostics.rules.last_minus_first_near_zero`; snapshots: run_id,
    step, gap_loss."""
    last = pairs.sort("step").group_by("run_id").agg(pl.col("step").last(), pl.col("difference").last())
    keep = [c for c in ("run_id", "step", "gap_loss", "dataset") if c in snapshots.columns]
    data = last.join(snapshots.select(keep), on=["run_id", "step"], how="inner")
    x = data["difference"].to_numpy().astype(float)
    y = data["gap_loss"].to_numpy().astype(float)
    t = np.log1p(data["step"].cast(pl.Float64).to_numpy())
    # one row per run: the Fisher-z interval's n counts runs
    estimate = dataclasses.replace(pearson_ci(x, y), unit="runs")
    partial = dataclasses.replace(pearson_ci(*(partial_residuals(v, t[:, None]) for v in (x, y)))
                                  if data.height >= 5 else Estimate.missing(data.height), unit="runs")
    paper = sharp = None
    if "dataset" in data.columns and data.height >= 4:
        rows = data.select("run_id", "dataset")
        paper = ClaimData(rows, Correlation(x, y))
        sharp = ClaimData(rows, Correlation(x, y, controls=t), confound=TIME,
                          baseline=lambda i: pearson(t[i], y[i]), baseline_name="r(ln(1 + step), gap_loss)")
    claim = "Small local-Hessian eigenvalues concentrated in the last layers go with worse generalization"
    test = ("Pearson r between (last hidden layer minus layer 0) local-Hessian excess near-zero fraction and the "
            "test-train loss gap, at each run's last snapshot (networks with >= 2 non-ReLU hidden layers), within "
            "each data set, pooled by random effects")
    common = {"predicted": "positive", "negligible": NEGLIGIBLE_R, "band_units": R_UNITS}
    return [
        Verdict.of(estimate, "diagnostics.last_layer_near_zero_gap", "001 §5.5.2", claim, test + " (the paper's test)",
                   "r(near-zero difference, gap_loss)", data=paper, **common),
        Verdict.of(partial, "diagnostics.last_layer_near_zero_gap.beyond_time", "001 §5.5.2",
                   claim + " (beyond training time)", test + "; partial r given ln steps (the sharpened test)",
                   "partial r(near-zero difference, gap_loss | ln steps)", data=sharp, role="sharpened",
                   pair="diagnostics.last_layer_near_zero_gap", **common),
    ]


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
        "snapshot index (keeps the common drift over training out); within each data set (variance by leaving "
        "runs out), pooled by random effects",
        "r(alignment, loss decrease rate | snapshot index)", "negative", negligible=NEGLIGIBLE_R,
        band_units=R_UNITS, data=_pooled_claim_data(data, x, y),
        detail=f"{finite_pairs(data, x, y).height} snapshot intervals")


def _pooled_claim_data(data: pl.DataFrame, x: str, y: str) -> ClaimData | None:
    """Rows (run_id, dataset, interval, finite x, y; several per run) whose r within (data set, snapshot
    index) groups is the claim: training time held by design (each data set's runs compared at the same
    point of training; a data set whose drift differs from the others' keeps none of it)."""
    rows = data.filter(pl.col(x).is_finite() & pl.col(y).is_finite())
    if rows.height < 4 or "dataset" not in rows.columns:
        return None
    a, b = rows[x].to_numpy().astype(float), rows[y].to_numpy().astype(float)
    return ClaimData(rows.select("run_id", "dataset"), Correlation(a, b, strata=rows["interval"].to_numpy()),
                     confound="training time (compared within the snapshot index, by design)")
