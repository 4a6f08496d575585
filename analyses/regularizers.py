"""Curvature in training (paper 004): the gradient-norm and Hessian-trace penalties, SAM and Fisher
SAM against plain training, on matched runs.

Paper 004 claims that penalizing local curvature (the Hessian trace, the gradient norm) flattens the
minimum a lot but generalizes worse than SAM, and that SAM with Riemannian optimization inside
slightly beats plain SAM. The paper does not name its Riemannian SAM; the training option
``fisher_sam`` is Fisher SAM (Kim et al. 2022), see :mod:`pipeline.training.regularizers`.

Matching and units
------------------
An *arm* is a regularizer with its strengths (``sam (rho 0.05)``). Runs *match* when every other
field of their configuration is equal (data set, model, optimizer, epochs, seed, ...): a *matched
group*. Only completed classification runs enter. Per run, at its last snapshot: test accuracy, the
gap (train - test accuracy), the loss-Hessian trace (the sum of the Linear blocks' traces), the top
eigenvalue of the whole loss Hessian and SAM sharpness (both on the probe batch).

``analysis_regularizers``: per (arm, metric) the mean over *units* with a 95% t interval
(a unit is one (data set, model) pair: its seeds are averaged first, since runs of one data set are
not independent), n runs and n units.

``analysis_regularizers_pairs``: per (arm, baseline, metric) the paired difference arm - baseline
within matched groups (accuracy and gap in accuracy units; trace, top eigenvalue and sharpness as
ln(arm / baseline), pairs where either is not positive are left out and counted), averaged over
seeds within a unit, with the mean over units, its t interval and p. Baselines: plain training
(``none``) for every arm, and SAM for the penalties and for Fisher SAM.

``analysis_regularizers_verdicts``: the paper's three claims, one row per arm concerned, each a
paired difference of the pairs table: its mean over units per data set, pooled across data sets by
random effects (:mod:`analyses.stats.claims`), the stage's t interval over units beside it. Bands:
``NEGLIGIBLE_ACCURACY`` = 0.002 of test accuracy (a fifth of an accuracy point: below the "slight"
half-point difference the Fisher SAM claim implies) and ``NEGLIGIBLE_LOG_RATIO`` = ln 1.1 (a 10 %
change of the trace or top eigenvalue); a 90 % interval inside the band is an equivalence:

- ``regularizers.flatten.<arm>.<metric>``: curvature penalties flatten the minimum: ln(trace ratio)
  and ln(top eigenvalue ratio) against plain training, predicted negative;
- ``regularizers.worse_than_sam.<arm>.vs.<sam arm>``: curvature penalties generalize worse than SAM:
  test accuracy difference against SAM, predicted negative;
- ``regularizers.fisher_sam_beats_sam.<arm>.vs.<sam arm>``: SAM with a Riemannian (Fisher) metric
  slightly beats SAM: test accuracy difference against SAM, predicted positive.

Caveats
-------
- One strength per regularizer, fixed in the config before any run, not tuned; no sweep. The
  ``penalty``, ``rho`` and ``fisher_eta`` columns of ``runs`` hold their defaults where the
  regularizer does not use them.
- Fisher SAM's metric 1 + eta g^2 squares the mini-batch mean gradient (about 1e-4 per coordinate
  on these models), not per-example gradients, so at eta = 1 it is close to the identity: that arm is
  SAM to within about 1e-4 and its verdict cannot separate them.
- BatchNorm statistics are frozen during SAM's second pass only.
- The loss-Hessian trace is NULL for a snapshot where any block's trace was estimated (256-wide
  layers), and the top eigenvalue unless its Lanczos run converged: such runs drop out of those pairs.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from analyses.kit.features import SNAPSHOT_LOSS_TRACE_SQL
from analyses.kit.presentation import empty_figure, fmt_number
from analyses.kit.stage import Figure, Stage
from analyses.kit.tables import write_table, write_verdicts
from analyses.stats import ClaimData, Estimate, Mean, Verdict, mean_ci
from pipeline.training.regularizers import USES

#: Metrics compared, and whether a difference is taken on the log scale (ratio) or as is.
METRICS = {"test_accuracy": "difference", "gap": "difference", "hessian_trace": "log_ratio",
           "hessian_top_eigenvalue": "log_ratio", "sharpness": "log_ratio"}
PENALTIES = ("grad_norm", "hessian_trace")
_STRENGTH_LABEL = {"penalty": "lambda", "rho": "rho", "fisher_eta": "eta"}
#: Fields that make an arm; every other configuration field makes the matched group.
ARM_FIELDS = ("regularizer", "penalty", "rho", "fisher_eta")
#: What n of every interval counts: (data set, model) units, seeds averaged within each.
UNIT = "data set x model units"
#: Bands of the verdicts: a test-accuracy difference of a fifth of a point, a 10 % change of curvature.
NEGLIGIBLE_ACCURACY, NEGLIGIBLE_LOG_RATIO = 0.002, math.log(1.1)

TABLES = {
    "analysis_regularizers": [
        ("arm", "VARCHAR"), ("regularizer", "VARCHAR"), ("metric", "VARCHAR"), ("n_runs", "INTEGER"),
        ("n_units", "INTEGER"), ("mean", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"),
    ],
    "analysis_regularizers_pairs": [
        ("arm", "VARCHAR"), ("regularizer", "VARCHAR"), ("baseline", "VARCHAR"), ("metric", "VARCHAR"),
        ("scale", "VARCHAR"), ("n_pairs", "INTEGER"), ("n_units", "INTEGER"), ("n_dropped", "INTEGER"),
        ("mean_difference", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("p_value", "DOUBLE"),
    ],
}


class Comparison(NamedTuple):
    """One row of ``analysis_regularizers_pairs``: arm - baseline on ``metric``, mean over units."""

    arm: str
    regularizer: str
    baseline: str
    metric: str
    difference: Estimate
    n_pairs: int
    n_dropped: int
    units: pl.DataFrame | None = None

    def row(self) -> dict:
        d = self.difference
        return {"arm": self.arm, "regularizer": self.regularizer, "baseline": self.baseline, "metric": self.metric,
                "scale": METRICS[self.metric], "n_pairs": self.n_pairs, "n_units": d.n, "n_dropped": self.n_dropped,
                "mean_difference": d.value, "ci_low": d.low, "ci_high": d.high, "p_value": d.p}


def _frame(table: str, rows: list[dict]) -> pl.DataFrame:
    """Rows as a frame of the declared columns, NaN as NULL."""
    frame = pl.from_dicts(rows, schema=[c for c, _ in TABLES[table]], infer_schema_length=None)
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None))


def arm_label(regularizer: str, penalty: float, rho: float, fisher_eta: float) -> str:
    """``none``, ``grad_norm (lambda 0.1)``, ``fisher_sam (rho 0.05, eta 1)``: the strengths it uses."""
    values = {"penalty": penalty, "rho": rho, "fisher_eta": fisher_eta}
    used = USES.get(regularizer, ())
    if not used:
        return regularizer
    return f"{regularizer} (" + ", ".join(f"{_STRENGTH_LABEL[f]} {values[f]:g}" for f in used) + ")"


def match_key(config_json: str) -> str:
    """The configuration without the arm's fields: runs with equal keys form a matched group."""
    d = json.loads(config_json)
    for f in ARM_FIELDS:
        d.pop(f, None)
    return json.dumps(d, sort_keys=True)


