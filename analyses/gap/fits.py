"""The Jiang et al. fits of the gap stage: ``analysis_gap_jiang`` (one row per fit) and
``analysis_gap_jiang_predictions`` (each model's repeated-fold out-of-fold prediction per fit), from the
models table (see :mod:`analyses.gap.jiang` for the estimators and the exclusion rule).

Fits (``predictors``): ``indicators`` (the data-set-mean model), ``log_quartiles`` and
``log_quartiles+indicators``; ``scope`` is ``pooled`` (every data set; the pooled margin fit carries the
indicators) or a data set's name (``log_quartiles`` on that data set's models alone, for data sets with at
least :data:`~analyses.gap.jiang.MIN_MODELS` models). ``sample`` is ``all`` (every kept model at the last
snapshot) or ``all_stages`` (kept models with features at early, middle and late: the paired stage and
transfer rows; a transfer row has ``fit_stage = 'late'`` and a stage other than late: fitted on the
training folds' late snapshots, scored on the held-out models' earlier snapshots against their gap there).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.gap.jiang import (
    ALT_STALL_LOSS_RATIOS,
    MIN_MODELS,
    N_FOLDS,
    N_REPEATS,
    STALL_LOSS_RATIO,
    excluded,
    indicators,
    log_quartiles,
    max_vif,
    r2_in_sample,
    r2_score,
    repeated_oof,
    tau_score,
)
from analyses.gap.predictors import PAPER_R2, column

POOLED = "pooled"
IND, LQ, BOTH = "indicators", "log_quartiles", "log_quartiles+indicators"
PRED_SCHEMA = {"run_id": pl.Utf8, "dataset": pl.Utf8, "scope": pl.Utf8, "predictors": pl.Utf8, "stage": pl.Utf8,
               "fit_stage": pl.Utf8, "sample": pl.Utf8, "gap": pl.Float64, "predicted_cv": pl.Float64}


def _design(frame: pl.DataFrame, predictors: str, levels_of: np.ndarray) -> np.ndarray:
    ind = indicators(levels_of)
    if predictors == IND:
        return ind
    lq = log_quartiles(frame)
    return lq if predictors == LQ else np.column_stack([lq, ind])


def kept_models(models: pl.DataFrame, stall_ratio: float = STALL_LOSS_RATIO
                ) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Per stage, the models kept for the fits (not stalled at ``stall_ratio``, no label noise, finite log
    quartiles and gap at the last snapshot), by run_id; and the counts left out (``stalled``, ``noisy``,
    ``missing``)."""
    late = models.filter(pl.col("stage") == "late").sort("run_id")
    stalled, noisy = excluded(late, stall_ratio)
    finite = np.isfinite(log_quartiles(late)).all(axis=1) & np.isfinite(column(late, "gap"))
    keep = ~stalled & ~noisy & finite
    counts = {"stalled": int(stalled.sum()), "noisy": int((noisy & ~stalled).sum()),
              "missing": int((~finite & ~stalled & ~noisy).sum())}
    ids = late.filter(pl.Series(keep))["run_id"]
    return ({s: models.filter((pl.col("stage") == s) & pl.col("run_id").is_in(ids.implode())).sort("run_id")
             for s in ("early", "middle", "late")}, counts)


