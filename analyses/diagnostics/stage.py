"""The diagnostics stage's run: the layer features in, ``findings``, the summary, the normalization
comparison and the verdicts out."""

from __future__ import annotations

import duckdb
import polars as pl

from analyses.diagnostics.derived import derive_columns
from analyses.diagnostics.findings import CRITICAL, INFO, WARNING, findings_frame
from analyses.diagnostics.normalization import (
    NORMALIZATION_RULE,
    NORMALIZATION_THRESHOLD,
    normalization_comparison,
    normalization_twins,
    rule_normalization_effect,
)
from analyses.diagnostics.rules import RULES, last_minus_first_near_zero
from analyses.diagnostics.verdicts import (
    verdict_bias,
    verdict_last_layers,
    verdict_normalization,
    verdict_rigid,
    verdict_saddle,
    verdict_saturation,
)
from analyses.kit.tables import write_table, write_verdicts


def all_findings(frame: pl.DataFrame, comparison: pl.DataFrame) -> pl.DataFrame:
    """Every rule's findings: the per-snapshot rules on the derived layer frame, then the run-level
    normalization rule on the twin comparison."""
    parts = [fn(frame) for fn, _ in RULES.values()] + [rule_normalization_effect(comparison)]
    return pl.concat(parts, how="vertical") if parts else findings_frame([])


def summary_frame(findings: pl.DataFrame) -> pl.DataFrame:
    """(rule, severity, n_findings, n_runs, n_snapshots, threshold) for every rule x possible severity."""
    spec = [(rule, sev, text) for rule, (_, text) in RULES.items() for sev in (WARNING, CRITICAL)]
    spec.append((NORMALIZATION_RULE, INFO, NORMALIZATION_THRESHOLD))
    base = pl.DataFrame(spec, schema={"rule": pl.Utf8, "severity": pl.Utf8, "threshold": pl.Utf8}, orient="row")
    counts = findings.group_by("rule", "severity").agg(
        n_findings=pl.len(), n_runs=pl.col("run_id").n_unique(),
        n_snapshots=pl.struct("run_id", "step").filter(pl.col("step").is_not_null()).n_unique())
    out = base.join(counts, on=["rule", "severity"], how="left").with_columns(
        pl.col("n_findings", "n_runs", "n_snapshots").fill_null(0).cast(pl.Int64))
    return out.select("rule", "severity", "n_findings", "n_runs", "n_snapshots", "threshold")


def findings_rows(con: duckdb.DuckDBPyConnection, findings: pl.DataFrame) -> duckdb.DuckDBPyRelation:
    """The findings as ``findings`` rows: evidence entries made a MAP, sorted by run, step and layer
    (run-level findings first)."""
    return (con.from_arrow(findings.to_arrow())
            .project("run_id, step, layer_index, rule, severity, message, map_from_entries(evidence) AS evidence")
            .order("run_id, step NULLS FIRST, layer_index NULLS FIRST, rule"))


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``findings``, the summary, the normalization comparison and the verdicts."""
    layer = con.sql("SELECT * FROM analysis_features_layer ORDER BY run_id, step, layer_index").pl()
    runs = con.sql("SELECT run_id, norm, n_probe, config_json FROM runs ORDER BY run_id").pl()
    snapshots = con.sql("SELECT run_id, dataset, step, train_loss, gap_loss, alignment FROM analysis_features "
                        "ORDER BY run_id, step").pl()
    frame = derive_columns(layer, runs)
    twins = normalization_twins(runs.filter(pl.col("run_id").is_in(frame["run_id"].unique().implode())))
    comparison = normalization_comparison(frame, twins)
    findings = all_findings(frame, comparison)
    write_table(con, "findings", findings_rows(con, findings))
    write_table(con, "analysis_diagnostics_summary", summary_frame(findings))
    write_table(con, "analysis_diagnostics_normalization", comparison)
    write_verdicts(con, "diagnostics", [
        *verdict_saturation(frame),
        verdict_normalization(comparison),
        *verdict_bias(frame, "local"),
        *verdict_bias(frame, "loss"),
        *verdict_saddle(frame),
        *verdict_last_layers(last_minus_first_near_zero(frame), snapshots),
        verdict_rigid(snapshots),
    ])
