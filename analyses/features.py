"""Feature tables: the internal measurements of every spectral snapshot, one row per layer and one
fixed-length row per snapshot, joined with the run's configuration and the quality metrics at that
step. Every statistics stage (correlations, CCA, normality, UMAP, diagnostics) reads these.

There are 45 features per layer (:data:`FEATURES`): measures of the weights, the gradients and the
activations, the gradient pressure and natural-gradient norm, and summaries of the spectra of three
curvature matrices of the layer (the local Hessian, 001 Def. 5-6; the loss-Hessian block; the
Gauss-Newton block, 000).

Tables
------
``analysis_features_layer``
    one row per (run_id, step, layer_index) at a spectral snapshot of a run of any family (a layer
    is a block: an MLP's Linear, a convolution, an attention or feed-forward sublayer, a user's
    module; the weight features read its principal matrix): the run's configuration, the
    layer's position (``relative_depth`` = layer_index / (n_layers - 1), ``is_output``), every
    feature of :data:`FEATURES` as measured (raw values), and the quality metrics at that step.
    Curvature features are exact or NULL: a value a matrix-free row estimated (nonzero standard error)
    is left out rather than pooled with exact ones; ``curvature_estimated`` marks the layers where
    any of the three kinds was matrix-free.
``analysis_features``
    one row per (run_id, step) spectral snapshot: for each feature ``f`` the mean over the
    snapshot's layers of ``t(f)``, where ``t`` is the feature's transform
    (``slog(x) = sign(x) ln(1 + |x|)`` for scale-like features spanning orders of magnitude, the
    identity otherwise), ignoring NULLs (a ReLU layer's zero local Hessian has no ratios). Layers of
    different depth thus map to the same fixed-length vector.
``analysis_features_catalog``
    the features: name, group (weights, gradients, activations, local_hessian, loss_hessian, ggn),
    transform, and what it measures.

``architecture`` is the size preset and activation, plus the normalization when there is one
(``medium-sigmoid-layernorm``): the label the paper's Figure 2 colours by; another family's is
prefixed by it (``cnn2d-custom-gelu``), a user's model is ``custom-<factory>``.
``primary_metric`` is test accuracy for classification, test R2 for regression.
"""

from __future__ import annotations

import duckdb
import polars as pl

from analyses.kit.features import ALL_METRICS, FEATURES, slog_sql
from analyses.kit.stage import Stage
from analyses.kit.tables import write_table

