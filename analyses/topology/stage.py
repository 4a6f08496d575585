"""The topology stage's run: stored weights and layer features in, every table of the stage out."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from tqdm import tqdm

from analyses.kit.features import layer_position
from analyses.kit.tables import write_table, write_verdicts
from analyses.topology.correlations import MIN_SWEEP_FRACTIONS, correlation_table
from analyses.topology.layers import topology_rows
from analyses.topology.runs import run_rows, sweep_id
from analyses.topology.schema import polars_schema
from analyses.topology.verdicts import topology_verdicts
from pipeline.snapshot.weight_matrices import (
    WHOLE,
    is_packed_projection,
    is_weight_tensor,
    matrix_parts,
    principal_tensor,
)

_SNAPSHOTS_SQL = """
SELECT t.*, f.dataset, f.task, f.size, f.architecture, f.activation, f.train_fraction, f.seed, f.epoch,
       f.progress, f.n_layers, f.is_output, f.primary_metric AS test_metric,
       CASE WHEN f.task = 'classification' THEN 'test_accuracy' ELSE 'test_r2' END AS test_metric_name,
       r.config_json
FROM layer_topology t JOIN analysis_features_layer f USING (run_id, step, layer_index)
JOIN runs r USING (run_id)
WHERE t.principal  -- one cloud per block: its principal matrix (all of them stay in layer_topology)
ORDER BY run_id, step, layer_index"""

_TRAIN_FRACTION_SQL = f"""
WITH sweeps AS (
    SELECT sweep FROM analysis_topology_runs GROUP BY sweep
    HAVING count(DISTINCT train_fraction) >= {MIN_SWEEP_FRACTIONS})
SELECT metric, position, dataset, size, train_fraction, count(DISTINCT run_id) AS n_runs,
       avg("final") AS final_mean, stddev_samp("final") AS final_sd, avg(change) AS change_mean,
       avg(test_metric) AS test_metric_mean, any_value(test_metric_name) AS test_metric_name
FROM analysis_topology_runs WHERE sweep IN (SELECT sweep FROM sweeps)
GROUP BY ALL ORDER BY metric, position, dataset, size, train_fraction"""


def block_matrices(tensors: dict[str, np.ndarray]) -> list[tuple[str, str, np.ndarray, np.ndarray | None, bool]]:
    """(name, part, matrix, bias or None, principal) for every weight matrix of one block's stored tensors.

    The matrices are :mod:`pipeline.snapshot.weight_matrices`'s: a tensor with 2 or more axes not named
    ``*bias``, read as rows = its first axis (a neuron, an output channel, a projection's output)
    against all the others; its bias is the tensor named like it with ``bias`` for ``weight``, when it
    has one entry per row. The principal tensor is the largest (the alphabetically first name on ties),
    as in the ``layers`` table, read whole (part ``all``). A packed Q/K/V projection is a cloud as a
    whole and also each of its parts ``q``, ``k``, ``v`` (its thirds by rows, with their biases)."""
    out = []
    for name, t in tensors.items():
        if not is_weight_tensor(name, t.shape):
            continue
        matrix = t.reshape(t.shape[0], -1)
        bias = tensors.get(name[: -len("weight")] + "bias") if name.endswith("weight") else None
        bias = bias if bias is not None and bias.shape == (t.shape[0],) else None
        out.append((name, WHOLE, matrix, bias))
        if is_packed_projection(name, t.shape):
            out += [(name, part, matrix[rows], None if bias is None else bias[rows])
                    for part, rows in matrix_parts(name, t.shape)]
    if not out:
        return []
    principal = list(tensors)[principal_tensor([(n, t.shape) for n, t in tensors.items()])]
    return [(n, part, m, b, n == principal and part == WHOLE) for n, part, m, b in out]


def _write_layer_topology(con: duckdb.DuckDBPyConnection) -> None:
    """``layer_topology`` and ``layer_topology_bars`` of every stored weight matrix of every block."""
    run_ids = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM weights ORDER BY run_id").fetchall()]
    rows, bars = [], []
    for run_id in tqdm(run_ids, desc="topology", unit="run", leave=False, disable=None):
        # One run at a time: a paper-scale corpus's weights do not fit in memory at once.
        tensors = con.execute("""
            SELECT step, layer_index, tensor, shape, "values" FROM weights
            WHERE run_id = ? AND layer_index >= 0 AND (len(shape) >= 2 OR tensor LIKE '%bias')
            ORDER BY step, layer_index, tensor""", [run_id]).fetchall()
        by_layer: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for step, layer_index, tensor, shape, values in tensors:
            by_layer.setdefault((step, layer_index), {})[tensor] = np.asarray(values, np.float32).reshape(shape)
        for (step, layer_index), t in by_layer.items():
            for name, part, matrix, bias, principal in block_matrices(t):
                row, layer_bars = topology_rows(run_id, step, layer_index, matrix, bias, name, principal, part)
                rows.append(row)
                bars += layer_bars
    write_table(con, "layer_topology", pl.DataFrame(rows, schema=polars_schema("layer_topology"))
                .sort("run_id", "step", "layer_index", "tensor", "part"))
    write_table(con, "layer_topology_bars", pl.DataFrame(bars, schema=polars_schema("layer_topology_bars"))
                .sort("run_id", "step", "layer_index", "tensor", "part", "bar_index"))


def _write_snapshots(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``analysis_topology_snapshots``: the layer rows with their run's configuration, layer position,
    test metric and sweep (named by its first run id); returned in the order of the join."""
    frame = con.sql(_SNAPSHOTS_SQL).pl()
    if frame.height:
        positions = layer_position(frame["layer_index"].to_numpy(), frame["n_layers"].to_numpy(),
                                   frame["is_output"].fill_null(False).to_numpy())
        sweeps = [sweep_id(c) for c in frame["config_json"].to_list()]
    else:
        positions, sweeps = [], []
    frame = frame.with_columns(pl.Series("position", positions, pl.Utf8), pl.Series("sweep", sweeps, pl.Utf8))
    # A sweep is named by its first run id, short enough to group by and read.
    names = frame.group_by("sweep").agg(pl.col("run_id").min().alias("sweep_name"))
    frame = frame.join(names, on="sweep", how="left").drop("sweep", "config_json").rename({"sweep_name": "sweep"})
    write_table(con, "analysis_topology_snapshots", frame.sort("run_id", "step", "layer_index"))
    return frame


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write every table of the stage: layer topology, snapshots, runs, correlations, train fraction, verdicts."""
    _write_layer_topology(con)
    snapshots = _write_snapshots(con)
    runs = run_rows(snapshots)
    write_table(con, "analysis_topology_runs", runs.sort("run_id", "layer_index", "metric"))
    corr = correlation_table(runs)
    write_table(con, "analysis_topology_correlations", corr)
    write_table(con, "analysis_topology_train_fraction", _TRAIN_FRACTION_SQL)
    fixed = {r for (r,) in con.execute("SELECT run_id FROM runs WHERE coalesce(TRY_CAST(json_extract_string("
                                        "config_json, '$.fixed_steps') AS BOOLEAN), false)").fetchall()}
    write_verdicts(con, "topology", topology_verdicts(corr, runs, fixed))
