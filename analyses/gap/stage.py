"""The gap stage's run: the models table, every specification's regression row and the main
specification's out-of-fold predictions, then the verdicts."""

from __future__ import annotations

import math

import duckdb
import polars as pl

from analyses.gap.fits import jiang_fits, stall_sensitivity
from analyses.gap.models import TRAINING_STAGES, write_models
from analyses.gap.predictors import MAIN, PAPER_R2, SPECIFICATIONS, column, complete, design
from analyses.gap.regression import RANDOM_FOLDS, fit_row
from analyses.gap.schema import TABLES
from analyses.gap.verdicts import verdicts
from analyses.kit.tables import write_table, write_verdicts


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _names(table: str) -> list[str]:
    return [c for c, _ in TABLES[table]]


def paired_models(by_stage: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Per stage, the models with the main specification's features and gap at every stage, by run_id."""
    main_features = SPECIFICATIONS[MAIN][1]
    ok_ids = None
    for s in TRAINING_STAGES:
        f = by_stage[s]
        ok = f.filter(pl.Series(complete(design(f, main_features), column(f, "gap"))))
        ids = set(ok["run_id"].to_list())
        ok_ids = ids if ok_ids is None else ok_ids & ids
    ok_ids = ok_ids or set()
    return {s: by_stage[s].filter(pl.col("run_id").is_in(sorted(ok_ids))).sort("run_id") for s in TRAINING_STAGES}


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_gap_models``, ``analysis_gap_regression``, ``analysis_gap_predictions``, the Jiang
    et al. fits (``analysis_gap_jiang``, ``analysis_gap_jiang_predictions``) and ``analysis_gap_verdicts``."""
    write_models(con)
    models = con.sql("SELECT * FROM analysis_gap_models ORDER BY run_id").pl()
    n_candidates = models.filter(pl.col("stage") == "late").height
    rows, predictions = [], []

    def add(spec: str, stage: str, frame: pl.DataFrame, fit_stage: str, target: str, sample: str,
            fit_frame: pl.DataFrame | None = None, random_folds: bool = False) -> dict:
        """Fit ``spec`` on ``frame`` (or, a transfer, on ``fit_frame`` predicting ``frame``) and record its row;
        the seed of its folds and resamples is the row's number."""
        family, features, description = SPECIFICATIONS[spec]
        X, y = design(frame, features), column(frame, target)
        groups = frame["dataset"].to_numpy()
        if fit_frame is not None:
            Xf, yf = design(fit_frame, features), column(fit_frame, "gap")
            keep = complete(X, y) & complete(Xf, yf)
            cols, oof = fit_row(Xf[keep], yf[keep], groups[keep], X[keep], y[keep], seed=len(rows),
                                random_folds=random_folds)
        else:
            keep = complete(X, y)
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

    by_stage = {s: models.filter(pl.col("stage") == s).sort("run_id") for s in TRAINING_STAGES}
    main_row = None
    for spec in SPECIFICATIONS:
        row = add(spec, "late", by_stage["late"], "late", "gap", "all")
        main_row = row if spec == MAIN else main_row
    add(MAIN, "late", by_stage["late"], "late", "gap", "all", random_folds=True)

    # the paired comparisons: models with the main features at every stage
    paired = paired_models(by_stage)
    for random_folds in (False, True):
        for s in TRAINING_STAGES:
            add(MAIN, s, paired[s], s, "gap", "all_stages", random_folds=random_folds)
        for s in ("early", "middle"):
            add(MAIN, s, paired[s], s, "final_gap", "all_stages", random_folds=random_folds)
            add(MAIN, s, paired[s], "late", "gap", "all_stages", fit_frame=paired["late"], random_folds=random_folds)

    write_table(con, "analysis_gap_regression",
                pl.from_dicts(rows, schema=_names("analysis_gap_regression"), infer_schema_length=None))
    preds = (pl.concat(predictions) if predictions
             else pl.DataFrame(schema={c: pl.Float64 for c in _names("analysis_gap_predictions")}))
    write_table(con, "analysis_gap_predictions", preds.with_columns(pl.col(pl.Float64).fill_nan(None)))
    table, jiang_preds = jiang_fits(models)
    write_table(con, "analysis_gap_jiang", table.select(_names("analysis_gap_jiang")) if table.height else
                pl.DataFrame(schema={c: pl.Float64 for c in _names("analysis_gap_jiang")}))
    write_table(con, "analysis_gap_jiang_predictions", jiang_preds.with_columns(pl.col(pl.Float64).fill_nan(None)))
    grouped = preds.filter((pl.col("stage") == "late") & (pl.col("fit_stage") == "late") & (pl.col("target") == "gap")
                           & (pl.col("sample") == "all")) if preds.height else preds
    write_verdicts(con, "gap", verdicts(models, main_row, grouped, stall_sensitivity(models)))
