"""The per-snapshot and per-layer quantities of the pressure stage, in SQL: pressure rank and share
within a snapshot; early and late means, the gradient-norm log-decrease, weight movement and the
saturation rise of each layer (see the stage docstring, "Definitions"); and the layer subsets the
tests use."""

from __future__ import annotations

import polars as pl

#: Checkpoints with progress <= this are "early", the rest "late".
EARLY_PROGRESS = 0.5
#: Activations whose saturation (flat tails) the later-saturation test uses.
SATURATING = ("sigmoid", "tanh")
#: Gradient norms below this are floored before the logarithm.
GRAD_FLOOR = 1e-30

#: ``analysis_pressure``: one row per spectral snapshot layer.
SNAPSHOT_LAYERS_SQL = """
SELECT run_id, step, dense_rank() OVER (PARTITION BY run_id ORDER BY step) - 1 AS snapshot_index, progress,
       dataset, task, architecture, activation, optimizer, n_layers, layer_index, relative_depth, is_output,
       gradient_pressure,
       CASE WHEN gradient_pressure IS NULL THEN NULL ELSE
            rank() OVER (PARTITION BY run_id, step ORDER BY gradient_pressure DESC NULLS LAST) END
            AS pressure_rank_in_snapshot,
       gradient_pressure / nullif(sum(abs(gradient_pressure)) OVER (PARTITION BY run_id, step), 0)
            AS pressure_share,
       saturation_fraction, dead_fraction, grad_norm, weight_norm
FROM analysis_features_layer
ORDER BY run_id, step, layer_index
"""

#: ``analysis_pressure_layers``: one row per (run, layer). The gradient norm is stored at every metric
#: checkpoint (``layer_stats``), the rest at spectral snapshots only (``analysis_features_layer``).
LAYERS_SQL = f"""
WITH spec AS (
    SELECT run_id, layer_index,
           any_value(dataset) AS dataset, any_value(architecture) AS architecture,
           any_value(activation) AS activation, any_value(n_layers) AS n_layers,
           any_value(relative_depth) AS relative_depth, any_value(is_output) AS is_output,
           avg(gradient_pressure) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS early_pressure,
           avg(gradient_pressure) FILTER (WHERE progress > {EARLY_PROGRESS}) AS late_pressure,
           avg(natural_gradient_norm / nullif(grad_norm * grad_norm, 0))
               FILTER (WHERE progress <= {EARLY_PROGRESS}) AS early_metric_ratio,
           avg(saturation_fraction) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS saturation_early,
           avg(saturation_fraction) FILTER (WHERE progress > {EARLY_PROGRESS}) AS saturation_late,
           avg(dead_fraction) FILTER (WHERE progress > {EARLY_PROGRESS})
             - avg(dead_fraction) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS dead_rise,
           count(*) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS n_early_snapshots,
           count(*) FILTER (WHERE progress > {EARLY_PROGRESS}) AS n_late_snapshots
    FROM analysis_features_layer GROUP BY run_id, layer_index
), grads AS (
    SELECT s.run_id, s.layer_index,
           avg(ln(greatest(s.grad_norm, {GRAD_FLOOR})))
               FILTER (WHERE s.step::DOUBLE / greatest(r.total_steps, 1) <= {EARLY_PROGRESS})
         - avg(ln(greatest(s.grad_norm, {GRAD_FLOOR})))
               FILTER (WHERE s.step::DOUBLE / greatest(r.total_steps, 1) > {EARLY_PROGRESS})
           AS grad_log_decrease,
           arg_min(ln(greatest(s.grad_norm, {GRAD_FLOOR})), s.step) AS initial_log_grad,
           count(s.grad_norm) AS n_grad_checkpoints
    FROM layer_stats s JOIN runs r USING (run_id)
    WHERE s.grad_norm IS NOT NULL
    GROUP BY s.run_id, s.layer_index
), w AS (
    SELECT run_id, layer_index, arg_min("values", step) AS w0, arg_max("values", step) AS w1
    FROM weights WHERE tensor = 'linear.weight' GROUP BY run_id, layer_index
), moves AS (
    SELECT run_id, layer_index,
           CASE WHEN len(w0) = len(w1) AND list_dot_product(w0, w0) > 0
                THEN list_distance(w1, w0) / sqrt(list_dot_product(w0, w0)) END AS weight_movement
    FROM w
)
SELECT spec.run_id, spec.layer_index, dataset, architecture, activation, n_layers, relative_depth, is_output,
       early_pressure, late_pressure, early_metric_ratio,
       CASE WHEN early_pressure IS NULL THEN NULL ELSE
            rank() OVER (PARTITION BY spec.run_id ORDER BY early_pressure DESC NULLS LAST) END AS early_pressure_rank,
       early_pressure / nullif(sum(abs(early_pressure)) OVER (PARTITION BY spec.run_id), 0) AS early_pressure_share,
       grad_log_decrease, initial_log_grad, weight_movement,
       saturation_early, saturation_late, saturation_late - saturation_early AS saturation_rise, dead_rise,
       n_early_snapshots, n_late_snapshots, n_grad_checkpoints
FROM spec LEFT JOIN grads USING (run_id, layer_index) LEFT JOIN moves USING (run_id, layer_index)
ORDER BY spec.run_id, spec.layer_index
"""


def layer_subsets(layers: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The layer subsets of the tests, from ``analysis_pressure_layers`` rows: "all" layers, "hidden"
    layers (no output layer) and "saturation" (hidden layers of a :data:`SATURATING` activation)."""
    hidden = layers.filter(~pl.col("is_output"))
    return {"all": layers, "hidden": hidden,
            "saturation": hidden.filter(pl.col("activation").is_in(list(SATURATING)))}
