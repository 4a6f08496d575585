"""The propagation stage's run: shadows, then the per-run, per-arm and verdict tables."""

from __future__ import annotations

import duckdb
import polars as pl

from analyses.kit.tables import write_table, write_verdicts
from analyses.propagation.cells import ARM_SQL, cells
from analyses.propagation.coupling import shadow_rows
from analyses.propagation.schema import TABLES
from analyses.propagation.verdicts import verdicts

# Per MLP run with a coupling map, everything but its cell and its maps' coherence and shadows
# (computed in Python and joined in :func:`run`). The target loss of a data set is the median final
# train loss of its runs; steps to target is the first checkpoint at or below it.
_RUNS_SQL = f"""
WITH base AS (
    SELECT r.run_id, r.dataset, r.task, {ARM_SQL} AS arm, r.lr, r.seed, r.epochs, r.status, r.total_steps
    FROM runs r WHERE r.coupling_probes > 0 AND r.family = 'mlp'
), last AS (
    SELECT b.run_id, c.train_loss AS final_train_loss,
           CASE WHEN b.task = 'classification' THEN c.test_accuracy ELSE c.test_r2 END AS final_test_metric
    FROM base b JOIN runs r USING (run_id) JOIN checkpoints c ON c.run_id = r.run_id AND c.step = r.final_step
), target AS (
    SELECT b.dataset, median(l.final_train_loss) AS target_loss FROM base b JOIN last l USING (run_id)
    GROUP BY b.dataset
), reach AS (
    SELECT b.run_id, min(c.step) AS steps_to_target FROM base b JOIN target t USING (dataset)
    JOIN checkpoints c ON c.run_id = b.run_id AND c.train_loss <= t.target_loss GROUP BY b.run_id
), edges AS (
    SELECT run_id, count(*) AS edges_added FROM augmentations GROUP BY run_id
)
SELECT b.*, l.final_test_metric, l.final_train_loss, t.target_loss, x.steps_to_target,
       x.steps_to_target IS NOT NULL AS reached, coalesce(e.edges_added, 0) AS edges_added
FROM base b LEFT JOIN last l USING (run_id) LEFT JOIN target t USING (dataset) LEFT JOIN reach x USING (run_id)
LEFT JOIN edges e USING (run_id)
ORDER BY b.dataset, b.seed, b.lr, arm"""

# Per (data set, arm), then per arm over the data sets. A run that never reaches the target counts as
# its total steps in the median; the loss variance is over seeds per lr, averaged over lrs; the lr
# sensitivity is the range over lrs of the seed-averaged final test metric.
_ARMS_SQL = """
WITH runs_ AS (SELECT *, coalesce(steps_to_target, total_steps) AS steps_censored
               FROM analysis_propagation_runs),
seeds AS (  -- per (data set, arm, lr): across seeds
    SELECT dataset, arm, lr, var_samp(final_train_loss) AS loss_var, avg(final_test_metric) AS metric
    FROM runs_ GROUP BY dataset, arm, lr
), lrs AS (  -- per (data set, arm): across learning rates
    SELECT dataset, arm, avg(loss_var) AS loss_variance_across_seeds,
           max(metric) - min(metric) AS lr_sensitivity
    FROM seeds GROUP BY dataset, arm
), per AS (
    SELECT dataset, arm, count(*) AS n_runs, avg(final_test_metric) AS final_test_metric,
           avg(final_train_loss) AS final_train_loss, avg(reached::INTEGER) AS reached_fraction,
           median(steps_censored) AS median_steps_to_target, avg(edges_added) AS edges_added,
           avg(coherence_last) AS final_coherence, avg(shadows_last) AS final_shadows
    FROM runs_ GROUP BY dataset, arm
)
SELECT p.*, l.loss_variance_across_seeds, l.lr_sensitivity FROM per p JOIN lrs l USING (dataset, arm)
UNION ALL
SELECT 'all' AS dataset, p.arm, sum(n_runs), avg(final_test_metric), avg(final_train_loss),
       avg(reached_fraction), avg(median_steps_to_target), avg(edges_added), avg(final_coherence),
       avg(final_shadows), avg(l.loss_variance_across_seeds), avg(l.lr_sensitivity)
FROM per p JOIN lrs l USING (dataset, arm) GROUP BY p.arm
ORDER BY dataset = 'all', dataset, arm"""


def _columns(table: str) -> list[str]:
    return [c for c, _ in TABLES[table]]


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``shadows``, the per-run and per-arm tables, and the verdicts."""
    shadows, per_run = shadow_rows(con)
    write_table(con, "shadows", pl.DataFrame(shadows, schema=_columns("shadows"), infer_schema_length=None))
    coherence = pl.DataFrame(per_run, schema={"run_id": pl.Utf8, "coherence_first": pl.Float64,
                                              "coherence_last": pl.Float64, "shadows_last": pl.Int32})
    # the cells and the maps' coherence come from Python: joined to the SQL's rows here, in its order
    runs = (con.sql(_RUNS_SQL).pl()
            .join(cells(con), on="run_id", how="inner", maintain_order="left")
            .join(coherence, on="run_id", how="left", maintain_order="left")
            .select(_columns("analysis_propagation_runs")))
    write_table(con, "analysis_propagation_runs", runs)
    write_table(con, "analysis_propagation", _ARMS_SQL)
    write_verdicts(con, "propagation", verdicts(con.sql("SELECT * FROM analysis_propagation_runs").pl()))
