"""The verdicts on paper 003's claims, read from ``analysis_topology_correlations`` and the per-run rows."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.stats import ClaimData, Verdict, mean_ci
from analyses.topology.claims import ALT_MIN_CLOUD_POINTS, MIN_CLOUD_POINTS, across_runs_data, eligible, mean_data
from analyses.topology.correlations import correlation_table, sweep_spearman
from analyses.topology.runs import LOG_METRICS

#: The paper's metrics, which get verdict rows.
PAPER_METRICS = ("normalized_entropy", "mean_lifetime")
#: Positions with verdict rows: the two every network has.
VERDICT_POSITIONS = ("first", "output")
#: Correlations within +-NEGLIGIBLE_R of 0 count as no relation (the verdict's negligible band).
NEGLIGIBLE_R = 0.1
#: Negligible band of the uneven-change verdict: 0.01 of normalized entropy (its range is [0, 1]); a
#: ln ratio of ln(1.05) for the mean lifetime (a 5 % difference in growth).
NEGLIGIBLE_CHANGE = {"normalized_entropy": 0.01, "mean_lifetime": math.log(1.05)}
#: How the claims and the report name the paper's metrics.
LABEL = {"normalized_entropy": "normalized persistent entropy", "mean_lifetime": "mean H0 lifetime"}

#: Per (metric, position): claim name, the correlation row (analysis, method) it reads, claim, test, effect.
_CORRELATION_CLAIMS = [
    ("tracks_accuracy", "accuracy_across_runs", "pearson",
     "{label} of the {pos} layer correlates with test accuracy across trained networks",
     "Pearson r across classification runs of the final {scale}{label} and final test accuracy, both "
     "z-scored within (data set, architecture) groups; bootstrap over runs", "Pearson r"),
    ("beyond_variance", "accuracy_beyond_variance", "partial",
     "{label} of the {pos} layer tells about test accuracy beyond the layer's weight variance and norm",
     "partial Pearson r of the final {scale}{label} with test accuracy after regressing both on ln weight "
     "variance and ln weight norm (all z-scored within (data set, architecture) groups); bootstrap over runs",
     "partial r"),
    ("over_training", "accuracy_over_training", "mean within-run spearman",
     "{label} of the {pos} layer moves with test accuracy over training",
     "Spearman r between the metric and test accuracy over each run's snapshots, mean over runs with a t "
     "interval (training time drives both; the partial version is in analysis_topology_correlations)",
     "mean within-run Spearman r"),
    ("over_training_beyond_variance", "accuracy_over_training_beyond_variance",
     "mean within-run partial spearman",
     "{label} of the {pos} layer moves with test accuracy over training beyond its weight variance and norm",
     "partial Spearman r between the metric and test accuracy over each run's snapshots, controlling for the "
     "ranks of ln weight variance and ln weight norm; mean over runs with a t interval",
     "mean within-run partial Spearman r"),
    ("train_fraction", "train_fraction", "mean within-sweep spearman",
     "{label} of the {pos} layer changes with the training-set size",
     "Spearman r between train fraction and the final metric within each sweep (runs identical but for "
     "the fraction), mean over sweeps with a t interval", "mean within-sweep Spearman r"),
]


def layer_change_frame(runs: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Per run with the metric's change at both ends of both layers: run_id, dataset and ``d``, the first
    hidden layer's change over training minus the output layer's."""
    g = runs.filter((pl.col("metric") == metric) & pl.col("change").is_not_null())
    first = g.filter(pl.col("position") == "first").select("run_id", "dataset", pl.col("change").alias("first"))
    out = g.filter(pl.col("position") == "output").select("run_id", pl.col("change").alias("output"))
    both = first.join(out, on="run_id")
    return both.select("run_id", "dataset", (pl.col("first") - pl.col("output")).alias("d"))


def layer_change_difference(runs: pl.DataFrame, metric: str) -> np.ndarray:
    """The ``d`` of :func:`layer_change_frame` (n_runs,)."""
    return layer_change_frame(runs, metric)["d"].to_numpy().astype(float)


def claim_data(runs: pl.DataFrame, metric: str, position: str, name: str) -> ClaimData | None:
    """The rows behind one correlation claim (``name`` of :data:`_CORRELATION_CLAIMS`) from the eligible
    ``analysis_topology_runs`` rows ``runs`` (see :mod:`analyses.topology.claims`)."""
    g = runs.filter((pl.col("metric") == metric) & (pl.col("position") == position))
    cls = g.filter((pl.col("task") == "classification") & pl.col("final").is_not_null()
                   & pl.col("test_metric").is_not_null())
    if name == "train_fraction":
        return mean_data(sweep_spearman(g), "spearman", unit_column="sweep",
                         confound="twins (sweeps identical but for the fraction, by design)")
    if cls.height == 0:
        return None
    if name in ("tracks_accuracy", "beyond_variance"):
        return across_runs_data(cls, metric, partial=name == "beyond_variance")
    if name == "over_training":
        return mean_data(cls, "spearman_over_training", beyond_column="spearman_beyond_time",
                         confound="training time (step drives the metric and accuracy alike)")
    return mean_data(cls, "partial_spearman_over_training",
                     confound="weight scale (ln weight variance and norm, partialled within run)")


