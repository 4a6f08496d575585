"""The tables of the topology stage (``analysis_topology_verdicts`` is added by ``verdicts=True``)."""

from __future__ import annotations

import polars as pl

from analyses.kit import tables

_LAYER = [("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER")]
_TOPOLOGY = [
    *_LAYER, ("tensor", "VARCHAR"), ("part", "VARCHAR"), ("principal", "BOOLEAN"), ("n_points", "INTEGER"),
    ("n_bars", "INTEGER"),
    ("entropy", "DOUBLE"), ("normalized_entropy", "DOUBLE"),
    ("normalized_entropy_log_total", "DOUBLE"), ("mean_lifetime", "DOUBLE"), ("mean_lifetime_scaled", "DOUBLE"),
    ("n_neurons", "INTEGER"), ("n_dead", "INTEGER"), ("n_duplicates", "INTEGER"), ("total_lifetime", "DOUBLE"),
    ("mean_neuron_norm", "DOUBLE"), ("weight_variance", "DOUBLE"), ("weight_norm", "DOUBLE"),
    ("with_bias", "BOOLEAN"), ("method", "VARCHAR"),
]

TABLES = {
    "layer_topology": _TOPOLOGY,
    "layer_topology_bars": [*_LAYER, ("tensor", "VARCHAR"), ("part", "VARCHAR"), ("bar_index", "INTEGER"),
                            ("birth", "DOUBLE"), ("death", "DOUBLE")],
    "analysis_topology_snapshots": [
        *_TOPOLOGY, ("dataset", "VARCHAR"), ("task", "VARCHAR"), ("size", "VARCHAR"), ("architecture", "VARCHAR"),
        ("activation", "VARCHAR"), ("train_fraction", "DOUBLE"), ("seed", "INTEGER"), ("epoch", "DOUBLE"),
        ("progress", "DOUBLE"), ("n_layers", "BIGINT"), ("is_output", "BOOLEAN"), ("test_metric", "DOUBLE"),
        ("test_metric_name", "VARCHAR"), ("position", "VARCHAR"), ("sweep", "VARCHAR"),
    ],
    "analysis_topology_runs": [
        ("run_id", "VARCHAR"), ("layer_index", "INTEGER"), ("position", "VARCHAR"), ("metric", "VARCHAR"),
        ("dataset", "VARCHAR"), ("task", "VARCHAR"), ("size", "VARCHAR"), ("architecture", "VARCHAR"),
        ("train_fraction", "DOUBLE"), ("seed", "INTEGER"), ("sweep", "VARCHAR"), ("final_step", "INTEGER"),
        ("n_snapshots", "INTEGER"), ("initial", "DOUBLE"), ("final", "DOUBLE"), ("change", "DOUBLE"),
        ("spearman_over_training", "DOUBLE"), ("partial_spearman_over_training", "DOUBLE"),
        ("spearman_beyond_time", "DOUBLE"), ("final_points", "INTEGER"), ("weight_variance", "DOUBLE"),
        ("weight_norm", "DOUBLE"), ("test_metric", "DOUBLE"),
        ("test_metric_name", "VARCHAR"),
    ],
    "analysis_topology_correlations": [
        ("metric", "VARCHAR"), ("position", "VARCHAR"), ("analysis", "VARCHAR"), ("method", "VARCHAR"),
        ("estimate", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("p_value", "DOUBLE"), ("n", "INTEGER"),
        ("n_unit", "VARCHAR"), ("n_groups", "INTEGER"), ("n_datasets", "INTEGER"), ("p_adjusted", "DOUBLE"),
    ],
    "analysis_topology_train_fraction": [
        ("metric", "VARCHAR"), ("position", "VARCHAR"), ("dataset", "VARCHAR"), ("size", "VARCHAR"),
        ("train_fraction", "DOUBLE"), ("n_runs", "BIGINT"), ("final_mean", "DOUBLE"), ("final_sd", "DOUBLE"),
        ("change_mean", "DOUBLE"), ("test_metric_mean", "DOUBLE"), ("test_metric_name", "VARCHAR"),
    ],
}



def polars_schema(table: str) -> dict[str, pl.DataType]:
    """The polars schema of one of TABLES, for building its rows from dicts (typed even when empty)."""
    return tables.polars_schema(TABLES[table])