def unit_key(config_json: str) -> str:
    """The matched group without the seed: one (data set, model, training) unit."""
    d = json.loads(match_key(config_json))
    d.pop("seed", None)
    return json.dumps(d, sort_keys=True)


def _final_values(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    frame = con.sql(f"""
        WITH trace AS ({SNAPSHOT_LOSS_TRACE_SQL})
        SELECT r.run_id, r.dataset, r.config_json, r.regularizer, r.penalty, r.rho, r.fisher_eta,
               c.test_accuracy, c.train_accuracy - c.test_accuracy AS gap, t.hessian_trace,
               CASE WHEN s.hessian_top_converged THEN s.hessian_top_eigenvalue END AS hessian_top_eigenvalue,
               s.sharpness
        FROM runs r
        JOIN checkpoints c ON c.run_id = r.run_id AND c.step = r.final_step
        LEFT JOIN trace t ON t.run_id = r.run_id AND t.step = r.final_step
        LEFT JOIN sharpness s ON s.run_id = r.run_id AND s.step = r.final_step
        WHERE r.task = 'classification' AND r.status = 'complete'
        ORDER BY r.run_id""").pl()
    if frame.height == 0:
        return frame.with_columns(pl.lit(None, pl.Utf8).alias(c) for c in ("arm", "group", "unit"))
    return frame.with_columns(
        pl.struct("regularizer", "penalty", "rho", "fisher_eta").map_elements(
            lambda s: arm_label(s["regularizer"], s["penalty"], s["rho"], s["fisher_eta"]),
            return_dtype=pl.Utf8).alias("arm"),
        pl.col("config_json").map_elements(match_key, return_dtype=pl.Utf8).alias("group"),
        pl.col("config_json").map_elements(unit_key, return_dtype=pl.Utf8).alias("unit"))


def _compared(frame: pl.DataFrame) -> pl.DataFrame:
    """Runs of matched groups that hold plain training and at least one other arm."""
    arms = frame.group_by("group").agg(pl.col("arm").n_unique().alias("n_arms"),
                                       (pl.col("regularizer") == "none").any().alias("has_none"))
    keep = arms.filter((pl.col("n_arms") >= 2) & pl.col("has_none"))["group"]
    return frame.filter(pl.col("group").is_in(keep.implode()))


def paired_differences(frame: pl.DataFrame, arm: str, baseline: str, metric: str) -> tuple[np.ndarray, int, int]:
    """Per unit, the mean over its matched groups (seeds) of arm - baseline (or ln(arm / baseline)).

    Returns (unit means (u,), n pairs used, n pairs dropped for a non-positive ratio or a NULL)."""
    units, used, dropped = paired_difference_units(frame, arm, baseline, metric)
    return units["d"].to_numpy(), used, dropped


def paired_difference_units(frame: pl.DataFrame, arm: str, baseline: str, metric: str
                            ) -> tuple[pl.DataFrame, int, int]:
    """:func:`paired_differences` with the units kept: a frame of unit, dataset and ``d`` (sorted by unit)."""
    a = frame.filter(pl.col("arm") == arm).select("group", "unit", "dataset", pl.col(metric).alias("a"))
    b = frame.filter(pl.col("arm") == baseline).select("group", pl.col(metric).alias("b"))
    pairs = a.join(b, on="group", how="inner")
    if METRICS[metric] == "log_ratio":
        ok = (pl.col("a") > 0) & (pl.col("b") > 0)
        diff = (pl.col("a").log() - pl.col("b").log())
    else:
        ok = pl.col("a").is_not_null() & pl.col("b").is_not_null()
        diff = pl.col("a") - pl.col("b")
    used = pairs.filter(ok.fill_null(False))
    dropped = pairs.height - used.height
    units = (used.with_columns(diff.alias("d")).group_by("unit")
             .agg(pl.col("dataset").first(), pl.col("d").mean()).sort("unit"))
    return units, used.height, dropped


def unit_claim_data(units: pl.DataFrame | None) -> ClaimData | None:
    """The units' paired differences ``d`` as claim rows (each unit its own replicate, ``run_id`` naming it),
    their mean as the statistic; the arms are matched twins (same data, model and seed), so the design
    controls what they share and no further baseline applies."""
    if units is None or units.height == 0:
        return None
    return ClaimData(units.select(pl.col("unit").alias("run_id"), "dataset"), Mean(units["d"].to_numpy().astype(float)),
                     confound="twins (matched runs, by design)")


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the summary, the paired comparisons and the verdicts."""
    frame = _compared(_final_values(con))
    summary, comparisons = [], []
    arms = sorted(set(frame["arm"].to_list()), key=lambda a: (a != "none", a)) if frame.height else []
    for arm in arms:
        part = frame.filter(pl.col("arm") == arm)
        for metric in METRICS:
            per_unit = part.group_by("unit").agg(pl.col(metric).mean()).drop_nulls()
            m = mean_ci(per_unit[metric].to_numpy(), UNIT)
            summary.append({"arm": arm, "regularizer": part["regularizer"][0], "metric": metric,
                            "n_runs": part.height, "n_units": m.n, "mean": m.value, "ci_low": m.low, "ci_high": m.high})
    sam_arms = [a for a in arms if a.startswith("sam")]
    for arm in arms:
        if arm == "none":
            continue
        regularizer = frame.filter(pl.col("arm") == arm)["regularizer"][0]
        baselines = ["none"] + ([s for s in sam_arms if s != arm] if regularizer in (*PENALTIES, "fisher_sam") else [])
        for baseline in baselines:
            for metric in METRICS:
                units, n_pairs, dropped = paired_difference_units(frame, arm, baseline, metric)
                if n_pairs == 0:
                    continue
                comparisons.append(Comparison(arm, regularizer, baseline, metric,
                                              mean_ci(units["d"].to_numpy(), UNIT), n_pairs, dropped, units))
    write_table(con, "analysis_regularizers", _frame("analysis_regularizers", summary))
    write_table(con, "analysis_regularizers_pairs", _frame("analysis_regularizers_pairs",
                                                           [c.row() for c in comparisons]))
    write_verdicts(con, "regularizers", _verdicts(comparisons))


def _verdicts(comparisons: list[Comparison]) -> list[Verdict]:
    out = []
    by_key = {(c.arm, c.baseline, c.metric): c for c in comparisons}

    def comparison(arm: str, baseline: str, metric: str) -> Comparison | None:
        return by_key.get((arm, baseline, metric))

    def slug(arm: str) -> str:
        """``hessian_trace (lambda 0.01)`` -> ``hessian_trace_lambda_0.01``: ids stay unique across strengths."""
        return arm.replace(" (", "_").replace(")", "").replace(", ", "_").replace(" ", "_")

    def verdict(claim_id: str, claim: str, test: str, effect_name: str, predicted: str, c: Comparison) -> Verdict:
        band = ({"negligible": NEGLIGIBLE_ACCURACY, "band_units": "test accuracy"} if c.metric == "test_accuracy"
                else {"negligible": NEGLIGIBLE_LOG_RATIO, "band_units": "ln ratio"})
        return Verdict.of(c.difference, claim_id, "004", claim, test + "; mean per data set, pooled by random effects",
                          effect_name, predicted, detail=f"{c.n_pairs} matched pairs ({c.n_dropped} dropped)",
                          data=unit_claim_data(c.units), **band)

    arms = sorted({(c.arm, c.regularizer) for c in comparisons})
    sams = sorted(a for a, reg in arms if reg == "sam")
    for arm, reg in arms:
        if reg in PENALTIES:
            for metric, what in (("hessian_trace", "trace"), ("hessian_top_eigenvalue", "top eigenvalue")):
                c = comparison(arm, "none", metric)
                if c:
                    out.append(verdict(
                        f"regularizers.flatten.{slug(arm)}.{metric}", "Curvature penalties flatten the minimum.",
                        f"{arm} vs plain training on matched runs: mean over units of ln(final loss-Hessian {what} "
                        "ratio); t interval over units", f"ln({what} ratio)", "negative", c))
            for sam in sams:
                c = comparison(arm, sam, "test_accuracy")
                if c:
                    out.append(verdict(
                        f"regularizers.worse_than_sam.{slug(arm)}.vs.{slug(sam)}",
                        "Curvature penalties generalize worse than SAM.",
                        f"{arm} vs {sam} on matched runs: test accuracy difference at the end; t interval over units",
                        "test accuracy difference", "negative", c))
        if reg == "fisher_sam":
            for sam in sams:
                c = comparison(arm, sam, "test_accuracy")
                if c:
                    out.append(verdict(
                        f"regularizers.fisher_sam_beats_sam.{slug(arm)}.vs.{slug(sam)}",
                        "SAM with a Riemannian (Fisher) metric slightly beats SAM.",
                        f"{arm} vs {sam} on matched runs: test accuracy difference at the end; t interval over units",
                        "test accuracy difference", "positive", c))
    return out


# --- figures -----------------------------------------------------------------------------------------

_PANELS = (("test_accuracy", "test accuracy difference"), ("gap", "gap difference"),
           ("hessian_trace", "ln(Hessian trace ratio)"), ("hessian_top_eigenvalue", "ln(top eigenvalue ratio)"))


def comparison_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Paired differences from plain training per arm, with 95% intervals over units."""
    title = "Regularizers vs plain training on matched runs (mean paired difference, 95% CI over units)"
    rows = con.sql("""SELECT arm, metric, mean_difference, ci_low, ci_high, n_units FROM analysis_regularizers_pairs
                      WHERE baseline = 'none' ORDER BY arm""").pl()
    if rows.height == 0:
        return empty_figure(title, "no matched runs with plain training and another regularizer")
    arms = sorted(set(rows["arm"].to_list()))
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(4.2 * len(_PANELS), 0.5 * len(arms) + 2.2), sharey=True)
    for ax, (metric, label) in zip(axes, _PANELS, strict=True):
        part = rows.filter(pl.col("metric") == metric)
        for i, arm in enumerate(arms):
            r = part.filter(pl.col("arm") == arm)
            if r.height == 0 or r["mean_difference"][0] is None:
                continue
            m, lo, hi = r["mean_difference"][0], r["ci_low"][0], r["ci_high"][0]
            ax.plot([m], [i], "o", color=f"C{i}")
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [i, i], color=f"C{i}", lw=2)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel(label)
        ax.set_title(metric.replace("_", " "), fontsize=10)
    axes[0].set_yticks(range(len(arms)), arms, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- report ------------------------------------------------------------------------------------------

def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences and the comparison tables."""
    n_runs, n_arms, n_units = con.execute("""
        SELECT sum(n_runs) FILTER (WHERE metric = 'test_accuracy'), count(DISTINCT arm), max(n_units)
        FROM analysis_regularizers""").fetchall()[0]
    paragraphs = []
    if not n_runs:
        paragraphs.append("No matched runs: the corpus has no classification runs trained with a regularizer beside "
                          "the same run trained plainly.")
        return {"paragraphs": paragraphs, "tables": []}
    paragraphs.append(
        f"{n_runs} runs in {n_arms} arms, matched by every configuration field but the regularizer "
        f"(up to {n_units} data set x model units; seeds are averaged within a unit before the interval). "
        "Fisher SAM is the Riemannian SAM (Kim et al. 2022), the reading the paper leaves open.")
    for metric, what in (("test_accuracy", "test accuracy difference"),
                         ("hessian_trace", "ln ratio of the final loss-Hessian trace")):
        rows = con.execute("""SELECT arm, mean_difference, ci_low, ci_high FROM analysis_regularizers_pairs
                              WHERE baseline = 'none' AND metric = ? ORDER BY arm""", [metric]).fetchall()
        if rows:
            paragraphs.append(f"Against plain training, {what}: " + "; ".join(
                f"{a}: {fmt_number(m)} [{fmt_number(lo)}, {fmt_number(hi)}]" for a, m, lo, hi in rows) + ".")
    tables = [
        {"caption": "Final metrics per arm: mean over (data set, model) units (seeds averaged first), with the "
                    "test accuracy's t interval (analysis_regularizers)",
         "sql": """SELECT arm, n_runs, n_units,
                          round(max(mean) FILTER (WHERE metric = 'test_accuracy'), 4) AS test_accuracy,
                          round(max(ci_low) FILTER (WHERE metric = 'test_accuracy'), 4) AS acc_low,
                          round(max(ci_high) FILTER (WHERE metric = 'test_accuracy'), 4) AS acc_high,
                          round(max(mean) FILTER (WHERE metric = 'gap'), 4) AS gap,
                          round(max(mean) FILTER (WHERE metric = 'hessian_trace'), 4) AS hessian_trace,
                          round(max(mean) FILTER (WHERE metric = 'hessian_top_eigenvalue'), 4) AS top_eigenvalue,
                          round(max(mean) FILTER (WHERE metric = 'sharpness'), 5) AS sharpness
                   FROM analysis_regularizers GROUP BY arm, n_runs, n_units ORDER BY arm"""},
        {"caption": "Paired differences on matched runs (analysis_regularizers_pairs)",
         "sql": """SELECT arm, baseline, metric, scale, n_pairs, n_units, n_dropped, round(mean_difference, 4) AS mean,
                          round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, p_value
                   FROM analysis_regularizers_pairs ORDER BY baseline, metric, arm"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}


STAGE = Stage(
    name="regularizers", title="Curvature penalties, SAM and Fisher SAM", doc=__doc__,
    reads=("runs", "checkpoints", "hessian_spectra", "sharpness"), tables=TABLES, run=run,
    figures=[Figure(
        "regularizers_comparison", comparison_figure,
        "Each regularizer minus plain training on runs matched by data set, model and seed, at the end of training: "
        "test accuracy and gap (train - test accuracy) differences, and the log ratios of the loss-Hessian trace "
        "and top eigenvalue (below 0: flatter). Dots are means over (data set, model) units after averaging seeds; "
        "bars are t intervals over units.")],
    report=report, verdicts=True,
)
