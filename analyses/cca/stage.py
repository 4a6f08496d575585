"""The CCA stage's run: ``analysis_features`` in, the CCA tables and the verdicts out."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from analyses.cca.blocks import TIME_FEATURE, X_FEATURES, quality_metrics, with_time
from analyses.cca.heldout import fisher_mean_ci
from analyses.cca.task_analysis import TaskAnalysis, analyse_task
from analyses.cca.verdicts import heldout_claim, heldout_r, pooled_r, task_verdicts
from analyses.kit.tables import write_table, write_verdicts
from analyses.stats import ClaimData, Jackknifed

#: Components whose loadings are stored.
N_LOADING_COMPONENTS = 2
#: The designs compared in ``analysis_cca_designs``: (name, snapshots, metrics, ln step partialled out of
#: both blocks); the last is the verdict's (its CCA fills the descriptive tables).
DESIGNS = (("all snapshots, all metrics", "all", "all", False),
           ("all snapshots, quality metrics", "all", "quality", False),
           ("all snapshots, quality metrics, ln step partialled out", "all", "quality", True),
           ("last snapshot, quality metrics", "last", "quality", False))
VERDICT_DESIGN = DESIGNS[-1][0]
#: The verdict's rows, in words.
VERDICT_ROWS = "each run's last snapshot (one row per run)"

#: Polars types of each table's rows (write_table casts them to the declared DuckDB types).
_ROW_TYPES = {
    "analysis_cca": {"task": pl.Utf8, "component": pl.Int32, "canonical_correlation": pl.Float64,
                     "wilks_lambda": pl.Float64, "f_stat": pl.Float64, "df_num": pl.Float64, "df_den": pl.Float64,
                     "p_value": pl.Float64, "n": pl.Int64, "n_runs": pl.Int64, "n_datasets": pl.Int64},
    "analysis_cca_loadings": {"task": pl.Utf8, "block": pl.Utf8, "variable": pl.Utf8, "component": pl.Int32,
                              "loading": pl.Float64},
    "analysis_cca_heldout": {"task": pl.Utf8, "x_block": pl.Utf8, "fold": pl.Int32, "grouped_by": pl.Utf8,
                             "test_groups": pl.Utf8, "n_train": pl.Int64, "n_test": pl.Int64,
                             "heldout_correlation": pl.Float64},
    "analysis_cca_scores": {"task": pl.Utf8, "run_id": pl.Utf8, "step": pl.Int64, "dataset": pl.Utf8,
                            "architecture": pl.Utf8, "fold": pl.Int32, "u1": pl.Float64, "v1": pl.Float64,
                            "heldout_u1": pl.Float64, "heldout_v1": pl.Float64, "time_u1": pl.Float64,
                            "time_v1": pl.Float64},
    "analysis_cca_designs": {
        "task": pl.Utf8, "design": pl.Utf8, "snapshots": pl.Utf8, "metrics": pl.Utf8, "time_partialled": pl.Boolean,
        "y_block": pl.Utf8,
        "grouped_by": pl.Utf8, "n": pl.Int64, "n_runs": pl.Int64, "n_datasets": pl.Int64,
        "interval_level": pl.Utf8, "spectral_r": pl.Float64, "spectral_low": pl.Float64,
        "spectral_high": pl.Float64, "spectral_fold_mean": pl.Float64, "time_r": pl.Float64,
        "time_low": pl.Float64, "time_high": pl.Float64, "difference": pl.Float64, "difference_low": pl.Float64,
        "difference_high": pl.Float64, "is_verdict": pl.Boolean},
}


def _cca_rows(res: TaskAnalysis) -> list[dict]:
    """One row per component, or one row without a component when the task was not fitted."""
    base = {"task": res.task, "n": res.n, "n_runs": res.n_runs, "n_datasets": res.n_datasets}
    fit = res.fit
    if fit is None:
        return [{**base, "component": None}]
    return [{**base, "component": c + 1, "canonical_correlation": fit.cancorr[c], "wilks_lambda": fit.wilks[c],
             "f_stat": fit.f_stat[c], "df_num": fit.df_num[c], "df_den": fit.df_den[c], "p_value": fit.p_value[c]}
            for c in range(len(fit.cancorr))]


def _loading_rows(res: TaskAnalysis) -> list[dict]:
    """Per X and Y variable: its structure correlation with each of the first components."""
    rows = []
    for block, names, loads in (("X", res.x_names, res.fit.x_loadings), ("Y", res.y_names, res.fit.y_loadings)):
        for j, name in enumerate(names):
            for c in range(min(N_LOADING_COMPONENTS, loads.shape[1])):
                rows.append({"task": res.task, "block": block, "variable": name, "component": c + 1,
                             "loading": float(loads[j, c])})
    return rows


def _heldout_rows(res: TaskAnalysis, x_block: str) -> list[dict]:
    """Per fold: the groups it held out and its held-out first canonical correlation."""
    return [{"task": res.task, "x_block": x_block, "fold": f.fold, "grouped_by": res.grouped_by,
             "test_groups": ", ".join(sorted(map(str, np.unique(res.groups[f.test_index])))),
             "n_train": f.n_train, "n_test": f.n_test, "heldout_correlation": f.heldout_correlation}
            for f in res.folds]


def _score_rows(res: TaskAnalysis, base: TaskAnalysis, sub: pl.DataFrame) -> list[dict]:
    """Per row of ``sub``: the in-sample first variates, the held-out ones of its fold, and the held-out
    ones of the ln-step baseline (``base``)."""
    held_u, held_v = res.heldout_variates()
    time_u, time_v = base.heldout_variates() if base.fit is not None else (np.full(sub.height, np.nan),) * 2
    fold_of = np.full(sub.height, -1)
    for f in res.folds:
        fold_of[f.test_index] = f.fold
    fit = res.fit
    return [{"task": res.task, "run_id": run_id, "step": step, "dataset": dataset, "architecture": architecture,
             "fold": int(fold_of[i]) if fold_of[i] >= 0 else None,
             "u1": float(fit.x_scores[i, 0]), "v1": float(fit.y_scores[i, 0]),
             "heldout_u1": float(held_u[i]), "heldout_v1": float(held_v[i]),
             "time_u1": float(time_u[i]), "time_v1": float(time_v[i])}
            for i, (run_id, step, dataset, architecture)
            in enumerate(sub.select("run_id", "step", "dataset", "architecture").iter_rows())]


def design_frames(snaps: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The snapshot rows of each :data:`DESIGNS` snapshots choice: "all", and "last" (each run's last
    snapshot, one row per run)."""
    return {"all": snaps, "last": snaps.filter(pl.col("step") == pl.col("step").max().over("run_id"))}


