"""Margins and the generalization gap (paper 004; Jiang, Krishnan, Mobahi, Bengio, ICLR 2019).

Paper 004 reports that a linear model on statistics of the training-set margin distribution predicts
the generalization gap (train accuracy - test accuracy) of 377 trained models with R^2 = 0.89, but
only late in training, and that the fitted model does not carry over to models trained for fewer
iterations. This stage repeats the three tests and sets other predictors of the gap beside margins.

Models and stages
-----------------
A *model* is a classification run that completed (diverged runs are left out and counted). Its
*stages* are three of its spectral snapshots: ``late`` = the last one (the trained model), and
``early`` / ``middle`` = the snapshots closest to :data:`STAGE_FRACTIONS` of the run's optimizer
steps. The learning rate is constant and the batch order seeded, so the snapshot at step t is the
model a run of t steps would have produced: a "shorter-trained model". The gap at a stage is
train accuracy (on the labels trained on, noisy ones included) - test accuracy at that step.

Features (``analysis_gap_models``, one row per (run, stage), raw values)
------------------------------------------------------------------------
- margin signatures on the training set (``margins`` table, definition 7) at
  :data:`MARGIN_REPRESENTATIONS` (every network has them): Q1, median, Q3 and the two fences, over
  correctly classified points (Jiang et al.'s choice; ``m_<rep>_<stat>``) and over all points
  (``m_all_<rep>_<stat>``);
- ``hessian_trace``: the sum of the loss-Hessian block traces of the Linear layers (the trace of
  the full Hessian restricted to them, ``hessian_spectra``; NULL unless every block's trace is exact);
- ``hessian_top_eigenvalue`` (NULL unless its Lanczos run converged) and ``sharpness`` (SAM's worst-case
  loss increase in an L2 ball of
  radius rho; ``sharpness`` table), both on the probe batch over every parameter;
- ``grad_norm`` (the probe-batch gradient norm), ``log_spectral_norm_product`` (sum over layers of
  ln ||W_l||_2), ``distance_from_init`` (||theta_t - theta_0||_2 over every trained parameter, from
  the stored weights) and ``n_params``.

Regression (``analysis_gap_regression``, one row per specification)
-------------------------------------------------------------------
Each column enters under one fixed transform (:data:`TRANSFORMS`): slog(x) = sign(x) ln(1 + |x|)
for margin statistics (the lower fence is often negative) and the scale-like predictors, ln for the
parameter count, none for the already logarithmic spectral-norm product. OLS with an intercept
(:mod:`analyses.gap_regression`): R^2, adjusted R^2, and R^2 of out-of-fold predictions with
:data:`~analyses.gap_regression.N_FOLDS` folds grouped by data set (``r2_cv``), with a 95% percentile
interval from :data:`N_BOOT` resamples of models within data sets; Kendall's tau over model pairs
between the fitted (``kendall_tau``) or out-of-fold (``kendall_tau_cv``) prediction and the gap.
``stage`` says where the features (and the gap) are taken; ``fit_stage`` where the model was fitted
(a transfer row fits on ``late`` and predicts the held-out data sets' ``middle`` or ``early``
models); ``target`` is the gap at the stage (``gap``) or at the end of training (``final_gap``).
``sample`` is ``all`` (every model with the features at that stage) or ``all_stages`` (models
with the main features at all three stages: the stage and transfer comparisons use these, paired).

``analysis_gap_predictions`` holds the main specification's out-of-fold predictions per model and row
(stage, fit_stage, target, sample);
``analysis_gap_verdicts`` the three claims.
"""

from __future__ import annotations

import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from analyses import gap_regression as gr
from analyses.features import SNAPSHOT_LOSS_TRACE_SQL, slog
from analyses.presentation import empty_figure, fmt_number
from analyses.verdicts import CONFIDENCE, Verdict, write_verdicts

READS = ("runs", "checkpoints", "margins", "sharpness", "hessian_spectra", "layer_stats", "weights")
WRITES = ("analysis_gap_models", "analysis_gap_regression", "analysis_gap_predictions", "analysis_gap_verdicts")
TITLE = "Margins and the generalization gap"

#: Paper 004's result: R^2 of the linear model on margin statistics, and its number of models.
PAPER_R2, PAPER_N_MODELS = 0.89, 377
#: Representations every network has (input, first hidden layer's output, logits).
MARGIN_REPRESENTATIONS = ("input", "h0", "output")
#: Jiang et al.'s signature: quartiles and fences.
SIGNATURE = ("q1", "median", "q3", "lower_fence", "upper_fence")
#: Target fraction of training of each stage's snapshot.
STAGE_FRACTIONS = {"early": 0.2, "middle": 0.5, "late": 1.0}
STAGES = tuple(STAGE_FRACTIONS)
#: Largest distance, in fraction of training, between a stage's snapshot and its target.
STAGE_TOLERANCE = 0.1
#: Folds of the random (not grouped) cross-validation row, Jiang et al.'s 90/10 split.
RANDOM_FOLDS = 10
#: Bootstrap resamples of the cross-validated R^2.
N_BOOT = 400
#: Parameter tensors whose change is the distance from initialization (running statistics are not trained).
TRAINED_TENSORS = ("linear.weight", "linear.bias", "norm.weight", "norm.bias")


