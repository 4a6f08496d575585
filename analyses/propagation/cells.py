"""The four arms, the cells that pair them, and the paired differences the verdicts test.

A run's *arm* follows from its options: ``template`` (``residual = 'every'``), ``plain``
(``augment = 'none'``), else its ``augment`` (``synthesized`` or ``random``). Its *cell* is a hash of
its configuration without the arm fields: the arms of one cell start from the same initialization
and see the same batches until synthesis, so differences within a cell are the arm's effect.
"""

from __future__ import annotations

import hashlib
import json

import duckdb
import numpy as np
import polars as pl

ARMS = ("plain", "template", "synthesized", "random")
#: Fields that make the arms of one cell differ.
ARM_FIELDS = ("residual", "augment", "augment_at", "edge_budget", "trial_steps")
#: SQL: the arm of the run ``r`` (a ``runs`` row).
ARM_SQL = """CASE WHEN r.residual = 'every' THEN 'template' WHEN r.augment = 'none' THEN 'plain'
                   ELSE r.augment END"""


def cells(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """run_id -> cell (every run): the first 16 hex digits of the SHA-256 of the run's configuration
    JSON (keys sorted) without :data:`ARM_FIELDS`."""
    rows = con.execute("SELECT run_id, config_json FROM runs").fetchall()
    out = []
    for _, config in rows:
        d = {k: v for k, v in json.loads(config).items() if k not in ARM_FIELDS}
        out.append(hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16])
    return pl.DataFrame({"run_id": [r[0] for r in rows], "cell": out}, schema={"run_id": pl.Utf8, "cell": pl.Utf8})


def paired_difference_units(frame: pl.DataFrame, arm: str, baseline: str, column: str, unit: list[str]
                            ) -> pl.DataFrame:
    """Per unit (e.g. ``["dataset", "lr"]``), the mean over the unit's seeds and cells of
    ``column[arm] - column[baseline]``, both arms' runs of one (cell, seed, lr) averaged first. ``frame``
    holds ``analysis_propagation_runs`` rows. Returns the unit columns and ``d`` (one row per unit, sorted);
    empty when an arm is absent."""
    wide = (frame.filter(pl.col("arm").is_in([arm, baseline]))
            .pivot(on="arm", index=["cell", "dataset", "lr", "seed"], values=column, aggregate_function="mean"))
    if arm not in wide.columns or baseline not in wide.columns:
        return pl.DataFrame(schema={**{u: frame.schema[u] for u in unit}, "d": pl.Float64})
    diff = wide.with_columns((pl.col(arm) - pl.col(baseline)).alias("d")).drop_nulls("d")
    return diff.group_by(unit).agg(pl.col("d").mean()).sort(unit)


def paired_differences(frame: pl.DataFrame, arm: str, baseline: str, column: str, unit: list[str]) -> np.ndarray:
    """The ``d`` of :func:`paired_difference_units`, shape (units,)."""
    return paired_difference_units(frame, arm, baseline, column, unit)["d"].to_numpy()


def lr_range_units(frame: pl.DataFrame, arm: str, baseline: str) -> pl.DataFrame:
    """Per (data set, seed): range over learning rates of the final test metric, baseline - arm (positive:
    ``arm`` is less sensitive to the learning rate); only units where both arms have at least two
    learning rates. Returns dataset, seed and ``d`` (one row per unit, sorted)."""
    r = (frame.filter(pl.col("arm").is_in([arm, baseline])).drop_nulls("final_test_metric")
         .group_by(["dataset", "seed", "arm"])
         .agg((pl.col("final_test_metric").max() - pl.col("final_test_metric").min()).alias("range"),
              pl.col("lr").n_unique().alias("n_lr"))
         .filter(pl.col("n_lr") >= 2)
         .pivot(on="arm", index=["dataset", "seed"], values="range"))
    if arm not in r.columns or baseline not in r.columns:
        return pl.DataFrame(schema={"dataset": pl.Utf8, "seed": pl.Int64, "d": pl.Float64})
    return r.select("dataset", "seed", (pl.col(baseline) - pl.col(arm)).alias("d")).drop_nulls("d").sort(
        ["dataset", "seed"])


def lr_range_difference(frame: pl.DataFrame, arm: str, baseline: str) -> np.ndarray:
    """The ``d`` of :func:`lr_range_units`, shape (units,)."""
    return lr_range_units(frame, arm, baseline)["d"].to_numpy()
