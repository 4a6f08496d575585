"""The corpus schema: one declaration of every table, from which both the Parquet shard schemas and
the DuckDB DDL are derived, so the two cannot drift apart.

Conventions: ``layer_index`` is the position of a block in forward order, one convention for every
family: an MLP's Linear blocks (0 = first hidden layer, the last = the output layer); another
family's blocks as ``block_names`` lists them (``layers.name`` says which module each is: ``convs.0``,
``layers.0.attn``, ``head``; a user's model: the module paths its run named or every module that
owns parameters). ``blocks.block_index`` is the same index. ``step`` counts optimizer steps
(0 = initialization). Columns that hold wall time end in ``seconds``; they are the only values that
differ between two extractions of the same run.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.runspec import RUN_FIELDS

SCHEMA_VERSION = 11

#: Version of the tables a worker writes into a shard (unchanged by database-only migrations).
SHARD_SCHEMA_VERSION = 10
#: Shard versions read. Version 5 changed how curvature is computed (estimates with standard errors,
#: zeros from a noise floor), so older shards are stale: refused, and extracted again. Version 6 added
#: runs.model, blocks and checkpoint_dir (NULL in a version-5 shard) and measures the blocks of every
#: family: a version-5 shard without curvature rows (a CNN or Transformer run) is stale. A column or
#: table added later needs its default written here, for the shards before it. Version 7 added
#: ``matrix_spectra`` (SHARD_TABLES_SINCE): an older shard has no rows of it. Version 8 added
#: ``datasets.input_shape`` and ``datasets.preprocess`` (NULL in an older shard's row). Version 9 added
#: ``hessian_spectra.stop_reason``, ``lanczos_runs`` and ``product_dtype`` (NULL in an older shard's
#: rows, which spent a fixed 8 x hvp_budget / 8 float64 products). Version 10 added the trivial
#: predictor's test score, ``datasets.baseline_name``, ``baseline_metric`` and ``baseline_auc``: an older
#: shard's row has no baseline (NULL name and metric, the AUC chance for classification, as the
#: database migration fills them).
READABLE_SHARD_VERSIONS = (5, 6, 7, 8, 9, 10)

#: Summary columns of ``hessian_spectra`` that matrix-free rows estimate, each with a ``<column>_stderr``
#: (``trace_stderr`` is older and listed with the spectra's own columns).
ESTIMATED_SUMMARIES = ("std", "skewness", "negative_mass", "effective_rank")

#: DuckDB type of a run field's column, by the field's type.
_RUN_FIELD_TYPES = {str: "VARCHAR", int: "INTEGER", float: "DOUBLE", bool: "BOOLEAN", tuple[int, ...]: "INTEGER[]",
                    tuple[str, ...]: "VARCHAR[]"}
#: Columns of ``runs`` that are not run fields, each placed after the run field it follows.
_RUNS_AFTER = {"dataset": [("task", "VARCHAR")], "widths": [("depth", "INTEGER")],
               "trial_steps": [("device", "VARCHAR")], "blocks": [("checkpoint_dir", "VARCHAR")]}


def run_field_columns() -> list[tuple[str, str]]:
    """The ``runs`` columns of the run fields declared ``column`` (pipeline/runspec.py), in their order."""
    return [(name, _RUN_FIELD_TYPES[f.type]) for name, f in RUN_FIELDS.items() if f.column]


# name -> list of (column, DuckDB type); PRIMARY KEYs below.
TABLES: dict[str, list[tuple[str, str]]] = {
    "datasets": [
        ("name", "VARCHAR"), ("task", "VARCHAR"), ("source", "VARCHAR"), ("item", "VARCHAR"),
        ("target", "VARCHAR"), ("description", "VARCHAR"), ("synthetic", "BOOLEAN"), ("max_rows", "INTEGER"),
        ("n_raw_rows", "INTEGER"), ("n_rows", "INTEGER"), ("n_features", "INTEGER"), ("n_classes", "INTEGER"),
        ("n_train", "INTEGER"), ("n_test", "INTEGER"), ("target_mean", "DOUBLE"), ("target_std", "DOUBLE"),
        ("feature_names", "VARCHAR[]"), ("class_names", "VARCHAR[]"), ("input_shape", "INTEGER[]"),
        ("preprocess", "VARCHAR"),
        # the trivial predictor fitted on the training split, scored on the test split like the runs
        ("baseline_name", "VARCHAR"), ("baseline_metric", "DOUBLE"), ("baseline_auc", "DOUBLE"),
    ],
    # the run fields' columns, with the run's own columns that follow them
    "runs": [
        ("run_id", "VARCHAR"),
        *[c for field in run_field_columns() for c in (field, *_RUNS_AFTER.get(field[0], []))],
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
        # how sure each number is: 0 on exact rows; jackknife over Lanczos runs and quadrature error on
        # estimated ones (NULL: no error can be stated); the Ritz residuals bound the distance from
        # top/bottom_eigenvalue to an eigenvalue; zero_floor: |lambda| at or below it counts as zero
        # (exact rows)
        *[(f"{c}_stderr", "DOUBLE") for c in ESTIMATED_SUMMARIES],
        ("top_residual", "DOUBLE"), ("bottom_residual", "DOUBLE"), ("zero_floor", "DOUBLE"),
        # what a Lanczos row spent and why it stopped; the dtype its products ran in
        ("stop_reason", "VARCHAR"), ("lanczos_runs", "INTEGER"), ("product_dtype", "VARCHAR"),
    ],
    "weights": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER"), ("tensor", "VARCHAR"),
        ("shape", "INTEGER[]"), ("values", "FLOAT[]"),
    ],
    # spectral snapshots: every weight matrix of every block (a packed Q/K/V projection as its three
    # parts), its singular values and those of its probe gradient
    "matrix_spectra": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER"), ("tensor", "VARCHAR"),
        ("part", "VARCHAR"), ("rows", "INTEGER"), ("cols", "INTEGER"), ("principal", "BOOLEAN"),
        ("weight_sv", "DOUBLE[]"), ("weight_rank", "INTEGER"), ("weight_stable_rank", "DOUBLE"),
        ("weight_spectral_norm", "DOUBLE"), ("grad_sv", "DOUBLE[]"), ("grad_rank", "INTEGER"),
        ("grad_stable_rank", "DOUBLE"), ("grad_spectral_norm", "DOUBLE"), ("alignment", "DOUBLE"),
    ],
    "timings": [("run_id", "VARCHAR"), ("step", "INTEGER"), ("what", "VARCHAR"), ("seconds", "DOUBLE")],
    # spectral snapshots: margin signatures per (split, representation, correct_only), status says why
    # a row has no statistics (no_points, zero_variation, single_class, not_classification, discrete_input,
    # no_output)
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
    # the coupling blocks of a run's model (parameter groups, forward order) and which blocks each feeds
    # directly, in the final model (gated edges added during training included)
    "blocks": [
        ("run_id", "VARCHAR"), ("block_index", "INTEGER"), ("name", "VARCHAR"), ("parameters", "VARCHAR[]"),
        ("successors", "INTEGER[]"), ("n_params", "INTEGER"),
    ],
    # curvature coupling kappa_ij = ||H_ij||_F / sqrt(||H_ii||_F ||H_jj||_F) of the loss Hessian, pairs
    # i <= j, estimated from n_probes Rademacher probes per block (jackknife stderr); path_length: fewest
    # block hops between i and j in the model at that step (NULL: no path); trace: Hutchinson trace
    # of H_ii from the same products (diagonal rows)
    "curvature_coupling": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("block_i", "INTEGER"), ("block_j", "INTEGER"),
        ("path_exists", "BOOLEAN"), ("path_length", "INTEGER"), ("kappa", "DOUBLE"), ("stderr", "DOUBLE"),
        ("frobenius", "DOUBLE"), ("n_probes", "INTEGER"), ("trace", "DOUBLE"), ("trace_stderr", "DOUBLE"),
    ],
    # gated edges added to the model: from the output of block src (-1: the input) into the input of
    # block dst (n_blocks: the output); method synthesized | random; gain: the coherence its trial
    # restored (NULL for random edges); gate: its value at the end of training
    "augmentations": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("edge_index", "INTEGER"), ("src", "INTEGER"),
        ("dst", "INTEGER"), ("kind", "VARCHAR"), ("method", "VARCHAR"), ("gain", "DOUBLE"),
        ("n_params", "INTEGER"), ("gate", "DOUBLE"),
    ],
    # every gentle trial of a synthesis: candidate edge, the coherence with and without it after
    # trial_steps steps from the same state on the same batches, and whether greedy selection kept it
    "augmentation_trials": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("round", "INTEGER"), ("src", "INTEGER"), ("dst", "INTEGER"),
        ("kind", "VARCHAR"), ("relative_coupling", "DOUBLE"), ("coherence_control", "DOUBLE"),
        ("coherence_trial", "DOUBLE"), ("gain", "DOUBLE"), ("selected", "BOOLEAN"),
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
    "matrix_spectra": ("run_id", "step", "layer_index", "tensor", "part"),
    "timings": ("run_id", "step", "what"),
    "hessian_spectra": ("run_id", "step", "layer_index", "kind"),
    "margins": ("run_id", "step", "split", "representation", "correct_only"),
    "margin_values": ("run_id", "step", "split", "representation"),
    "sharpness": ("run_id", "step"),
    "blocks": ("run_id", "block_index"),
    "curvature_coupling": ("run_id", "step", "block_i", "block_j"),
    "augmentations": ("run_id", "edge_index"),
    "augmentation_trials": ("run_id", "step", "round", "src", "dst", "kind"),
}

#: Tables a run's shard holds (``datasets`` rows are shared: inserted once per data set).
SHARD_TABLES = tuple(TABLES)
#: The shard version that added a table: a shard written before it has none, and reads as no rows.
SHARD_TABLES_SINCE = {"matrix_spectra": 7}

#: Tables kept by the database but not written by workers.
DB_ONLY_TABLES = {
    "schema_version": [("version", "INTEGER"), ("written_at", "TIMESTAMP")],
    "studies": [("corpus", "VARCHAR"), ("study", "VARCHAR"), ("run_id", "VARCHAR")],
    # Runs whose extraction failed twice (an error, or its worker died), with the last error.
    "run_failures": [("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("error", "VARCHAR"),
                     ("attempts", "INTEGER"), ("config_json", "VARCHAR")],
}
DB_ONLY_KEYS = {"studies": ("corpus", "study", "run_id"), "run_failures": ("run_id",)}

#: What each corpus table's columns hold (rendered into docs/schema.md beside the declared types).
TABLE_NOTES: dict[str, str] = {
    "datasets": (
        "task, source, item, target, description, synthetic, max_rows, n_raw_rows, n_rows, n_features, n_classes, "
        "n_train, n_test, target_mean, target_std, feature_names VARCHAR[] (empty for arrays), class_names "
        "VARCHAR[], input_shape INTEGER[] (one row's shape: [p] for a table, [C, H, W] for images, [T] for token "
        "ids; n_features is its product), preprocess (`standard` or `none`, the run field; a data set keeps one "
        "row per name, so one name cannot hold both), baseline_name, baseline_metric, baseline_auc: the trivial "
        "predictor a run must beat, fitted on the training split and scored on the test split as the runs are "
        "(`majority class`: baseline_metric its test accuracy, the majority-class rate, baseline_auc 0.5; "
        "`training mean`: baseline_metric its test R², at or slightly below 0, baseline_auc NULL), in the units "
        "of the runs' primary metric (`analysis_overview.primary_metric`); NULL name and metric on a data set "
        "recorded before they were (its labels are not in the database: `not recorded`)"
    ),
    "runs": (
        "every run field (dataset ... seed; widths INTEGER[]; regularizer, penalty, rho, fisher_eta; the "
        "digests of a user's data file and checkpoint folder, `fixed_steps` and `preprocess` are in config_json only: "
        "`json_extract_string(config_json, '$.dataset_digest')`), device (where the optimizer steps and the "
        "curvature engine ran), task, depth (number of "
        "Linear blocks; a user's model: its blocks), model and blocks (family `custom`: the factory and the "
        "named blocks), checkpoint_dir (a run measured from existing checkpoints by `pipeline measure`), config_json, "
        "n_params, n_train, n_test, n_probe, n_noisy, total_steps, final_step (last "
        "recorded checkpoint), status (`complete` or `diverged`), diverged_step, torch_version, wall_seconds"
    ),
    "splits": (
        "rows INTEGER[]: row indices into the preprocessed data set for `train`, `test`, `probe`"
    ),
    "checkpoints": (
        "epoch, is_spectral, train_loss, test_loss, {train,test}_{accuracy, precision, recall, f1, auc} "
        "(classification; macro averages, AUC one-vs-rest), {train,test}_{r2, mae, rmse} (regression), gap_loss "
        "(test - train loss), gap_accuracy (train - test accuracy), weight_norm, grad_norm (all parameters), "
        "wall_seconds"
    ),
    "layers": (
        "name, in_features, out_features, activation, norm, n_params, is_output (another family's blocks: in/out "
        "features are the columns and rows of the block's principal matrix, its largest weight with 2+ axes read "
        "as out x (in k...); a user's model has NULL activation and norm; n_params counts the block's trainable "
        "parameters, a tied weight once, in the block it belongs to; is_output marks the output block, the last "
        "block that is a module)"
    ),
    "layer_stats": (
        "every checkpoint: weight_norm, bias_norm, grad_norm, grad_bias_norm; spectral snapshots only (NULL "
        "elsewhere): weight_sv DOUBLE[], weight_rank, weight_stable_rank, weight_spectral_norm, grad_sv DOUBLE[], "
        "grad_rank, grad_stable_rank, grad_spectral_norm, alignment, adjacent_similarity, adjacent_k, "
        "saturation_fraction, dead_fraction, gradient_pressure (g^T H_ii g / ||g||^2), natural_gradient_norm (g^T "
        "(G_ii + lambda I)^-1 g), natural_gradient_converged. For another family's block the weight and gradient "
        "columns describe its principal matrix (see `layers`), adjacent_similarity is NULL where the next block's "
        "matrix does not chain onto it, and saturation is read at the first elementwise activation module inside "
        "the block (NULL when it has none; a convolution's units are its channels at every position)"
    ),
    "hessian_spectra": (
        "kind `local` (phi = sum), `loss` (H_ii) or `ggn` (G_ii); method (`closed_form`, `kronecker`, `autograd` "
        "(the dense block by autograd, another family's blocks up to the exact limit) or `gram`: exact; `lanczos`: "
        "estimated from products, see the curvature engine), n_probe, n_params, eigenvalues "
        "DOUBLE[] (all of them when exact, the converged Ritz values of both ends otherwise), trace, "
        "trace_stderr, top_eigenvalue, bottom_eigenvalue, condition_number, effective_rank, log_abs_det, n_zero, "
        "std, skewness, negative_mass, symmetry, near_zero_fraction, bias_share, bias_share_baseline (1/(d+1)), "
        "exactly_zero, converged and bottom_converged (the top and bottom Ritz values' residuals are at most 1e-4 "
        "of the spectral scale; true when exact), n_hvp, density_grid DOUBLE[] and density DOUBLE[] (the SLQ "
        "density, Lanczos rows only), seconds, std_stderr, skewness_stderr, negative_mass_stderr, "
        "effective_rank_stderr (0 when exact; NULL where no error can be stated, e.g. the effective rank of a row "
        "whose top did not converge), top_residual and bottom_residual (an eigenvalue of the block lies within "
        "them of top/bottom_eigenvalue, the products' rounding included), zero_floor (|lambda| at or below it "
        "counts as zero), stop_reason (Lanczos rows: `targets` when every run settled and every standard error met "
        "its target, `budget` when the cap of hvp_budget products came first; NULL when exact), lanczos_runs, "
        "product_dtype (`float32` or `float64`: the dtype of the products a Lanczos row was computed from; "
        "exact rows are float64)"
    ),
    "weights": (
        "every tensor of the block's state (`linear.weight`, `linear.bias`, `norm.*` incl. running statistics; "
        "another family's block: its module's state, `conv.weight`, `qkv.weight`, ...) at each spectral snapshot: "
        "shape INTEGER[], values FLOAT[] (row-major)"
    ),
    "matrix_spectra": (
        "spectral snapshots: one row per weight matrix of every block (every tensor with 2+ axes not named "
        "`*bias`, read as rows = its first axis against the others; a packed attention projection, `in_proj_weight` "
        "or `qkv.weight`, as its parts `q`, `k`, `v`, its thirds by rows; every other tensor as part `all`): rows, "
        "cols, principal (the row belongs to the block's principal tensor, the one `layer_stats` describes; a "
        "packed principal tensor has its three parts here and no whole row, whose spectra are `layer_stats`'), "
        "weight_sv DOUBLE[], weight_rank, weight_stable_rank, weight_spectral_norm and the same of the probe "
        "gradient (grad_*), alignment; trainable tensors only (a frozen one has no gradient). Runs extracted "
        "into shards of version 6 or older have no rows here"
    ),
    "timings": (
        "seconds of `train` (since the previous checkpoint), `metrics` or `spectral` work at each checkpoint, and "
        "of `synthesis` at the step it ran (runs with `augment`)"
    ),
    "margins": (
        "spectral snapshots of every run: the signature of the normalized margins (definition 7) of the `train` "
        "split (labels as trained on) or the `test` split, at `input`, `h0`..`h{L-2}` (the blocks' outputs, "
        "whole and flattened for a convolution or token block) or `output` (layer_index NULL for the "
        "input, else the block whose output it is), over all "
        "points or correctly classified ones: status (`ok`; `no_points` when no point is correct; "
        "`zero_variation` when the representation is constant, e.g. a dead ReLU layer; `discrete_input` at the "
        "input of token ids, which have no gradient; `no_output` at a block of a module's own parameters, such "
        "as a CLS token, which has no output of each point; `not_classification` on "
        "the rows a regression run gets instead of margins), n_points, count, q1, median, q3, lower_fence (Q1 - "
        "1.5 IQR), upper_fence (Q3 + 1.5 IQR), mean, std (ddof 0), total_variation (sqrt tr Cov h, ddof 0, over "
        "all the split's points; the margins are divided by it). Statistics are NULL unless status is `ok`"
    ),
    "margin_values": (
        "the raw margins behind them: margins FLOAT[] (NULL where undefined) and correct BOOLEAN[], in the order "
        "of the split's rows in `splits`"
    ),
    "sharpness": (
        "spectral snapshots: on the probe batch over every trained parameter, rho, loss, sharpness (max over the "
        "rho-ball of L(theta + eps) - L(theta), SAM's definition, estimated from below by `ascent_steps` "
        "projected normalized-gradient steps), sharpness_one_step (SAM's first step alone), "
        "hessian_top_eigenvalue of the full loss Hessian (Lanczos on HVPs, hessian_top_converged, n_hvp), seconds"
    ),
    "blocks": (
        "runs with a coupling map: the coupling blocks (parameter groups) of the final model in forward order: "
        "name (module path), parameters VARCHAR[] (their names in `named_parameters()`), successors INTEGER[] "
        "(the blocks it feeds directly, read off the torch.fx graph; gated edges added during training included), "
        "n_params"
    ),
    "curvature_coupling": (
        "at every spectral snapshot (and the synthesis window's checkpoints) of a run with `coupling_probes` > 0, "
        "pairs block_i <= block_j: kappa (definition 9; 1 on the diagonal), stderr (jackknife over probes), "
        "frobenius (estimated ||H_ij||_F), n_probes (per block), path_exists, path_length (fewest block hops in "
        "either direction in the model at that step; 0 on the diagonal, NULL without a path), trace and "
        "trace_stderr (Hutchinson trace of H_ii from the same products; diagonal rows only)"
    ),
    "augmentations": (
        "gated edges added during training: step (added after that checkpoint), src (block whose output it reads; "
        "-1 the input), dst (block whose input it feeds; the number of blocks = the output), kind (`skip` or "
        "`adapter`), method (`synthesized` or `random`), gain (the coherence its trial restored; NULL for random "
        "edges), n_params, gate (its value at the end of training). Their tensors are in `weights` with "
        "layer_index -1 and tensor `skips.<kind>_<src>_to_<dst>.*`"
    ),
    "augmentation_trials": (
        "every gentle trial of a synthesis: relative_coupling (the weakest relative coupling behind the "
        "candidate), coherence_control, coherence_trial, gain (their difference), selected"
    ),
    "studies": (
        "which config study asked for a run"
    ),
    "run_failures": (
        "runs whose extraction failed twice: dataset, error (the last one, one line), attempts, config_json; a "
        "run leaves the table when a later extraction succeeds and is ingested"
    ),
}

#: Statements that bring a database of version v up to v + 1 (applied in order, in one transaction).
#: None reaches version 6: a database of versions 3-5 holds curvature computed before estimates
#: carried their errors, and keeping it would put those rows beside re-extracted runs (whose ids
#: differ: the default hvp_budget changed), so it is refused with a message to rebuild it.
MIGRATIONS: dict[int, list[str]] = {
    6: ['ALTER TABLE runs ADD COLUMN "model" VARCHAR', 'ALTER TABLE runs ADD COLUMN "blocks" VARCHAR[]',
        'ALTER TABLE runs ADD COLUMN "checkpoint_dir" VARCHAR'],
    # the statement as of version 8, frozen here: a later change to the table is a migration of its own
    7: ['CREATE TABLE IF NOT EXISTS matrix_spectra ("run_id" VARCHAR, "step" INTEGER, "layer_index" INTEGER, '
        '"tensor" VARCHAR, "part" VARCHAR, "rows" INTEGER, "cols" INTEGER, "principal" BOOLEAN, "weight_sv" '
        'DOUBLE[], "weight_rank" INTEGER, "weight_stable_rank" DOUBLE, "weight_spectral_norm" DOUBLE, '
        '"grad_sv" DOUBLE[], "grad_rank" INTEGER, "grad_stable_rank" DOUBLE, "grad_spectral_norm" DOUBLE, '
        '"alignment" DOUBLE, PRIMARY KEY (run_id, step, layer_index, tensor, part))'],
    # data sets of any shape: a row's shape and how the data set was prepared (the rows before were tables,
    # prepared the standard way)
    8: ['ALTER TABLE datasets ADD COLUMN IF NOT EXISTS "input_shape" INTEGER[]',
        'ALTER TABLE datasets ADD COLUMN IF NOT EXISTS "preprocess" VARCHAR',
        "UPDATE datasets SET input_shape = [n_features], preprocess = 'standard'"],
    # what a Lanczos row spent and why it stopped, and its products' dtype: the rows before spent a fixed
    # budget of float64 products (their stop_reason and lanczos_runs stay NULL)
    9: ['ALTER TABLE hessian_spectra ADD COLUMN IF NOT EXISTS "stop_reason" VARCHAR',
        'ALTER TABLE hessian_spectra ADD COLUMN IF NOT EXISTS "lanczos_runs" INTEGER',
        'ALTER TABLE hessian_spectra ADD COLUMN IF NOT EXISTS "product_dtype" VARCHAR',
        "UPDATE hessian_spectra SET product_dtype = 'float64'"],
    # the trivial predictor's test score: the database holds no labels, so the rows already there get
    # none (NULL name and metric: not recorded) but chance AUC, which any constant predictor scores
    10: ['ALTER TABLE datasets ADD COLUMN IF NOT EXISTS "baseline_name" VARCHAR',
         'ALTER TABLE datasets ADD COLUMN IF NOT EXISTS "baseline_metric" DOUBLE',
         'ALTER TABLE datasets ADD COLUMN IF NOT EXISTS "baseline_auc" DOUBLE',
         "UPDATE datasets SET baseline_auc = 0.5 WHERE task = 'classification'"],
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


def create_table(name: str) -> str:
    """The CREATE TABLE statement of one table, with its primary key."""
    cols = {**TABLES, **DB_ONLY_TABLES}[name]
    body = ", ".join(f'"{c}" {t}' for c, t in cols)
    key = PRIMARY_KEYS.get(name) or DB_ONLY_KEYS.get(name)
    if key:
        body += f", PRIMARY KEY ({', '.join(key)})"
    return f"CREATE TABLE IF NOT EXISTS {name} ({body})"


def ddl() -> list[str]:
    """CREATE TABLE statements for every table, with primary keys."""
    return [create_table(name) for name in {**TABLES, **DB_ONLY_TABLES}]