def margin_column(rep: str, stat: str, correct_only: bool = True) -> str:
    return f"m_{rep}_{stat}" if correct_only else f"m_all_{rep}_{stat}"


OTHER_PREDICTORS = ("hessian_trace", "hessian_top_eigenvalue", "sharpness", "grad_norm",
                    "log_spectral_norm_product", "distance_from_init", "n_params")
#: The transform of every feature column before the regression.
TRANSFORMS: dict[str, str] = {
    **{margin_column(r, s, c): "slog" for r in MARGIN_REPRESENTATIONS for s in SIGNATURE for c in (True, False)},
    "hessian_trace": "slog", "hessian_top_eigenvalue": "slog", "sharpness": "slog", "grad_norm": "slog",
    "log_spectral_norm_product": "identity", "distance_from_init": "slog", "n_params": "ln",
}
_APPLY = {"slog": slog, "ln": lambda x: np.log(np.asarray(x, float)), "identity": lambda x: np.asarray(x, float)}

#: The main specification: the signature at every shared representation, correct points only.
MAIN = "margins_all_layers"


def _margin_features(reps: tuple[str, ...], correct_only: bool = True) -> tuple[str, ...]:
    return tuple(margin_column(r, s, correct_only) for r in reps for s in SIGNATURE)


#: name -> (family, feature columns, description)
SPECIFICATIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    MAIN: ("margins", _margin_features(MARGIN_REPRESENTATIONS),
           "margin signature at input, h0 and output (correct points)"),
    "margins_output": ("margins", _margin_features(("output",)), "margin signature at the output"),
    "margins_h0": ("margins", _margin_features(("h0",)), "margin signature at the first hidden layer"),
    "margins_input": ("margins", _margin_features(("input",)), "margin signature at the input"),
    "margins_all_points": ("margins", _margin_features(MARGIN_REPRESENTATIONS, False),
                           "margin signature at input, h0 and output (all points)"),
    **{p: ("other", (p,), p.replace("_", " ")) for p in OTHER_PREDICTORS},
    "other_predictors": ("other", OTHER_PREDICTORS, "all the other predictors together"),
    "margins_and_other": ("combined", _margin_features(MARGIN_REPRESENTATIONS) + OTHER_PREDICTORS,
                          "margin signature and the other predictors"),
}

_REGRESSION_SCHEMA = {
    "spec": pl.Utf8, "family": pl.Utf8, "description": pl.Utf8, "features": pl.List(pl.Utf8), "k": pl.Int32,
    "stage": pl.Utf8, "fit_stage": pl.Utf8, "target": pl.Utf8, "sample": pl.Utf8, "cv_scheme": pl.Utf8,
    "n_models": pl.Int32,
    "n_datasets": pl.Int32, "n_excluded": pl.Int32, "cv_folds": pl.Int32, "r2": pl.Float64,
    "r2_adj": pl.Float64, "r2_cv": pl.Float64, "r2_cv_low": pl.Float64, "r2_cv_high": pl.Float64,
    "stage_fraction": pl.Float64, "kendall_tau": pl.Float64, "kendall_tau_feature": pl.Float64,
    "kendall_tau_cv": pl.Float64, "kendall_p_cv": pl.Float64,
    "paper_r2": pl.Float64, "note": pl.Utf8,
}


# --- the per-model table ---------------------------------------------------------------------------

