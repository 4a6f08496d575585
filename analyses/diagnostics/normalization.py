"""Normalized runs against their unnormalized twins (001 §5.2): the matching, the run-level comparison
(``analysis_diagnostics_normalization``) and the run-level rule ``normalization_effect``."""

from __future__ import annotations

import json

import polars as pl

from analyses.diagnostics.findings import INFO, finding_row, findings_frame

#: Run-level metrics compared between normalized runs and their twins (mean over hidden-layer rows).
NORMALIZATION_METRICS = ("saturation_fraction", "local_near_zero_fraction", "local_effective_rank_ratio",
                         "loss_near_zero_fraction", "loss_effective_rank_ratio", "loss_negative_mass",
                         "loss_symmetry")
#: RunSpec fields that change what is measured but not the trained network: ignored when matching twins.
TWIN_IGNORED_FIELDS = ("norm", "metric_checkpoints", "spectral_snapshots", "hessian_exact_limit", "hvp_budget")

#: The run-level rule's name in ``findings`` and the summary.
NORMALIZATION_RULE = "normalization_effect"
#: Its threshold text in the summary.
NORMALIZATION_THRESHOLD = "mean hidden-layer saturation with normalization >= without (twin run)"


def normalization_twins(runs: pl.DataFrame) -> pl.DataFrame:
    """(run_id, twin_run_id): each run with norm != 'none' and the run with norm = 'none' whose
    configuration (``config_json``) is identical but for TWIN_IGNORED_FIELDS. runs: run_id, norm,
    config_json."""
    def key(config: str) -> str:
        d = json.loads(config)
        return json.dumps({k: v for k, v in d.items() if k not in TWIN_IGNORED_FIELDS}, sort_keys=True)

    keyed = runs.select("run_id", "norm", pl.col("config_json").map_elements(key, return_dtype=pl.Utf8).alias("k"))
    plain = keyed.filter(pl.col("norm") == "none").select("k", twin_run_id="run_id").unique("k", keep="first")
    normed = keyed.filter(pl.col("norm") != "none")
    return normed.join(plain, on="k", how="inner").select("run_id", "twin_run_id").sort("run_id")


def normalization_comparison(frame: pl.DataFrame, twins: pl.DataFrame) -> pl.DataFrame:
    """Long table (dataset, norm, metric, value_with_norm, value_without, difference, run_id, twin_run_id):
    run-level means over hidden-layer rows of each NORMALIZATION_METRICS column. frame: derived layer
    rows with run_id, dataset, norm, hidden and the metrics; twins: :func:`normalization_twins`."""
    schema = {"dataset": pl.Utf8, "norm": pl.Utf8, "metric": pl.Utf8, "value_with_norm": pl.Float64,
              "value_without": pl.Float64, "difference": pl.Float64, "run_id": pl.Utf8, "twin_run_id": pl.Utf8}
    metrics = [m for m in NORMALIZATION_METRICS if m in frame.columns]
    if twins.is_empty() or not metrics:
        return pl.DataFrame(schema=schema)
    per_run = (frame.filter(pl.col("hidden"))
               .group_by("run_id").agg(pl.col("dataset").first(), pl.col("norm").first(),
                                       *[pl.col(m).fill_nan(None).mean() for m in metrics]))
    long = per_run.unpivot(index=["run_id", "dataset", "norm"], on=metrics, variable_name="metric",
                           value_name="value")
    out = (twins.join(long, on="run_id", how="inner")
           .join(long.select(twin_run_id="run_id", metric="metric", value_without="value"),
                 on=["twin_run_id", "metric"], how="inner")
           .rename({"value": "value_with_norm"})
           .with_columns(difference=pl.col("value_with_norm") - pl.col("value_without")))
    return out.select(list(schema)).cast(schema).sort("dataset", "norm", "metric", "run_id")


def rule_normalization_effect(comparison: pl.DataFrame) -> pl.DataFrame:
    """normalization_effect (001 §5.2, severity ``info``, run-level): for each normalized run whose
    mean saturation_fraction is not lower than its unnormalized twin's (difference >= 0)."""
    rows = []
    sat = comparison.filter((pl.col("metric") == "saturation_fraction") & pl.col("difference").is_not_null())
    for r in sat.iter_rows(named=True):
        if r["difference"] < 0:
            continue
        rows.append(finding_row(
            {"run_id": r["run_id"], "step": None}, NORMALIZATION_RULE, INFO,
            f"{r['norm']} on {r['dataset']}: mean saturation {r['value_with_norm']:.3g} against "
            f"{r['value_without']:.3g} without normalization (run {r['twin_run_id']}): not lower",
            {"saturation_with_norm": r["value_with_norm"], "saturation_without": r["value_without"],
             "difference": r["difference"]}, layer=False))
    return findings_frame(rows)

