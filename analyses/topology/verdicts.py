"""The verdicts on paper 003's claims, read from ``analysis_topology_correlations`` and the per-run rows."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.stats import Verdict, mean_ci
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


def layer_change_difference(runs: pl.DataFrame, metric: str) -> np.ndarray:
    """Per run with the metric's change at both ends of both layers: the first hidden layer's change over
    training minus the output layer's (n_runs,)."""
    g = runs.filter((pl.col("metric") == metric) & pl.col("change").is_not_null())
    first = g.filter(pl.col("position") == "first").select("run_id", pl.col("change").alias("first"))
    out = g.filter(pl.col("position") == "output").select("run_id", pl.col("change").alias("output"))
    both = first.join(out, on="run_id")
    return (both["first"] - both["output"]).to_numpy().astype(float)


def _correlation_verdict(corr: pl.DataFrame, metric: str, position: str, claim_spec: tuple) -> Verdict:
    """A claim read from its row of the correlation table (the verdict carries the row's numbers)."""
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
        detail=(f"{row.get('n_datasets') or 0} data sets"
                + (f" in {row['n_groups']} (data set, architecture) groups" if row.get("n_groups") else "")
                + f"; metric {metric}, layer position {position}"))


def _uneven_verdict(runs: pl.DataFrame, metric: str) -> Verdict:
    return Verdict.of(
        mean_ci(layer_change_difference(runs, metric), "runs"), f"topology.{metric}.uneven_across_layers", "003",
        f"The {LABEL[metric]} changes unevenly across layers during training",
        ("per run, change over training (initial to last snapshot; "
         + ("ln ratio" if metric in LOG_METRICS else "difference")
         + ") of the first hidden layer minus that of the output layer; mean over runs with a t interval"),
        "mean paired difference of the change", "nonzero", negligible=NEGLIGIBLE_CHANGE[metric],
        detail=("runs where both layers have the metric at both ends; negligible band "
                f"+-{NEGLIGIBLE_CHANGE[metric]:.3g}"))


def topology_verdicts(corr: pl.DataFrame, runs: pl.DataFrame) -> list[Verdict]:
    """Per metric of PAPER_METRICS: the five correlation claims per position of VERDICT_POSITIONS, then
    the uneven-change claim."""
    out: list[Verdict] = []
    for metric in PAPER_METRICS:
        for position in VERDICT_POSITIONS:
            out += [_correlation_verdict(corr, metric, position, spec) for spec in _CORRELATION_CLAIMS]
        out.append(_uneven_verdict(runs, metric))
    return out