def _stage_steps(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
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
            distance = np.abs(fractions - STAGE_FRACTIONS[stage])
            distance[list(used)] = np.inf  # each stage its own snapshot
            i = int(np.argmin(distance))
            if distance[i] <= STAGE_TOLERANCE:
                used.add(i)
                rows.append({"run_id": run_id, "stage": stage, "step": int(steps[i]), "fraction": float(fractions[i])})
    schema = {"run_id": pl.Utf8, "stage": pl.Utf8, "step": pl.Int32, "fraction": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _write_models(con: duckdb.DuckDBPyConnection) -> None:
    stages = _stage_steps(con)  # noqa: F841 (read by the SQL below)
    con.execute("CREATE OR REPLACE TEMP TABLE gap_stage_steps AS SELECT * FROM stages")
    margin_cols = ",\n".join(
        f"max({stat}) FILTER (WHERE representation = '{rep}' AND correct_only = {str(c).upper()}) "
        f"AS {margin_column(rep, stat, c)}"
        for rep in MARGIN_REPRESENTATIONS for stat in SIGNATURE for c in (True, False))
    tensors = ", ".join(f"'{t}'" for t in TRAINED_TENSORS)
    con.execute(f"""
        CREATE OR REPLACE TABLE analysis_gap_models AS
        WITH m AS (
            SELECT run_id, step, {margin_cols},
                   string_agg(DISTINCT status, ',') FILTER (WHERE status <> 'ok') AS margin_status
            FROM margins WHERE split = 'train' GROUP BY run_id, step),
        trace AS ({SNAPSHOT_LOSS_TRACE_SQL}),
        spec AS (SELECT run_id, step, sum(ln(weight_spectral_norm)) AS log_spectral_norm_product
                 FROM layer_stats WHERE weight_spectral_norm > 0 GROUP BY run_id, step),
        dist AS (SELECT w.run_id, w.step,
                        sqrt(sum(list_distance(w."values"::DOUBLE[], w0."values"::DOUBLE[]) ^ 2)) AS distance_from_init
                 FROM weights w JOIN (SELECT DISTINCT run_id, step FROM gap_stage_steps) s
                                  ON s.run_id = w.run_id AND s.step = w.step
                 JOIN weights w0 ON w0.run_id = w.run_id AND w0.step = 0 AND w0.layer_index = w.layer_index
                                AND w0.tensor = w.tensor
                 WHERE w.tensor IN ({tensors}) GROUP BY w.run_id, w.step)
        SELECT s.run_id, r.dataset, s.stage, s.step, s.fraction,
               c.train_accuracy - c.test_accuracy AS gap, fc.train_accuracy - fc.test_accuracy AS final_gap,
               c.train_accuracy, c.test_accuracy, r.label_noise, r.train_fraction, r.regularizer,
               m.* EXCLUDE (run_id, step, margin_status), m.margin_status,
               trace.hessian_trace,
               CASE WHEN sh.hessian_top_converged THEN sh.hessian_top_eigenvalue END AS hessian_top_eigenvalue,
               sh.sharpness, c.grad_norm,
               spec.log_spectral_norm_product, dist.distance_from_init, r.n_params::DOUBLE AS n_params
        FROM gap_stage_steps s
        JOIN runs r USING (run_id)
        JOIN checkpoints c ON c.run_id = s.run_id AND c.step = s.step
        JOIN checkpoints fc ON fc.run_id = s.run_id AND fc.step = r.final_step
        LEFT JOIN m ON m.run_id = s.run_id AND m.step = s.step
        LEFT JOIN trace ON trace.run_id = s.run_id AND trace.step = s.step
        LEFT JOIN sharpness sh ON sh.run_id = s.run_id AND sh.step = s.step
        LEFT JOIN spec ON spec.run_id = s.run_id AND spec.step = s.step
        LEFT JOIN dist ON dist.run_id = s.run_id AND dist.step = s.step
        ORDER BY s.run_id, s.stage""")
    con.execute("DROP TABLE gap_stage_steps")


# --- fitting -----------------------------------------------------------------------------------------

def design(frame: pl.DataFrame, features: tuple[str, ...]) -> np.ndarray:
    """Feature columns of ``frame`` under their fixed transforms: (n, k) float, NaN where missing."""
    cols = [_APPLY[TRANSFORMS[f]](frame[f].cast(pl.Float64).fill_null(math.nan).to_numpy()) for f in features]
    return np.column_stack(cols) if cols else np.empty((frame.height, 0))


def _complete(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.isfinite(X).all(axis=1) & np.isfinite(y)


def _bootstrap_r2(resamples: np.ndarray, score) -> tuple[float, float]:
    """Percentile interval of score(idx) over the rows of resamples (NaN draws dropped)."""
    draws = np.array([score(idx) for idx in resamples])
    draws = draws[np.isfinite(draws)]
    if len(draws) < len(resamples) // 2:
        return math.nan, math.nan
    a = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return float(lo), float(hi)


def fit_row(X_fit: np.ndarray, y_fit: np.ndarray, groups: np.ndarray, X_eval: np.ndarray | None = None,
            y_eval: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0,
            random_folds: bool = False) -> tuple[dict, np.ndarray]:
    """The regression columns for models with features X_fit (n, k) and gaps y_fit (n,) in data sets
    ``groups``; with X_eval/y_eval (the same models at another stage) the CV predicts those instead
    (a transfer). ``random_folds``: :data:`RANDOM_FOLDS` random folds of models instead of folds of data
    sets (Jiang et al.'s setting, where every model shares one data set). Returns (columns, out-of-fold
    predictions (n,))."""
    X_eval = X_fit if X_eval is None else X_eval
    y_eval = y_fit if y_eval is None else y_eval
    n, k = X_fit.shape
    cv_groups = (np.random.default_rng(seed).permutation(n) % RANDOM_FOLDS) if random_folds else groups
    n_cv = RANDOM_FOLDS if random_folds else gr.N_FOLDS
    folds = gr.n_folds(cv_groups, n_cv)
    out = {"n_models": n, "n_datasets": len(np.unique(groups)), "k": k, "cv_folds": folds, "r2": None,
           "r2_adj": None, "r2_cv": None, "r2_cv_low": None, "r2_cv_high": None, "kendall_tau": None,
           "kendall_tau_feature": None, "kendall_tau_cv": None, "kendall_p_cv": None, "note": None}
    oof = np.full(n, np.nan)
    if n < k + 3:
        out["note"] = f"too few models ({n}) for {k} features"
        return out, oof
    if X_eval is X_fit:
        r2, r2_adj, fitted = gr.ols_fit(X_fit, y_fit)
        out.update(r2=r2, r2_adj=r2_adj, kendall_tau=gr.kendall_tau(fitted, y_fit)[0])
        if k == 1:  # the predictor's own rank agreement, with its sign
            out["kendall_tau_feature"] = gr.kendall_tau(X_fit[:, 0], y_fit)[0]
    if folds == 0:
        out["note"] = "one data set: no grouped cross-validation"
        return out, oof
    oof = gr.transfer_predictions(X_fit, y_fit, X_eval, cv_groups, n_cv)
    out["r2_cv"] = gr.cv_r2(y_eval, oof)
    missing = int((~np.isfinite(oof)).sum())
    if missing:
        out["note"] = f"{missing} models in folds too small to fit are left out of r2_cv"
    out["kendall_tau_cv"], out["kendall_p_cv"] = gr.kendall_tau(oof, y_eval)
    # resample models within data sets; a drawn model keeps its fold, so its copies never score each other
    resamples = gr.stratified_resamples(groups, n_boot, seed)
    out["r2_cv_low"], out["r2_cv_high"] = _bootstrap_r2(resamples, lambda idx: gr.cv_r2(
        y_eval[idx], gr.transfer_predictions(X_fit[idx], y_fit[idx], X_eval[idx], cv_groups[idx], n_cv)))
    return out, oof


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_gap_models``, ``analysis_gap_regression``, ``analysis_gap_predictions`` and
    ``analysis_gap_verdicts``."""
    _write_models(con)
    models = con.sql("SELECT * FROM analysis_gap_models ORDER BY run_id").pl()
    n_candidates = models.filter(pl.col("stage") == "late").height
    rows, predictions = [], []

    def add(spec: str, stage: str, frame: pl.DataFrame, fit_stage: str, target: str, sample: str,
            fit_frame: pl.DataFrame | None = None, random_folds: bool = False) -> dict:
        family, features, description = SPECIFICATIONS[spec]
        X, y = design(frame, features), frame[target].cast(pl.Float64).fill_null(math.nan).to_numpy()
        groups = frame["dataset"].to_numpy()
        if fit_frame is not None:
            Xf = design(fit_frame, features)
            yf = fit_frame["gap"].cast(pl.Float64).fill_null(math.nan).to_numpy()
            keep = _complete(X, y) & _complete(Xf, yf)
            cols, oof = fit_row(Xf[keep], yf[keep], groups[keep], X[keep], y[keep], seed=len(rows),
                                random_folds=random_folds)
        else:
            keep = _complete(X, y)
            cols, oof = fit_row(X[keep], y[keep], groups[keep], seed=len(rows), random_folds=random_folds)
        row = {"spec": spec, "family": family, "description": description, "features": list(features),
               "stage": stage, "fit_stage": fit_stage, "target": target, "sample": sample,
               "cv_scheme": f"random_{RANDOM_FOLDS}_fold" if random_folds else "grouped_by_dataset",
               "stage_fraction": frame.filter(pl.Series(keep))["fraction"].median() if keep.any() else None,
               "n_excluded": int((~keep).sum()) + (n_candidates - frame.height if sample == "all" else 0),
               "paper_r2": PAPER_R2 if spec == MAIN and stage == "late" and fit_stage == "late" else None, **cols}
        rows.append(_clean(row))
        if spec == MAIN and not random_folds:
            kept = frame.filter(pl.Series(keep))
            predictions.append(pl.DataFrame({
                "run_id": kept["run_id"], "dataset": kept["dataset"], "stage": stage, "fit_stage": fit_stage,
                "target": target, "sample": sample, "gap": y[keep], "predicted_cv": oof}))
        return row

    by_stage = {s: models.filter(pl.col("stage") == s).sort("run_id") for s in STAGES}
    main_row = None
    for spec in SPECIFICATIONS:
        row = add(spec, "late", by_stage["late"], "late", "gap", "all")
        main_row = row if spec == MAIN else main_row
    main_random = add(MAIN, "late", by_stage["late"], "late", "gap", "all", random_folds=True)

    # the paired comparisons: models with the main features at every stage
    main_features = SPECIFICATIONS[MAIN][1]
    ok_ids = None
    for s in STAGES:
        f = by_stage[s]
        ok = f.filter(pl.Series(_complete(design(f, main_features), f["gap"].fill_null(math.nan).to_numpy())))
        ids = set(ok["run_id"].to_list())
        ok_ids = ids if ok_ids is None else ok_ids & ids
    ok_ids = ok_ids or set()
    paired = {s: by_stage[s].filter(pl.col("run_id").is_in(sorted(ok_ids))).sort("run_id") for s in STAGES}
    for random_folds in (False, True):
        for s in STAGES:
            add(MAIN, s, paired[s], s, "gap", "all_stages", random_folds=random_folds)
        for s in ("early", "middle"):
            add(MAIN, s, paired[s], s, "final_gap", "all_stages", random_folds=random_folds)
            add(MAIN, s, paired[s], "late", "gap", "all_stages", fit_frame=paired["late"], random_folds=random_folds)

    frame = pl.DataFrame(rows, schema=_REGRESSION_SCHEMA)  # noqa: F841
    con.execute("CREATE OR REPLACE TABLE analysis_gap_regression AS SELECT * FROM frame")
    pred_schema = {"run_id": pl.Utf8, "dataset": pl.Utf8, "stage": pl.Utf8, "fit_stage": pl.Utf8, "target": pl.Utf8,
                   "sample": pl.Utf8, "gap": pl.Float64, "predicted_cv": pl.Float64}
    preds = (pl.concat([p.cast(pred_schema) for p in predictions]) if predictions  # noqa: F841
             else pl.DataFrame(schema=pred_schema)).with_columns(pl.col(pl.Float64).fill_nan(None))
    con.execute("CREATE OR REPLACE TABLE analysis_gap_predictions AS SELECT * FROM preds")
    write_verdicts(con, "gap", _verdicts(main_row, main_random, paired))


# --- verdicts ----------------------------------------------------------------------------------------

def _paired_difference(paired: dict[str, pl.DataFrame], first: tuple[str, str], second: tuple[str, str],
                       n_boot: int = N_BOOT) -> tuple[float, float, float, int, int]:
    """R^2_cv(first) - R^2_cv(second) on the same models, each a (feature stage, fit stage) pair, with
    :data:`RANDOM_FOLDS` random folds of models (the same folds for both terms: the paper's within-data-set
    setting) and a stratified bootstrap interval (both terms on the same resamples). Returns
    (effect, lo, hi, n, n_datasets)."""
    features = SPECIFICATIONS[MAIN][1]
    late = paired["late"]
    groups = late["dataset"].to_numpy()
    n = len(groups)
    folds = np.random.default_rng(7).permutation(n) % RANDOM_FOLDS
    if n < len(features) + 3 or gr.n_folds(folds, RANDOM_FOLDS) == 0:
        return math.nan, math.nan, math.nan, n, len(np.unique(groups))

    def parts(stage_pair):
        stage, fit = stage_pair
        f = paired[stage]
        return (design(paired[fit], features), paired[fit]["gap"].to_numpy(), design(f, features),
                f["gap"].to_numpy())

    a, b = parts(first), parts(second)

    def score(idx):
        ra = gr.cv_r2(a[3][idx], gr.transfer_predictions(a[0][idx], a[1][idx], a[2][idx], folds[idx], RANDOM_FOLDS))
        rb = gr.cv_r2(b[3][idx], gr.transfer_predictions(b[0][idx], b[1][idx], b[2][idx], folds[idx], RANDOM_FOLDS))
        return ra - rb

    effect = score(np.arange(n))
    lo, hi = _bootstrap_r2(gr.stratified_resamples(groups, n_boot, 1), score)
    return effect, lo, hi, n, len(np.unique(groups))


def _verdicts(main: dict, random: dict, paired: dict[str, pl.DataFrame]) -> list[Verdict]:
    def covers(row: dict) -> str:
        lo, hi = row["r2_cv_low"], row["r2_cv_high"]
        if lo is None or hi is None:
            return "no interval"
        return f"the paper's {PAPER_R2} is {'inside' if lo <= PAPER_R2 <= hi else 'outside'} the interval"

    out = [Verdict(
        "gap.margins_predict_gap", "004; Jiang et al. 2019",
        f"A linear model on training-set margin statistics predicts the generalization gap (R^2 = {PAPER_R2} "
        f"over {PAPER_N_MODELS} models).",
        f"OLS of the final gap on the margin signature at input, h0 and output (slog), {RANDOM_FOLDS} random folds "
        "of models (the paper's setting: a model's data set is in the fit); bootstrap of models within data sets",
        "r2_cv", "positive", random["r2_cv"], random["r2_cv_low"], random["r2_cv_high"], random["n_models"],
        "models", detail=f"{random['n_datasets']} data sets; in-sample R^2 = {fmt_number(random['r2'])}, adjusted "
                         f"{fmt_number(random['r2_adj'])}; {covers(random)}; the interval holds the data sets fixed"),
        Verdict(
        "gap.margins_predict_unseen_datasets", "004; Jiang et al. 2019",
        "The margin model also predicts the gap of networks on data sets it was not fitted on (a stricter test "
        "than the paper's).",
        "The same OLS, cross-validated with folds grouped by data set; bootstrap of models within data sets",
        "r2_cv", "positive", main["r2_cv"], main["r2_cv_low"], main["r2_cv_high"], main["n_models"], "models",
        detail=f"{main['n_datasets']} data sets; {covers(main)}")]
    eff, lo, hi, n, k = _paired_difference(paired, ("late", "late"), ("early", "early"))
    out.append(Verdict(
        "gap.late_only", "004", "Margin statistics relate to the gap only late in training.",
        f"R^2_cv ({RANDOM_FOLDS} random folds) at the last snapshot minus at the snapshot nearest 20 % of training "
        "(gap at the same step), same models and folds, paired bootstrap", "r2_cv(late) - r2_cv(early)", "positive",
        eff, lo, hi, n, "models", detail=f"{k} data sets"))
    eff, lo, hi, n, k = _paired_difference(paired, ("middle", "late"), ("late", "late"))
    out.append(Verdict(
        "gap.no_transfer", "004", "A gap model fitted on long-trained networks does not carry over to "
        "shorter-trained ones.",
        f"R^2 of the late-fitted model ({RANDOM_FOLDS} random folds) on held-out models at the snapshot nearest half "
        "the steps minus its R^2 on their late snapshots, paired bootstrap", "r2(late fit -> middle) - r2_cv(late)",
        "negative", eff, lo, hi, n, "models", detail=f"{k} data sets"))
    return out


# --- figures -----------------------------------------------------------------------------------------

def predicted_vs_actual_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Out-of-fold predicted vs actual gap, at the end of training and for the late-fitted model on
    the middle snapshots; colour = data set."""
    title = "Generalization gap: cross-validated prediction from margins vs actual"
    panels = [("late", "late", "all", "last snapshot (fit and predict late)"),
              ("middle", "late", "all_stages", "middle snapshot, predicted by the late fit")]
    frames = {p[:3]: con.sql(f"""SELECT p.*, r.r2_cv, r.n_models, r.n_datasets FROM analysis_gap_predictions p
                                 JOIN analysis_gap_regression r ON r.spec = '{MAIN}' AND r.stage = p.stage
                                  AND r.fit_stage = p.fit_stage AND r.target = p.target AND r.sample = p.sample
                                  AND r.cv_scheme = 'grouped_by_dataset'
                                 WHERE p.stage = '{p[0]}' AND p.fit_stage = '{p[1]}' AND p.target = 'gap'
                                   AND p.sample = '{p[2]}' AND p.predicted_cv IS NOT NULL""").pl() for p in panels}
    if all(f.height == 0 for f in frames.values()):
        return empty_figure(title, "no model has out-of-fold predictions (too few models or data sets)")
    datasets = sorted({d for f in frames.values() for d in f["dataset"].to_list()})
    colors = {d: plt.cm.tab20(i % 20) for i, d in enumerate(datasets)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4))
    for ax, (stage, fit, sample, label) in zip(axes, panels, strict=True):
        f = frames[(stage, fit, sample)]
        if f.height == 0:
            ax.text(0.5, 0.5, "no predictions", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(label)
            continue
        for d in datasets:
            g = f.filter(pl.col("dataset") == d)
            if g.height:
                ax.scatter(g["gap"], g["predicted_cv"], s=14, alpha=0.75, color=colors[d], label=d)
        lo = float(min(f["gap"].min(), f["predicted_cv"].min()))
        hi = float(max(f["gap"].max(), f["predicted_cv"].max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="y = x")
        ax.set_xlabel("actual gap (train accuracy - test accuracy)")
        ax.set_ylabel("predicted gap (out of fold)")
        ax.set_title(f"{label}\nR^2_cv = {fmt_number(f['r2_cv'][0])}, {f['n_models'][0]} models, "
                     f"{f['n_datasets'][0]} data sets", fontsize=10)
    axes[0].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def r2_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Cross-validated R^2 with its bootstrap interval per specification, stage and transfer."""
    title = "Cross-validated R^2 of gap predictors (folds grouped by data set)"
    rows = con.sql("""SELECT spec || CASE WHEN cv_scheme = 'grouped_by_dataset' THEN '' ELSE ' (random folds)' END,
                             stage, fit_stage, target, sample, r2_cv, r2_cv_low, r2_cv_high, n_models
                      FROM analysis_gap_regression WHERE r2_cv IS NOT NULL""").fetchall()
    if not rows:
        return empty_figure(title, "no specification could be cross-validated")

    def label(spec, stage, fit, target, sample):
        if sample == "all":
            return spec
        what = f"{spec} @ {stage}" + (f" (fit @ {fit})" if fit != stage else "")
        return what + (" -> final gap" if target == "final_gap" else "")

    rows = sorted(rows, key=lambda r: (r[4] != "all", -r[5] if r[4] == "all" else 0))
    fig, ax = plt.subplots(figsize=(9, 0.34 * len(rows) + 1.8))
    y = np.arange(len(rows))
    est = np.array([r[5] for r in rows], float)
    lo = np.array([r[6] if r[6] is not None else np.nan for r in rows], float)
    hi = np.array([r[7] if r[7] is not None else np.nan for r in rows], float)
    colors = ["C0" if r[4] == "all" else "C1" for r in rows]
    ax.barh(y, est, color=colors, alpha=0.8)
    has = np.isfinite(lo) & np.isfinite(hi)
    # a bootstrap percentile interval need not contain the full-sample estimate: clip, do not fail
    xerr = [np.clip(est[has] - lo[has], 0, None), np.clip(hi[has] - est[has], 0, None)]
    ax.errorbar(est[has], y[has], xerr=xerr, fmt="none", color="black", lw=1)
    ax.axvline(PAPER_R2, color="C3", ls="--", lw=1.2, label=f"paper 004: R^2 = {PAPER_R2} ({PAPER_N_MODELS} models)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, [label(*r[:5]) for r in rows], fontsize=8)
    ax.set_xlabel("R^2 of out-of-fold predictions (95% bootstrap interval)")
    left = max(-1.0, float(np.nanmin(np.append(lo, est))) - 0.05)
    ax.set_xlim(left, 1.0)
    for yi, e in zip(y, est, strict=True):  # the value itself, also for bars clipped at the left edge
        ax.text(max(e, 0.0) + 0.01, yi, f"{e:.2f}", va="center", ha="left", fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("blue: every model at its last snapshot; orange: the same models at every stage", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


FIGURES = {"gap_predicted_vs_actual": predicted_vs_actual_figure, "gap_r2": r2_figure}
CAPTIONS = {
    "gap_predicted_vs_actual": (
        "Left: each trained model's generalization gap against its out-of-fold prediction from the margin "
        "signature (input, first hidden layer, output; correct training points), folds grouped by data set. "
        "Right: the same late-fitted models predicting the held-out data sets' models at about half of their "
        "training (the paper's transfer test). Points on the dashed line are predicted exactly."),
    "gap_r2": (
        "R^2 of out-of-fold predictions for each predictor set (blue: every model at its last snapshot) and for "
        "the margin model at each training stage and in transfer (orange: models with all three stages). "
        "Values below 0 predict held-out data sets worse than their mean gap would; the axis stops at -1 and each "
        "bar is labelled with its value. Red: the paper's R^2."),
}


# --- report ------------------------------------------------------------------------------------------

def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences: our R^2 beside the paper's, the stage and transfer tests, other predictors."""
    paragraphs = []
    n_all, n_class, n_div = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE task = 'classification'),
               count(*) FILTER (WHERE task = 'classification' AND status <> 'complete') FROM runs""").fetchall()[0]
    statuses = con.execute("""SELECT status, count(DISTINCT run_id) FROM margins WHERE status <> 'ok'
                              GROUP BY status ORDER BY status""").fetchall()
    paragraphs.append(
        f"{n_class} of {n_all} runs are classifiers ({n_div} of them diverged and are left out); regression runs "
        "have no margins (their rows in `margins` say `not_classification`). "
        + ("Margin rows without statistics, by reason (runs): " + ", ".join(f"{s}: {k}" for s, k in statuses) + "."
           if statuses else "Every classifier's margins are defined at every snapshot."))
    main = con.execute(f"""SELECT r2, r2_adj, r2_cv, r2_cv_low, r2_cv_high, n_models, n_datasets, cv_folds, note,
                                  kendall_tau_cv
                           FROM analysis_gap_regression WHERE spec = '{MAIN}' AND sample = 'all'
                           ORDER BY cv_scheme""").fetchall()
    random = [r for r in main if r[7] == RANDOM_FOLDS and r[2] is not None]
    main = [r for r in main if r[7] != RANDOM_FOLDS]
    if main and main[0][2] is not None:
        r2, r2_adj, r2_cv, lo, hi, n, k, folds, _, tau = main[0]
        covers = lo is not None and hi is not None and lo <= PAPER_R2 <= hi
        paragraphs.append(
            f"Our margin model (the signature at input, first hidden layer and output, {len(SIGNATURE)} statistics "
            f"each, slog-transformed) on {n} models from {k} data sets: in-sample R^2 = {fmt_number(r2)} "
            f"(adjusted {fmt_number(r2_adj)}), cross-validated R^2 = {fmt_number(r2_cv)} "
            f"[{fmt_number(lo)}, {fmt_number(hi)}] ({folds} folds grouped by data set, so no data set is predicted "
            f"by a fit that saw it), Kendall's tau of the held-out predictions with the gap "
            f"{fmt_number(tau)}. Paper 004 reports R^2 = {PAPER_R2} on {PAPER_N_MODELS} models, without saying "
            "whether in-sample or held-out; Jiang et al. (2019) fitted and tested on networks of one data set at a "
            f"time (CIFAR-10 or CIFAR-100), a far easier setting than predicting unseen data sets. The paper's "
            f"value is {'inside' if covers else 'outside'} our interval."
            + (f" With {RANDOM_FOLDS} random folds of models instead (a model's own data set is then in the fit, "
               f"as in Jiang et al.), R^2_cv = {fmt_number(random[0][2])} [{fmt_number(random[0][3])}, "
               f"{fmt_number(random[0][4])}]." if random else ""))
    elif main:
        paragraphs.append(f"The margin model could not be cross-validated: {main[0][8] or 'too few models'}.")
    for scheme, label in ((f"random_{RANDOM_FOLDS}_fold", f"{RANDOM_FOLDS} random folds of models"),
                          ("grouped_by_dataset", "folds grouped by data set")):
        stage_rows = {(st, f, t): (r, lo, hi, n, frac) for st, f, t, r, lo, hi, n, frac in con.execute(f"""
            SELECT stage, fit_stage, target, r2_cv, r2_cv_low, r2_cv_high, n_models, stage_fraction
            FROM analysis_gap_regression WHERE spec = '{MAIN}' AND sample = 'all_stages' AND cv_scheme = ?""",
            [scheme]).fetchall()}
        if stage_rows.get(("late", "late", "gap"), (None,))[0] is None:
            continue

        def fmt(key, rows=stage_rows):
            r, lo, hi, _, _ = rows.get(key, (None, None, None, 0, None))
            return f"{fmt_number(r)} [{fmt_number(lo)}, {fmt_number(hi)}]"

        def pct(stage, rows=stage_rows):
            frac = rows.get((stage, stage, "gap"), (None,) * 5)[4]
            return "n/a" if frac is None else f"{100 * frac:.0f} %"

        paragraphs.append(
            f"By training stage ({label}), on the {stage_rows[('late', 'late', 'gap')][3]} models with margins at "
            f"every stage: R^2_cv = {fmt(('early', 'early', 'gap'))} early (median {pct('early')} of the steps), "
            f"{fmt(('middle', 'middle', 'gap'))} in the middle (median {pct('middle')}), "
            f"{fmt(('late', 'late', 'gap'))} at the end. The late-fitted model applied to the middle snapshots "
            f"reaches {fmt(('middle', 'late', 'gap'))}, and {fmt(('early', 'late', 'gap'))} on the early ones.")
    others = con.execute("""SELECT spec, r2_cv, coalesce(kendall_tau_feature, kendall_tau) FROM analysis_gap_regression
                            WHERE family = 'other' AND sample = 'all' AND r2_cv IS NOT NULL
                            ORDER BY r2_cv DESC""").fetchall()
    if others:
        paragraphs.append("Other predictors alone (R^2 on held-out data sets; Kendall tau of the predictor itself "
                          "with the gap, of the fit for the combined set): " + "; ".join(
            f"{s}: {fmt_number(r)}, tau {fmt_number(t)}" for s, r, t in others) + ".")
    tables = [
        {"caption": "Gap regressions (analysis_gap_regression)",
         "sql": """SELECT spec, cv_scheme, stage, fit_stage, target, sample, k, n_models, n_datasets, n_excluded,
                          round(r2, 3) AS r2, round(r2_adj, 3) AS r2_adj, round(r2_cv, 3) AS r2_cv,
                          round(r2_cv_low, 3) AS r2_cv_low, round(r2_cv_high, 3) AS r2_cv_high,
                          round(kendall_tau, 3) AS tau, round(kendall_tau_feature, 3) AS tau_feature,
                          round(kendall_tau_cv, 3) AS tau_cv, round(stage_fraction, 3) AS stage_fraction, paper_r2,
                          note
                   FROM analysis_gap_regression ORDER BY sample, family, r2_cv DESC NULLS LAST"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