def _corr_row(corr: pl.DataFrame, metric: str, position: str, analysis: str, method: str) -> dict:
    hit = corr.filter((pl.col("metric") == metric) & (pl.col("position") == position)
                      & (pl.col("analysis") == analysis) & (pl.col("method") == method))
    return hit.row(0, named=True) if hit.height else {}


def _correlation_verdict(corr: pl.DataFrame, metric: str, position: str, claim_spec: tuple,
                         data: ClaimData | None = None, alt: dict | None = None) -> Verdict:
    """A claim read from its row of the correlation table over the eligible clouds (the verdict carries
    the row's numbers), with the rows behind it (``data``) and the row at the alternative minimum cloud
    size (``alt``) in the detail."""
    name, analysis, method, claim, test, effect_name = claim_spec
    hit = corr.filter((pl.col("metric") == metric) & (pl.col("position") == position)
                      & (pl.col("analysis") == analysis) & (pl.col("method") == method))
    row = hit.row(0, named=True) if hit.height else {}
    pos = "first hidden" if position == "first" else position
    return Verdict(
        claim_id=f"topology.{metric}.{position}.{name}", source="003",
        claim=claim.format(label=LABEL[metric], pos=pos),
        test=test.format(label=LABEL[metric], scale="ln " if metric in LOG_METRICS else ""),
        effect_name=effect_name, predicted="nonzero", effect=row.get("estimate"),
        ci_low=row.get("ci_low"), ci_high=row.get("ci_high"), n=int(row.get("n") or 0),
        n_unit=row.get("n_unit") or ("sweeps" if name == "train_fraction" else "runs"),
        p_value=row.get("p_value"), negligible=NEGLIGIBLE_R,
        data=data,
        detail=(f"{row.get('n_datasets') or 0} data sets"
                + (f" in {row['n_groups']} (data set, architecture) groups" if row.get("n_groups") else "")
                + f"; metric {metric}, layer position {position}; clouds of >= {MIN_CLOUD_POINTS} points at the "
                + "last snapshot" + _alt_text(alt)))


def _alt_text(alt: dict | None) -> str:
    if alt is None:
        return ""
    if not alt or alt.get("estimate") is None:
        return f"; with >= {ALT_MIN_CLOUD_POINTS} points: no estimate"
    lo, hi = alt.get("ci_low"), alt.get("ci_high")
    interval = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
    return f"; with >= {ALT_MIN_CLOUD_POINTS} points: {alt['estimate']:.3g}{interval} (n = {alt.get('n')})"


def _uneven_verdict(runs: pl.DataFrame, metric: str) -> Verdict:
    frame = layer_change_frame(runs, metric)
    d = frame["d"].to_numpy().astype(float)
    return Verdict.of(
        mean_ci(d, "runs"), f"topology.{metric}.uneven_across_layers", "003",
        f"The {LABEL[metric]} changes unevenly across layers during training",
        ("per run, change over training (initial to last snapshot; "
         + ("ln ratio" if metric in LOG_METRICS else "difference")
         + ") of the first hidden layer minus that of the output layer; mean over runs with a t interval"),
        "mean paired difference of the change", "nonzero", negligible=NEGLIGIBLE_CHANGE[metric],
        data=mean_data(frame, "d") if frame.height else None,
        detail=(f"runs where both layers have the metric at both ends and clouds of >= {MIN_CLOUD_POINTS} points; "
                f"negligible band +-{NEGLIGIBLE_CHANGE[metric]:.3g}"))


def topology_verdicts(corr: pl.DataFrame, runs: pl.DataFrame) -> list[Verdict]:
    """Per metric of PAPER_METRICS: the five correlation claims per position of VERDICT_POSITIONS, then
    the uneven-change claim; each on the layers whose cloud has at least MIN_CLOUD_POINTS points (the
    correlation rows are recomputed on them; ``corr``, over every cloud, stays descriptive)."""
    del corr  # the verdicts' own rows are recomputed on the eligible clouds
    kept, alt_kept = eligible(runs), eligible(runs, ALT_MIN_CLOUD_POINTS)
    kept_corr, alt_corr = correlation_table(kept), correlation_table(alt_kept)
    out: list[Verdict] = []
    for metric in PAPER_METRICS:
        for position in VERDICT_POSITIONS:
            for spec in _CORRELATION_CLAIMS:
                alt = _corr_row(alt_corr, metric, position, spec[1], spec[2])
                out.append(_correlation_verdict(kept_corr, metric, position, spec,
                                                claim_data(kept, metric, position, spec[0]), alt))
        out.append(_uneven_verdict(kept, metric))
    return out
