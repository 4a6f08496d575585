"""The per-model table ``analysis_gap_models``: each completed classifier at three stages of its
training, with its gap and every predictor's raw value there."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from analyses.gap.predictors import MARGIN_REPRESENTATIONS, SIGNATURE, margin_column
from analyses.kit.features import SNAPSHOT_LOSS_TRACE_SQL
from analyses.kit.tables import write_table

#: Target fraction of training of each stage's snapshot.
TRAINING_STAGE_FRACTIONS = {"early": 0.2, "middle": 0.5, "late": 1.0}
TRAINING_STAGES = tuple(TRAINING_STAGE_FRACTIONS)
#: Largest distance, in fraction of training, between a stage's snapshot and its target.
STAGE_TOLERANCE = 0.1
#: Parameter tensors whose change is the distance from initialization (running statistics are not trained).
#: Stored tensors that are buffers, not trained parameters (a batch norm's running statistics).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def is_trained_tensor(name: str, layer_index: int) -> bool:
    """Whether a ``weights`` row enters the distance from initialization: every block's parameters
    (an MLP's ``linear.*`` and ``norm.*``, any other family's module state), not its buffers nor the
    gated edges added during training (``layer_index`` -1)."""
    return layer_index >= 0 and not name.endswith(BUFFER_SUFFIXES)
#: The view :func:`stage_steps` is registered as while the models table is written.
_STEPS_VIEW = "gap_stage_steps"


def stage_steps(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """(run_id, stage, step, fraction) for every completed classification run: ``late`` always, ``early`` and
    ``middle`` only where a snapshot other than the stages already taken lies within STAGE_TOLERANCE of the
    target fraction (a run without one drops out of the paired stage comparisons)."""
    snaps = con.sql("""
        SELECT c.run_id, c.step, c.step::DOUBLE / r.total_steps AS fraction
        FROM checkpoints c JOIN runs r USING (run_id)
        WHERE c.is_spectral AND c.step > 0 AND r.task = 'classification' AND r.status = 'complete'
        ORDER BY c.run_id, c.step""").pl()
    rows = []
    for (run_id,), g in snaps.group_by(["run_id"], maintain_order=True):
        steps, fractions = g["step"].to_numpy(), g["fraction"].to_numpy()
        last = len(steps) - 1
        rows.append({"run_id": run_id, "stage": "late", "step": int(steps[last]), "fraction": float(fractions[last])})
        used = {last}
        for stage in ("early", "middle"):
            distance = np.abs(fractions - TRAINING_STAGE_FRACTIONS[stage])
            distance[list(used)] = np.inf  # each stage its own snapshot
            i = int(np.argmin(distance))
            if distance[i] <= STAGE_TOLERANCE:
                used.add(i)
                rows.append({"run_id": run_id, "stage": stage, "step": int(steps[i]), "fraction": float(fractions[i])})
    schema = {"run_id": pl.Utf8, "stage": pl.Utf8, "step": pl.Int32, "fraction": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _models_sql() -> str:
    """The models table over the view of stage steps: one row per (run, stage)."""
    margin_cols = ",\n".join(
        f"max({stat}) FILTER (WHERE representation = '{rep}' AND correct_only = {str(c).upper()}) "
        f"AS {margin_column(rep, stat, c)}"
        for rep in MARGIN_REPRESENTATIONS for stat in SIGNATURE for c in (True, False))
    buffers = " OR ".join(f"w.tensor LIKE '%{b}'" for b in BUFFER_SUFFIXES)
    return f"""
        WITH m AS (
            SELECT run_id, step, {margin_cols},
                   string_agg(DISTINCT status, ',') FILTER (WHERE status <> 'ok') AS margin_status
            FROM margins WHERE split = 'train' GROUP BY run_id, step),
        trace AS ({SNAPSHOT_LOSS_TRACE_SQL}),
        spec AS (SELECT run_id, step, sum(ln(weight_spectral_norm)) AS log_spectral_norm_product
                 FROM layer_stats WHERE weight_spectral_norm > 0 GROUP BY run_id, step),
        dist AS (SELECT w.run_id, w.step,
                        sqrt(sum(list_distance(w."values"::DOUBLE[], w0."values"::DOUBLE[]) ^ 2)) AS distance_from_init
                 FROM weights w JOIN (SELECT DISTINCT run_id, step FROM {_STEPS_VIEW}) s
                                  ON s.run_id = w.run_id AND s.step = w.step
                 JOIN weights w0 ON w0.run_id = w.run_id AND w0.step = 0 AND w0.layer_index = w.layer_index
                                AND w0.tensor = w.tensor
                 WHERE w.layer_index >= 0 AND NOT ({buffers}) GROUP BY w.run_id, w.step)
        SELECT s.run_id, r.dataset, s.stage, s.step, s.fraction,
               c.train_accuracy - c.test_accuracy AS gap, fc.train_accuracy - fc.test_accuracy AS final_gap,
               c.train_accuracy, c.test_accuracy, c.train_loss, c0.train_loss AS initial_train_loss,
               r.label_noise, r.train_fraction, r.regularizer,
               m.* EXCLUDE (run_id, step, margin_status), m.margin_status,
               trace.hessian_trace,
               CASE WHEN sh.hessian_top_converged THEN sh.hessian_top_eigenvalue END AS hessian_top_eigenvalue,
               sh.sharpness, c.grad_norm,
               spec.log_spectral_norm_product, dist.distance_from_init, r.n_params::DOUBLE AS n_params
        FROM {_STEPS_VIEW} s
        JOIN runs r USING (run_id)
        JOIN checkpoints c ON c.run_id = s.run_id AND c.step = s.step
        JOIN checkpoints fc ON fc.run_id = s.run_id AND fc.step = r.final_step
        LEFT JOIN checkpoints c0 ON c0.run_id = s.run_id AND c0.step = 0
        LEFT JOIN m ON m.run_id = s.run_id AND m.step = s.step
        LEFT JOIN trace ON trace.run_id = s.run_id AND trace.step = s.step
        LEFT JOIN sharpness sh ON sh.run_id = s.run_id AND sh.step = s.step
        LEFT JOIN spec ON spec.run_id = s.run_id AND spec.step = s.step
        LEFT JOIN dist ON dist.run_id = s.run_id AND dist.step = s.step
        ORDER BY s.run_id, s.stage"""


def write_models(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_gap_models`` (see the stage's docstring for the columns)."""
    con.register(_STEPS_VIEW, stage_steps(con).to_arrow())
    try:
        write_table(con, "analysis_gap_models", _models_sql())
    finally:
        con.unregister(_STEPS_VIEW)