def paired_kept(by_stage: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The kept models with finite log quartiles and gap at all three stages, per stage, by run_id."""
    ids = None
    for f in by_stage.values():
        ok = np.isfinite(log_quartiles(f)).all(axis=1) & np.isfinite(column(f, "gap"))
        s = set(f.filter(pl.Series(ok))["run_id"].to_list())
        ids = s if ids is None else ids & s
    ids = sorted(ids or ())
    return {s: f.filter(pl.col("run_id").is_in(ids)).sort("run_id") for s, f in by_stage.items()}


def _fit(frame: pl.DataFrame, predictors: str, scope: str, stage: str, sample: str, seed: int,
         counts: dict[str, int], fit_frame: pl.DataFrame | None = None) -> tuple[dict, pl.DataFrame]:
    levels = frame["dataset"].to_numpy()
    X, y = _design(frame, predictors, levels), column(frame, "gap")
    fit = frame if fit_frame is None else fit_frame
    Xf, yf = _design(fit, predictors, levels), column(fit, "gap")
    n, k = X.shape
    row = {"scope": scope, "predictors": predictors, "stage": stage,
           "fit_stage": stage if fit_frame is None else "late", "sample": sample, "n_models": n,
           "n_datasets": len(set(levels.tolist())), "n_stalled": counts["stalled"], "n_noisy": counts["noisy"],
           "n_missing": counts["missing"], "k": k, "n_repeats": N_REPEATS, "n_folds": N_FOLDS,
           "max_vif": None, "r2": None, "r2_cv": None, "r2_cv_repeat_min": None, "r2_cv_repeat_max": None,
           "tau_cv": None, "tau_cv_repeat_min": None, "tau_cv_repeat_max": None,
           "paper_r2": PAPER_R2 if predictors != IND else None}
    pred = np.full(n, np.nan)
    if n >= k + 3 and N_FOLDS <= n:
        if fit_frame is None:
            row["r2"] = r2_in_sample(X, y)
            row["max_vif"] = max_vif(X)
        pred, r2s, taus = repeated_oof(Xf, yf, X, y, seed=seed)
        row.update(r2_cv=r2_score(y, pred), tau_cv=tau_score(y, pred),
                   r2_cv_repeat_min=float(np.nanmin(r2s)) if np.isfinite(r2s).any() else None,
                   r2_cv_repeat_max=float(np.nanmax(r2s)) if np.isfinite(r2s).any() else None,
                   tau_cv_repeat_min=float(np.nanmin(taus)) if np.isfinite(taus).any() else None,
                   tau_cv_repeat_max=float(np.nanmax(taus)) if np.isfinite(taus).any() else None)
    row = {k_: (None if isinstance(v, float) and not math.isfinite(v) else v) for k_, v in row.items()}
    preds = pl.DataFrame({"run_id": frame["run_id"], "dataset": frame["dataset"], "scope": scope,
                          "predictors": predictors, "stage": stage, "fit_stage": row["fit_stage"], "sample": sample,
                          "gap": y, "predicted_cv": pred}, schema=PRED_SCHEMA)
    return row, preds


def jiang_fits(models: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(``analysis_gap_jiang`` rows, ``analysis_gap_jiang_predictions`` rows) from the models table.

    Every fit of the same models uses seed 0, so the folds of the paired stage and transfer rows are
    the same models' folds (the differences are paired)."""
    by_stage, counts = kept_models(models)
    rows, preds = [], []

    def add(*args, **kw) -> None:
        r, p = _fit(*args, **kw)
        rows.append(r)
        preds.append(p)

    late = by_stage["late"]
    for predictors in (IND, LQ, BOTH):
        add(late, predictors, POOLED, "late", "all", 0, counts)
    for d in sorted(set(late["dataset"].to_list())):
        sub = late.filter(pl.col("dataset") == d)
        if sub.height >= MIN_MODELS:
            add(sub, LQ, d, "late", "all", 0, counts)
    paired = paired_kept(by_stage)
    for s in ("early", "middle", "late"):
        add(paired[s], BOTH, POOLED, s, "all_stages", 0, counts)
        add(paired[s], IND, POOLED, s, "all_stages", 0, counts)
    for s in ("early", "middle"):
        add(paired[s], BOTH, POOLED, s, "all_stages", 0, counts, fit_frame=paired["late"])
    table = pl.from_dicts(rows, infer_schema_length=None)
    return table, pl.concat(preds) if preds else pl.DataFrame(schema=PRED_SCHEMA)


def stall_sensitivity(models: pl.DataFrame, ratios: tuple[float, ...] = ALT_STALL_LOSS_RATIOS) -> list[dict]:
    """The pooled margins + indicators fit at the last snapshot repeated with each other stall ratio:
    one dict per ratio with ``stall_ratio``, ``n_models``, ``r2_cv`` and ``tau_cv`` (None where too few
    models), so a verdict can show that the exclusion rule does not decide it."""
    out = []
    for ratio in ratios:
        by_stage, counts = kept_models(models, ratio)
        row, _ = _fit(by_stage["late"], BOTH, POOLED, "late", "all", 0, counts)
        out.append({"stall_ratio": ratio, "n_models": row["n_models"], "r2_cv": row["r2_cv"],
                    "tau_cv": row["tau_cv"]})
    return out