_CONTEXT = """r.dataset, r.task, r.family, r.size, r.activation, r.norm, r.optimizer, r.init, r.train_fraction, r.seed,
       CASE WHEN r.family = 'mlp' THEN r.size || '-' || r.activation
                                       || CASE WHEN r.norm = 'none' THEN '' ELSE '-' || r.norm END
            WHEN r.family = 'custom' THEN 'custom-' || r.model
            ELSE r.family || '-' || r.size || '-' || r.activation END AS architecture,
       r.total_steps, c.epoch, c.step::DOUBLE / greatest(r.total_steps, 1) AS progress"""


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the three feature tables."""
    feats = ",\n       ".join(f"({f.expr})::DOUBLE AS {f.name}" for f in FEATURES)
    metrics = ", ".join(f"c.{m}" for m in ALL_METRICS)
    write_table(con, "analysis_features_layer", f"""
        WITH depth AS (SELECT run_id, count(*) AS n_layers FROM layers GROUP BY run_id)
        SELECT s.run_id, s.step, s.layer_index, {_CONTEXT}, d.n_layers,
               s.layer_index::DOUBLE / greatest(d.n_layers - 1, 1) AS relative_depth, l.is_output,
               l.in_features, l.out_features, hl.exactly_zero AS local_exactly_zero,
               coalesce(hl.method = 'lanczos' OR hs.method = 'lanczos' OR hg.method = 'lanczos', false)
                   AS curvature_estimated,
               {feats},
               {metrics},
               CASE WHEN r.task = 'classification' THEN c.test_accuracy ELSE c.test_r2 END AS primary_metric
        FROM layer_stats s
        JOIN checkpoints c USING (run_id, step)
        JOIN runs r USING (run_id)
        JOIN layers l USING (run_id, layer_index)
        JOIN depth d USING (run_id)
        LEFT JOIN hessian_spectra hl ON hl.run_id = s.run_id AND hl.step = s.step
             AND hl.layer_index = s.layer_index AND hl.kind = 'local'
        LEFT JOIN hessian_spectra hs ON hs.run_id = s.run_id AND hs.step = s.step
             AND hs.layer_index = s.layer_index AND hs.kind = 'loss'
        LEFT JOIN hessian_spectra hg ON hg.run_id = s.run_id AND hg.step = s.step
             AND hg.layer_index = s.layer_index AND hg.kind = 'ggn'
        WHERE c.is_spectral AND r.status <> 'diverged'  -- every family: the blocks of any model
        ORDER BY s.run_id, s.step, s.layer_index""")
    aggs = ",\n       ".join(
        f"avg({slog_sql(f.name) if f.log_scale else f.name}) AS {f.name}" for f in FEATURES)
    keep = ("dataset, task, family, size, activation, norm, optimizer, init, train_fraction, seed, architecture, "
            "total_steps, epoch, progress, n_layers, " + ", ".join(ALL_METRICS) + ", primary_metric")
    write_table(con, "analysis_features", f"""
        SELECT run_id, step,
               dense_rank() OVER (PARTITION BY run_id ORDER BY step) - 1 AS snapshot_index,
               {keep},
               {aggs}
        FROM analysis_features_layer
        GROUP BY run_id, step, {keep}
        ORDER BY run_id, step""")
    write_table(con, "analysis_features_catalog", pl.DataFrame(
        [[f.name, f.group, "slog" if f.log_scale else "identity", f.description] for f in FEATURES],
        schema=[c for c, _ in TABLES["analysis_features_catalog"]], orient="row"))


def report(con: duckdb.DuckDBPyConnection) -> dict:
    n_layer, n_snap = con.execute("SELECT (SELECT count(*) FROM analysis_features_layer), "
                                  "(SELECT count(*) FROM analysis_features)").fetchall()[0]
    return {"paragraphs": [f"{len(FEATURES)} features per layer, measured at {n_snap} spectral snapshots "
                           f"({n_layer} layer rows); the statistics stages read these tables."],
            "tables": [{"caption": "The features (analysis_features_catalog)",
                        "sql": 'SELECT feature, "group", transform, description FROM analysis_features_catalog'}]}


#: The run's configuration and the snapshot's place in training (:data:`_CONTEXT`), in both tables.
_CONTEXT_COLUMNS = [
    ("dataset", "VARCHAR"), ("task", "VARCHAR"), ("family", "VARCHAR"), ("size", "VARCHAR"),
    ("activation", "VARCHAR"), ("norm", "VARCHAR"),
    ("optimizer", "VARCHAR"), ("init", "VARCHAR"), ("train_fraction", "DOUBLE"), ("seed", "INTEGER"),
    ("architecture", "VARCHAR"), ("total_steps", "INTEGER"), ("epoch", "DOUBLE"), ("progress", "DOUBLE"),
    ("n_layers", "BIGINT"),
]
_FEATURE_COLUMNS = [(f.name, "DOUBLE") for f in FEATURES]
_METRIC_COLUMNS = [(m, "DOUBLE") for m in ALL_METRICS] + [("primary_metric", "DOUBLE")]

TABLES = {
    "analysis_features_layer": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER"), *_CONTEXT_COLUMNS,
        ("relative_depth", "DOUBLE"), ("is_output", "BOOLEAN"), ("in_features", "INTEGER"),
        ("out_features", "INTEGER"), ("local_exactly_zero", "BOOLEAN"), ("curvature_estimated", "BOOLEAN"),
        *_FEATURE_COLUMNS, *_METRIC_COLUMNS,
    ],
    "analysis_features": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("snapshot_index", "BIGINT"), *_CONTEXT_COLUMNS,
        *_METRIC_COLUMNS, *_FEATURE_COLUMNS,
    ],
    "analysis_features_catalog": [
        ("feature", "VARCHAR"), ("group", "VARCHAR"), ("transform", "VARCHAR"), ("description", "VARCHAR"),
    ],
}

STAGE = Stage(
    name="features", title="Features", doc=__doc__,
    reads=("runs", "checkpoints", "layers", "layer_stats", "hessian_spectra"), tables=TABLES, run=run,
    report=report,
)
