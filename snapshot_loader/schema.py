"""The corpus schema: one declaration of every table, from which both the Parquet shard schemas and
the DuckDB DDL are derived, so the two cannot drift apart.

Conventions: ``layer_index`` is the position of a Linear block in forward order (0 = first hidden
layer). ``step`` counts optimizer steps (0 = initialization). Columns that hold wall time end in
``seconds``; they are the only values that differ between two extractions of the same run.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 4

#: Version of the tables a worker writes into a shard (unchanged by database-only migrations, so
#: shards extracted under schema 3 are still ingested).
SHARD_SCHEMA_VERSION = 3

# name -> list of (column, DuckDB type); PRIMARY KEYs below.
TABLES: dict[str, list[tuple[str, str]]] = {
    "datasets": [
        ("name", "VARCHAR"), ("task", "VARCHAR"), ("source", "VARCHAR"), ("item", "VARCHAR"),
        ("target", "VARCHAR"), ("description", "VARCHAR"), ("synthetic", "BOOLEAN"), ("max_rows", "INTEGER"),
        ("n_raw_rows", "INTEGER"), ("n_rows", "INTEGER"), ("n_features", "INTEGER"), ("n_classes", "INTEGER"),
        ("n_train", "INTEGER"), ("n_test", "INTEGER"), ("target_mean", "DOUBLE"), ("target_std", "DOUBLE"),
        ("feature_names", "VARCHAR[]"), ("class_names", "VARCHAR[]"),
    ],
    "runs": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("task", "VARCHAR"),
        ("train_fraction", "DOUBLE"), ("label_noise", "DOUBLE"),
        ("family", "VARCHAR"), ("size", "VARCHAR"), ("widths", "INTEGER[]"), ("depth", "INTEGER"),
        ("activation", "VARCHAR"), ("norm", "VARCHAR"), ("dropout", "DOUBLE"), ("init", "VARCHAR"),
        ("optimizer", "VARCHAR"), ("lr", "DOUBLE"), ("momentum", "DOUBLE"), ("weight_decay", "DOUBLE"),
        ("batch_size", "INTEGER"), ("epochs", "INTEGER"), ("regularizer", "VARCHAR"), ("penalty", "DOUBLE"),
        ("rho", "DOUBLE"), ("fisher_eta", "DOUBLE"), ("metric_checkpoints", "INTEGER"),
        ("spectral_snapshots", "INTEGER"), ("probe_size", "INTEGER"), ("hessian_exact_limit", "INTEGER"),
        ("hvp_budget", "INTEGER"), ("seed", "INTEGER"), ("device", "VARCHAR"),
        ("config_json", "VARCHAR"), ("n_params", "BIGINT"), ("n_train", "INTEGER"), ("n_test", "INTEGER"),
        ("n_probe", "INTEGER"), ("n_noisy", "INTEGER"), ("total_steps", "INTEGER"), ("final_step", "INTEGER"),
        ("status", "VARCHAR"), ("diverged_step", "INTEGER"), ("torch_version", "VARCHAR"),
        ("wall_seconds", "DOUBLE"),
    ],
    "splits": [("run_id", "VARCHAR"), ("split", "VARCHAR"), ("rows", "INTEGER[]")],
    "checkpoints": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("epoch", "DOUBLE"), ("is_spectral", "BOOLEAN"),
        ("train_loss", "DOUBLE"), ("test_loss", "DOUBLE"),
        *[(f"{split}_{m}", "DOUBLE") for m in ("accuracy", "precision", "recall", "f1", "auc", "r2", "mae", "rmse")
          for split in ("train", "test")],
        ("gap_loss", "DOUBLE"), ("gap_accuracy", "DOUBLE"), ("weight_norm", "DOUBLE"), ("grad_norm", "DOUBLE"),
        ("wall_seconds", "DOUBLE"),
    ],
    "layers": [
        ("run_id", "VARCHAR"), ("layer_index", "INTEGER"), ("name", "VARCHAR"), ("in_features", "INTEGER"),
        ("out_features", "INTEGER"), ("activation", "VARCHAR"), ("norm", "VARCHAR"), ("n_params", "INTEGER"),
        ("is_output", "BOOLEAN"),
    ],
    "layer_stats": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER"),
        # every metric checkpoint
        ("weight_norm", "DOUBLE"), ("bias_norm", "DOUBLE"), ("grad_norm", "DOUBLE"), ("grad_bias_norm", "DOUBLE"),
        # spectral snapshots only (NULL at other checkpoints)
        ("weight_sv", "DOUBLE[]"), ("weight_rank", "INTEGER"), ("weight_stable_rank", "DOUBLE"),
        ("weight_spectral_norm", "DOUBLE"), ("grad_sv", "DOUBLE[]"), ("grad_rank", "INTEGER"),
        ("grad_stable_rank", "DOUBLE"), ("grad_spectral_norm", "DOUBLE"), ("alignment", "DOUBLE"),
        ("adjacent_similarity", "DOUBLE"), ("adjacent_k", "INTEGER"), ("saturation_fraction", "DOUBLE"),
        ("dead_fraction", "DOUBLE"), ("gradient_pressure", "DOUBLE"), ("natural_gradient_norm", "DOUBLE"),
        ("natural_gradient_converged", "BOOLEAN"),
    ],
    "hessian_spectra": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER"), ("kind", "VARCHAR"),
        ("method", "VARCHAR"), ("n_probe", "INTEGER"), ("n_params", "INTEGER"), ("eigenvalues", "DOUBLE[]"),
        ("trace", "DOUBLE"), ("trace_stderr", "DOUBLE"), ("top_eigenvalue", "DOUBLE"),
        ("bottom_eigenvalue", "DOUBLE"), ("condition_number", "DOUBLE"), ("effective_rank", "DOUBLE"),
        ("log_abs_det", "DOUBLE"), ("n_zero", "INTEGER"), ("std", "DOUBLE"), ("skewness", "DOUBLE"),
        ("negative_mass", "DOUBLE"), ("symmetry", "DOUBLE"), ("near_zero_fraction", "DOUBLE"),
        ("bias_share", "DOUBLE"), ("bias_share_baseline", "DOUBLE"), ("exactly_zero", "BOOLEAN"),
        ("converged", "BOOLEAN"), ("bottom_converged", "BOOLEAN"), ("n_hvp", "INTEGER"),
        ("density_grid", "DOUBLE[]"), ("density", "DOUBLE[]"),
        ("seconds", "DOUBLE"),
    ],
    "weights": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER"), ("tensor", "VARCHAR"),
        ("shape", "INTEGER[]"), ("values", "FLOAT[]"),
    ],
    "timings": [("run_id", "VARCHAR"), ("step", "INTEGER"), ("what", "VARCHAR"), ("seconds", "DOUBLE")],
    # spectral snapshots: margin signatures per (split, representation, correct_only), status says why
    # a row has no statistics (no_points, zero_variation, single_class, not_classification)
    "margins": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("split", "VARCHAR"), ("representation", "VARCHAR"),
        ("layer_index", "INTEGER"), ("correct_only", "BOOLEAN"), ("status", "VARCHAR"), ("n_points", "INTEGER"),
        ("count", "INTEGER"), ("q1", "DOUBLE"), ("median", "DOUBLE"), ("q3", "DOUBLE"), ("lower_fence", "DOUBLE"),
        ("upper_fence", "DOUBLE"), ("mean", "DOUBLE"), ("std", "DOUBLE"), ("total_variation", "DOUBLE"),
    ],
    # the raw margins behind them, in the order of the split's rows in ``splits``
    "margin_values": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("split", "VARCHAR"), ("representation", "VARCHAR"),
        ("layer_index", "INTEGER"), ("margins", "FLOAT[]"), ("correct", "BOOLEAN[]"),
    ],
    # spectral snapshots: whole-model SAM sharpness and top loss-Hessian eigenvalue on the probe batch
    "sharpness": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("n_params", "INTEGER"), ("n_probe", "INTEGER"),
        ("rho", "DOUBLE"), ("loss", "DOUBLE"), ("sharpness", "DOUBLE"), ("sharpness_one_step", "DOUBLE"),
        ("ascent_steps", "INTEGER"), ("hessian_top_eigenvalue", "DOUBLE"), ("hessian_top_converged", "BOOLEAN"),
        ("n_hvp", "INTEGER"), ("seconds", "DOUBLE"),
    ],
}

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "datasets": ("name",),
    "runs": ("run_id",),
    "splits": ("run_id", "split"),
    "checkpoints": ("run_id", "step"),
    "layers": ("run_id", "layer_index"),
    "layer_stats": ("run_id", "step", "layer_index"),
    "weights": ("run_id", "step", "layer_index", "tensor"),
    "timings": ("run_id", "step", "what"),
    "hessian_spectra": ("run_id", "step", "layer_index", "kind"),
    "margins": ("run_id", "step", "split", "representation", "correct_only"),
    "margin_values": ("run_id", "step", "split", "representation"),
    "sharpness": ("run_id", "step"),
}

#: Tables a run's shard holds (``datasets`` rows are shared: inserted once per data set).
SHARD_TABLES = tuple(TABLES)

#: Tables kept by the database but not written by workers.
DB_ONLY_TABLES = {
    "schema_version": [("version", "INTEGER"), ("written_at", "TIMESTAMP")],
    "studies": [("corpus", "VARCHAR"), ("study", "VARCHAR"), ("run_id", "VARCHAR")],
    # Runs whose extraction failed twice (an error, or its worker died), with the last error.
    "run_failures": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("error", "VARCHAR"),
                     ("attempts", "INTEGER"), ("config_json", "VARCHAR")],
}
DB_ONLY_KEYS = {"studies": ("corpus", "study", "run_id"), "run_failures": ("run_id",)}

#: Statements that bring a database of version v up to v + 1 (applied in order, in one transaction).
MIGRATIONS: dict[int, list[str]] = {
    3: ['CREATE TABLE IF NOT EXISTS run_failures ("run_id" VARCHAR, "dataset" VARCHAR, "error" VARCHAR, '
        '"attempts" INTEGER, "config_json" VARCHAR, PRIMARY KEY (run_id))'],
}

_ARROW = {
    "VARCHAR": pa.string(), "INTEGER": pa.int32(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(), "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us"),
}

#: Columns holding wall time, ignored when comparing two extractions of the same plan.
WALL_TIME_COLUMNS = {(t, c) for t, cols in TABLES.items() for c, _ in cols if c.endswith("seconds")}


def arrow_type(duck_type: str) -> pa.DataType:
    if duck_type.endswith("[]"):
        return pa.list_(arrow_type(duck_type[:-2]))
    return _ARROW[duck_type]


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([(c, arrow_type(t)) for c, t in TABLES[table]])


def ddl() -> list[str]:
    """CREATE TABLE statements for every table, with primary keys."""
    out = []
    for name, cols in {**TABLES, **DB_ONLY_TABLES}.items():
        body = ", ".join(f'"{c}" {t}' for c, t in cols)
        key = PRIMARY_KEYS.get(name) or DB_ONLY_KEYS.get(name)
        if key:
            body += f", PRIMARY KEY ({', '.join(key)})"
        out.append(f"CREATE TABLE IF NOT EXISTS {name} ({body})")
    return out
