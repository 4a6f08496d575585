"""The correlation stage's run: snapshots (with their phase) in, ``analysis_correlations`` and the
verdicts out."""

from __future__ import annotations

import duckdb
import polars as pl

from analyses.correlations.families import CONTROL_FOR_DATASET, correlation_family
from analyses.correlations.verdicts import claim_verdicts
from analyses.kit import features as feat
from analyses.kit.tables import has_table, write_table, write_verdicts

#: Order of phases in tables and figures.
PHASE_ORDER = ("all", "initial", "fast learning", "fine-tuning", "saturation", "single phase")

_COLUMNS = {"task": pl.Utf8, "phase": pl.Utf8, "feature": pl.Utf8, "feature_group": pl.Utf8, "metric": pl.Utf8,
            "n": pl.Int64, "n_runs": pl.Int64, "r": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
            "p_value": pl.Float64, "p_adjusted": pl.Float64, "significant": pl.Boolean}


def _snapshots(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """analysis_features rows with their phase (NULL when no phase table or no matching phase)."""
    if has_table(con, "analysis_dynamics_phases"):
        return con.sql("""
            SELECT f.*, p.phase FROM analysis_features f
            LEFT JOIN analysis_dynamics_phases p
                 ON p.run_id = f.run_id AND f.step BETWEEN p.start_step AND p.end_step
            QUALIFY row_number() OVER (PARTITION BY f.run_id, f.step ORDER BY p.phase_index) = 1
            ORDER BY f.run_id, f.step""").pl()
    return con.sql("SELECT *, NULL::VARCHAR AS phase FROM analysis_features ORDER BY run_id, step").pl()


def _phases(frame: pl.DataFrame) -> list[str]:
    """'all', then the phases present in ``frame``, in :data:`PHASE_ORDER` (unknown ones last, by name)."""
    present = [p for p in frame["phase"].unique().to_list() if p is not None]
    rank = {p: i for i, p in enumerate(PHASE_ORDER)}
    return ["all"] + sorted(present, key=lambda p: (rank.get(p, len(rank)), p))


def _with_stable_rank(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every analysis_features snapshot with the layer-mean stable-rank ratio ||W||_F²/||W||_2²/min(d, q)."""
    return con.sql("""
        WITH sr AS (
            SELECT run_id, step,
                   avg(weight_stable_rank / nullif(least(in_features, out_features), 0)) AS stable_rank_ratio
            FROM analysis_features_layer GROUP BY run_id, step
        )
        SELECT f.*, sr.stable_rank_ratio FROM analysis_features f LEFT JOIN sr USING (run_id, step)
        ORDER BY run_id, step""").pl()


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_correlations`` and ``analysis_correlations_verdicts``."""
    snaps = _snapshots(con)
    names = [f.name for f in feat.FEATURES]
    group_col = "dataset" if CONTROL_FOR_DATASET else None
    rows = []
    for task in sorted(snaps["task"].unique().to_list()):
        metrics = list(feat.METRICS.get(task, ()))
        sub = snaps.filter(pl.col("task") == task)
        for phase in _phases(sub):
            part = sub if phase == "all" else sub.filter(pl.col("phase") == phase)
            rows += [{"task": task, "phase": phase, **row}
                     for row in correlation_family(part, names, metrics, group_col)]
    write_table(con, "analysis_correlations",
                pl.DataFrame(rows, schema=_COLUMNS).with_columns(pl.col(pl.Float64).fill_nan(None)))
    write_verdicts(con, "correlations", claim_verdicts(_with_stable_rank(con)))
