"""The pressure stage's run: the layer features in, the pressure tables, the per-run bottleneck rows and
the verdicts out."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from analyses.kit.tables import write_table, write_verdicts
from analyses.pressure.coincidence import Coincidence, coincidence
from analyses.pressure.layers import LAYERS_SQL, SNAPSHOT_LAYERS_SQL, layer_subsets
from analyses.pressure.rank_correlation import RankCorrelation, pooled_rank_correlation
from analyses.pressure.verdicts import pressure_verdicts

#: Per run: the top-pressure layer (highest early pressure) and what it does, the slowest-improving layer.
_BOTTLENECKS_SQL = """
WITH usable AS (
    SELECT * FROM analysis_pressure_layers WHERE early_pressure IS NOT NULL
), top AS (
    SELECT run_id, arg_max(layer_index, early_pressure) AS top_layer,
           arg_max(is_output, early_pressure) AS top_is_output,
           arg_max(relative_depth, early_pressure) AS top_relative_depth,
           arg_max(early_pressure_share, early_pressure) AS top_share,
           arg_max(grad_log_decrease, early_pressure) AS top_grad_log_decrease,
           arg_max(saturation_rise, early_pressure) AS top_saturation_rise,
           arg_max(weight_movement, early_pressure) AS top_weight_movement,
           count(*) AS n_layers_with_pressure
    FROM usable GROUP BY run_id
), slow AS (
    SELECT run_id, arg_min(layer_index, grad_log_decrease) AS slowest_layer,
           count(*) AS n_layers_compared
    FROM usable WHERE grad_log_decrease IS NOT NULL GROUP BY run_id
), ctx AS (
    SELECT run_id, any_value(dataset) AS dataset, any_value(architecture) AS architecture,
           any_value(activation) AS activation, any_value(n_layers) AS n_layers
    FROM analysis_pressure_layers GROUP BY run_id
)
SELECT ctx.*, top.* EXCLUDE (run_id), slow.slowest_layer, slow.n_layers_compared,
       top.top_layer = slow.slowest_layer AS top_is_slowest,
       1.0 / slow.n_layers_compared AS chance_rate
FROM ctx LEFT JOIN top USING (run_id) LEFT JOIN slow USING (run_id)
ORDER BY ctx.run_id
"""

#: The bottleneck table's per-run ρ columns and the test each comes from.
_RHO_COLUMNS = {"rho_improvement": "improvement", "rho_improvement_hidden": "improvement_hidden",
                "rho_saturation": "saturation", "rho_movement": "movement"}


def run_tests(layers: pl.DataFrame) -> dict[str, RankCorrelation | Coincidence]:
    """The tests on ``analysis_pressure_layers`` rows: early pressure against the gradient-norm log-decrease
    (all layers; hidden layers), the saturation rise (hidden saturating layers), the weight movement, and
    the top-pressure/slowest-improving coincidence; and the mechanism's baseline, the initial log gradient
    norm against the same log-decrease (all layers; hidden layers; per-run ρ only)."""
    f = layer_subsets(layers)

    def cols(frame, y):
        return (frame["run_id"].to_numpy(), frame["early_pressure"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                frame[y].cast(pl.Float64).fill_null(np.nan).to_numpy())

    def grad_cols(frame):
        return (frame["run_id"].to_numpy(), frame["initial_log_grad"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                frame["grad_log_decrease"].cast(pl.Float64).fill_null(np.nan).to_numpy())

    return {
        "improvement": pooled_rank_correlation(*cols(f["all"], "grad_log_decrease")),
        "improvement_hidden": pooled_rank_correlation(*cols(f["hidden"], "grad_log_decrease")),
        "gradient_size": pooled_rank_correlation(*grad_cols(f["all"]), n_boot=0, n_perm=0),
        "metric": pooled_rank_correlation(
            f["all"]["run_id"].to_numpy(), f["all"]["early_metric_ratio"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
            f["all"]["grad_log_decrease"].cast(pl.Float64).fill_null(np.nan).to_numpy()),
        "gradient_size_hidden": pooled_rank_correlation(*grad_cols(f["hidden"]), n_boot=0, n_perm=0),
        "saturation": pooled_rank_correlation(*cols(f["saturation"], "saturation_rise")),
        "movement": pooled_rank_correlation(*cols(f["all"], "weight_movement")),
        "coincidence": coincidence(*cols(f["all"], "grad_log_decrease")),
    }


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the pressure tables and verdicts."""
    write_table(con, "analysis_pressure", SNAPSHOT_LAYERS_SQL)
    write_table(con, "analysis_pressure_layers", LAYERS_SQL)
    layers = con.sql("SELECT * FROM analysis_pressure_layers ORDER BY run_id, layer_index").pl()
    tests = run_tests(layers)
    rho = pl.DataFrame(
        {"run_id": layers["run_id"].unique(maintain_order=True).to_list()}, schema={"run_id": pl.Utf8}
    ).with_columns([pl.col("run_id").replace_strict(tests[t].rho, default=None, return_dtype=pl.Float64).alias(c)
                    for c, t in _RHO_COLUMNS.items()])
    write_table(con, "analysis_pressure_bottlenecks",
                con.sql(_BOTTLENECKS_SQL).pl().join(rho, on="run_id", how="left", maintain_order="left"))
    n_top_out = con.execute("SELECT count(*) FILTER (WHERE top_is_output), count(top_layer) "
                            "FROM analysis_pressure_bottlenecks").fetchall()[0]
    datasets = dict(layers.select("run_id", "dataset").unique("run_id").iter_rows())
    write_verdicts(con, "pressure", pressure_verdicts(tests, n_top_out, datasets, layer_subsets(layers)))
