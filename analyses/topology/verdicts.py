"""The verdicts on paper 003's claims, read from ``analysis_topology_correlations`` and the per-run rows."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.stats import ClaimData, Verdict, mean_ci
from analyses.topology.claims import (
    ALT_MIN_CLOUD_POINTS,
    MIN_CLOUD_POINTS,
    WEIGHT_SCALE,
    across_runs_data,
    eligible,
    mean_data,
    sign_data,
)
from analyses.topology.correlations import correlation_table, mean_r, sweep_spearman
from analyses.topology.runs import LOG_METRICS

#: The paper's metrics, which get verdict rows.
PAPER_METRICS = ("normalized_entropy", "mean_lifetime")
#: Positions with verdict rows: the two every network has.
VERDICT_POSITIONS = ("first", "output")
#: Correlations within +-NEGLIGIBLE_R of 0 count as no relation (the verdict's negligible band).
NEGLIGIBLE_R = 0.1
R_UNITS = "correlation r"
#: Negligible band of the uneven-change verdict: 0.01 of normalized entropy (its range is [0, 1]); a
#: ln ratio of ln(1.05) for the mean lifetime (a 5 % difference in growth).
NEGLIGIBLE_CHANGE = {"normalized_entropy": 0.01, "mean_lifetime": math.log(1.05)}
#: Units of the uneven-change bands.
CHANGE_UNITS = {"normalized_entropy": "normalized entropy (range [0, 1])", "mean_lifetime": "ln ratio of lifetimes"}
#: How the claims and the report name the paper's metrics.
LABEL = {"normalized_entropy": "normalized persistent entropy", "mean_lifetime": "mean H0 lifetime"}

#: Per (metric, position): claim name, the correlation row (analysis, method) it reads (None: the
#: stage's estimate is computed here), claim, test, effect, and the paper row it sharpens (None: it is
#: the paper's test).
_CORRELATION_CLAIMS = [
    ("tracks_accuracy", "accuracy_across_runs", "pearson",
     "{label} of the {pos} layer correlates with test accuracy across trained networks",
     "Pearson r across classification runs of the final {scale}{label} and final test accuracy within (data "
     "set, architecture) groups, per data set, pooled across data sets by random effects (the paper's test)",
     "Pearson r", None),
    ("beyond_variance", "accuracy_beyond_variance", "partial",
     "{label} of the {pos} layer tells about test accuracy beyond the layer's weight variance and norm",
     "partial Pearson r of the final {scale}{label} with test accuracy given ln weight variance and ln weight "
     "norm, within (data set, architecture) groups, per data set, pooled by random effects (the sharpened test)",
     "partial r", "tracks_accuracy"),
    ("over_training", "accuracy_over_training", "mean within-run spearman",
     "{label} of the {pos} layer moves with test accuracy over training",
     "Spearman r between the metric and test accuracy over each run's snapshots, mean over runs per data set, "
     "pooled by random effects (the paper's test)", "mean within-run Spearman r", None),
    ("over_training.beyond_time", None, None,
     "{label} of the {pos} layer moves with test accuracy over training beyond training time",
     "partial Spearman r between the metric and test accuracy over each run's snapshots given the step (both "
     "move with training time), mean over runs per data set, pooled by random effects (the sharpened test)",
     "mean within-run partial Spearman r (given the step)", "over_training"),
    ("over_training_beyond_variance", "accuracy_over_training_beyond_variance",
     "mean within-run partial spearman",
     "{label} of the {pos} layer moves with test accuracy over training beyond its weight variance and norm",
     "partial Spearman r between the metric and test accuracy over each run's snapshots, controlling for the "
     "ranks of ln weight variance and ln weight norm; mean over runs per data set, pooled by random effects (the "
     "sharpened test)", "mean within-run partial Spearman r", "over_training"),
    ("train_fraction", "train_fraction", "mean within-sweep spearman",
     "{label} of the {pos} layer changes with the training-set size",
     "Spearman r between train fraction and the final metric within each sweep (runs identical but for "
     "the fraction; a few fractions, so every sweep can agree): the share of sweeps with r > 0, Wilson "
     "interval on the effective number of sweeps, against one half (the paper's test)",
     "share of sweeps with Spearman r > 0", None),
    ("train_fraction.fixed_steps", None, None,
     "{label} of the {pos} layer changes with the training-set size at a fixed amount of training",
     "Spearman r between train fraction and the final {scale_free} within each sweep trained at fixed optimizer "
     "steps (fixed_steps: a subsample trains for the steps of the whole split): the share of sweeps with r > 0, "
     "Wilson interval on the effective number of sweeps, against one half (the sharpened test)",
     "share of fixed-step sweeps with Spearman r > 0", "train_fraction"),
]
#: Band of a share of sweeps around one half.
NEGLIGIBLE_SHARE = 0.05
#: The scale-free version of each paper metric: the mean lifetime over the mean neuron norm (the weights'
#: scale moves with the amount of training); the normalized entropy is scale-free already.
SCALE_FREE = {"mean_lifetime": "mean_lifetime_scaled", "normalized_entropy": "normalized_entropy"}
#: What the fixed-step row holds fixed.
STEPS_AND_SCALE = ("optimizer steps and weight scale (sweeps at fixed steps, a scale-free metric; twins "
                   "identical but for the fraction)")


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


def claim_data(runs: pl.DataFrame, metric: str, position: str, name: str,
               fixed_runs: frozenset[str] | set[str] = frozenset()) -> ClaimData | None:
    """The rows behind one correlation claim (``name`` of :data:`_CORRELATION_CLAIMS`) from the eligible
    ``analysis_topology_runs`` rows ``runs`` (see :mod:`analyses.topology.claims`); ``fixed_runs``: the
    runs trained at fixed optimizer steps."""
    g = runs.filter((pl.col("metric") == metric) & (pl.col("position") == position))
    cls = g.filter((pl.col("task") == "classification") & pl.col("final").is_not_null()
                   & pl.col("test_metric").is_not_null())
    if name == "train_fraction":
        return sign_data(sweep_spearman(g), "spearman", unit_column="sweep",
                         confound="twins (sweeps identical but for the fraction, by design)")
    if name == "train_fraction.fixed_steps":
        return sign_data(fixed_step_sweeps(runs, metric, position, fixed_runs), "spearman", unit_column="sweep",
                         confound=STEPS_AND_SCALE)
    if cls.height == 0:
        return None
    if name in ("tracks_accuracy", "beyond_variance"):
        return across_runs_data(cls, metric, partial=name == "beyond_variance")
    if name == "over_training":
        return mean_data(cls, "spearman_over_training")
    if name == "over_training.beyond_time":
        return mean_data(cls, "spearman_beyond_time",
                         confound="training time (the step partialled out within each run)")
    return mean_data(cls, "partial_spearman_over_training", confound=WEIGHT_SCALE + " within each run")


def fixed_step_sweeps(runs: pl.DataFrame, metric: str, position: str, fixed_runs: frozenset[str] | set[str]
                      ) -> pl.DataFrame:
    """Per sweep trained at fixed optimizer steps (its runs in ``fixed_runs``; a sweep's runs share the
    setting), the Spearman r between train fraction and the final scale-free metric (:data:`SCALE_FREE`)
    of one position."""
    g = runs.filter((pl.col("metric") == SCALE_FREE[metric]) & (pl.col("position") == position)
                    & pl.col("run_id").is_in(sorted(fixed_runs)))
    return sweep_spearman(g)


def _stage_estimate(corr: pl.DataFrame, runs: pl.DataFrame, metric: str, position: str, spec: tuple,
                    fixed_runs: frozenset[str] | set[str] = frozenset()) -> dict:
    """The stage's own estimate of one claim: its row of the correlation table, or for a claim with no
    row there (``over_training.beyond_time``, ``train_fraction.fixed_steps``) the mean of its per-run (per
    sweep) values with a t interval."""
    name, analysis, method = spec[:3]
    if analysis is not None:
        return _corr_row(corr, metric, position, analysis, method)
    if name == "train_fraction.fixed_steps":
        sweeps = fixed_step_sweeps(runs, metric, position, fixed_runs)
        e = mean_r(sweeps["spearman"].to_numpy(), "sweeps", sweeps["dataset"].n_unique())
        return {"estimate": e.value, "ci_low": e.low, "ci_high": e.high, "p_value": e.p, "n": e.n,
                "n_unit": e.unit, "n_datasets": e.datasets, "df": e.df}
    cls = runs.filter((pl.col("metric") == metric) & (pl.col("position") == position)
                      & (pl.col("task") == "classification") & pl.col("spearman_beyond_time").is_not_null())
    e = mean_r(cls["spearman_beyond_time"].cast(pl.Float64).to_numpy(), "runs", cls["dataset"].n_unique())
    return {"estimate": e.value, "ci_low": e.low, "ci_high": e.high, "p_value": e.p, "n": e.n, "n_unit": e.unit,
            "n_datasets": e.datasets, "df": e.df}


def _corr_row(corr: pl.DataFrame, metric: str, position: str, analysis: str, method: str) -> dict:
    hit = corr.filter((pl.col("metric") == metric) & (pl.col("position") == position)
                      & (pl.col("analysis") == analysis) & (pl.col("method") == method))
    return hit.row(0, named=True) if hit.height else {}


def _correlation_verdict(row: dict, metric: str, position: str, claim_spec: tuple,
                         data: ClaimData | None = None, alt: dict | None = None) -> Verdict:
    """A claim with the stage's own estimate ``row`` (a row of the correlation table over the eligible
    clouds), the rows behind it (``data``) and the row at the alternative minimum cloud size (``alt``)
    in the detail."""
    name, _, _, claim, test, effect_name, sharpens = claim_spec
    sweeps = name.startswith("train_fraction")
    if sweeps:  # the stage's own estimate is the mean within-sweep r, on another scale: the share decides
        row = {**row, "p_value": None, "ci_low": None, "ci_high": None}
    pos = "first hidden" if position == "first" else position
    stem = f"topology.{metric}.{position}"
    return Verdict(
        claim_id=f"{stem}.{name}", source="003",
        claim=claim.format(label=LABEL[metric], pos=pos),
        test=test.format(label=LABEL[metric], scale="ln " if metric in LOG_METRICS else "",
                         scale_free=("mean lifetime over the mean neuron norm" if metric == "mean_lifetime"
                                     else LABEL[metric])),
        effect_name=effect_name, predicted="nonzero", effect=row.get("estimate"),
        ci_low=row.get("ci_low"), ci_high=row.get("ci_high"), n=int(row.get("n") or 0),
        n_unit=row.get("n_unit") or ("sweeps" if sweeps else "runs"),
        p_value=row.get("p_value"), data=data, null_value=0.5 if sweeps else 0.0,
        negligible=NEGLIGIBLE_SHARE if sweeps else NEGLIGIBLE_R, band_units="share of sweeps" if sweeps else R_UNITS,
        role="sharpened" if sharpens else "paper", pair=f"{stem}.{sharpens}" if sharpens else "",
        df=row.get("df") if row.get("df") is not None else math.inf,
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
         + ") of the first hidden layer minus that of the output layer; mean over runs per data set, pooled by "
           "random effects"),
        "mean paired difference of the change", "nonzero", negligible=NEGLIGIBLE_CHANGE[metric],
        band_units=CHANGE_UNITS[metric], data=mean_data(frame, "d", bounds=None) if frame.height else None,
        detail=(f"runs where both layers have the metric at both ends and clouds of >= {MIN_CLOUD_POINTS} points; "
                f"negligible band +-{NEGLIGIBLE_CHANGE[metric]:.3g}"))


def topology_verdicts(corr: pl.DataFrame, runs: pl.DataFrame, fixed_runs: frozenset[str] | set[str] = frozenset()
                      ) -> list[Verdict]:
    """Per metric of PAPER_METRICS: the seven correlation claims per position of VERDICT_POSITIONS, then
    the uneven-change claim; each on the layers whose cloud has at least MIN_CLOUD_POINTS points (the
    correlation rows are recomputed on them; ``corr``, over every cloud, stays descriptive).
    ``fixed_runs``: the runs trained at fixed optimizer steps (the fixed-step train-fraction rows)."""
    del corr  # the verdicts' own rows are recomputed on the eligible clouds
    kept, alt_kept = eligible(runs), eligible(runs, ALT_MIN_CLOUD_POINTS)
    kept_corr, alt_corr = correlation_table(kept), correlation_table(alt_kept)
    out: list[Verdict] = []
    for metric in PAPER_METRICS:
        for position in VERDICT_POSITIONS:
            for spec in _CORRELATION_CLAIMS:
                row = _stage_estimate(kept_corr, kept, metric, position, spec, fixed_runs)
                alt = _stage_estimate(alt_corr, alt_kept, metric, position, spec, fixed_runs)
                out.append(_correlation_verdict(row, metric, position, spec,
                                                claim_data(kept, metric, position, spec[0], fixed_runs), alt))
        out.append(_uneven_verdict(kept, metric))
    return out