def fit_design(task: str, sub: pl.DataFrame, metrics: str, partial_time: bool = False
               ) -> tuple[TaskAnalysis, TaskAnalysis | None]:
    """The spectral CCA and the ln-step baseline CCA (same rows, Y and folds) of one design; with
    ``partial_time`` (both blocks residualized on ln step within data set) there is no baseline (None):
    ln step is then constant at 0 and training time is controlled by the design (linearly)."""
    y = None if metrics == "all" else quality_metrics(task)
    res = analyse_task(task, sub, metrics=y, partial_time=partial_time)
    return res, None if partial_time else analyse_task(task, sub, features=(TIME_FEATURE,), metrics=y)


def _design_row(task: str, name: str, snapshots: str, metrics: str, partial_time: bool, sub: pl.DataFrame,
                res: TaskAnalysis, base: TaskAnalysis | None) -> dict:
    """One ``analysis_cca_designs`` row: both held-out correlations and their difference (the spectral
    one alone when ``base`` is None), each per held-out data set pooled by random effects
    (:func:`analyses.stats.assess`; ``interval_level`` names the method)."""
    nan = np.full(sub.height, np.nan)
    u, v = res.heldout_variates() if res.fit is not None else (nan, nan)
    spectral = pooled_r(heldout_claim(sub, (u, v)))
    time = difference = (None, None, None, "")
    if base is not None:
        ut, vt = base.heldout_variates() if base.fit is not None else (nan, nan)
        time = pooled_r(heldout_claim(sub, (ut, vt)))
        diff = ClaimData(sub.select("run_id", "dataset"), Jackknifed(
            lambda i: heldout_r(u, v, i) - heldout_r(ut, vt, i)))
        difference = pooled_r(diff)
    fold_mean = fisher_mean_ci(np.array([f.heldout_correlation for f in res.folds], float)).value
    return {"task": task, "design": name, "snapshots": snapshots, "metrics": metrics, "time_partialled": partial_time,
            "y_block": ", ".join(res.y_names), "grouped_by": res.grouped_by, "n": sub.height,
            "n_runs": sub["run_id"].n_unique(), "n_datasets": sub["dataset"].n_unique(),
            "interval_level": spectral[3], "spectral_r": spectral[0], "spectral_low": spectral[1],
            "spectral_high": spectral[2], "spectral_fold_mean": fold_mean, "time_r": time[0],
            "time_low": time[1], "time_high": time[2], "difference": difference[0],
            "difference_low": difference[1], "difference_high": difference[2],
            "is_verdict": name == VERDICT_DESIGN}


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the CCA tables and verdicts."""
    snaps = with_time(con.sql("SELECT * FROM analysis_features ORDER BY run_id, step").pl())
    frames = design_frames(snaps)
    rows: dict[str, list[dict]] = {name: [] for name in _ROW_TYPES}
    verdicts = []
    for task in sorted(snaps["task"].unique().to_list()):
        for name, snapshots, metrics, partial_time in DESIGNS:
            sub = frames[snapshots].filter(pl.col("task") == task)
            res, base = fit_design(task, sub, metrics, partial_time)
            rows["analysis_cca_designs"].append(_design_row(task, name, snapshots, metrics, partial_time, sub, res,
                                                            base))
        # the loop ends on the verdict's design: its CCA fills the descriptive tables
        rows["analysis_cca"] += _cca_rows(res)
        if res.fit is not None:
            rows["analysis_cca_loadings"] += _loading_rows(res)
            rows["analysis_cca_heldout"] += _heldout_rows(res, "spectral")
            rows["analysis_cca_heldout"] += _heldout_rows(base, TIME_FEATURE)
            rows["analysis_cca_scores"] += _score_rows(res, base, sub)
        y = None if metrics == "all" else quality_metrics(task)
        full = analyse_task(task, sub, features=(*X_FEATURES, TIME_FEATURE), metrics=y)
        verdicts += task_verdicts(res, full, base, sub, VERDICT_ROWS)
    for name, table_rows in rows.items():
        frame = pl.DataFrame(table_rows, schema=_ROW_TYPES[name]).with_columns(pl.col(pl.Float64).fill_nan(None))
        write_table(con, name, frame)
    write_verdicts(con, "cca", verdicts)
