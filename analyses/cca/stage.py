"""The CCA stage's run: ``analysis_features`` in, the four CCA tables and the verdicts out."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from analyses.cca.task_analysis import TaskAnalysis, analyse_task
from analyses.cca.verdicts import task_verdict
from analyses.stats import write_verdicts
from analyses.tables import write_table

#: Components whose loadings are stored.
N_LOADING_COMPONENTS = 2

#: Polars types of each table's rows (write_table casts them to the declared DuckDB types).
_ROW_TYPES = {
    "analysis_cca": {"task": pl.Utf8, "component": pl.Int32, "canonical_correlation": pl.Float64,
                     "wilks_lambda": pl.Float64, "f_stat": pl.Float64, "df_num": pl.Float64, "df_den": pl.Float64,
                     "p_value": pl.Float64, "n": pl.Int64, "n_runs": pl.Int64, "n_datasets": pl.Int64},
    "analysis_cca_loadings": {"task": pl.Utf8, "block": pl.Utf8, "variable": pl.Utf8, "component": pl.Int32,
                              "loading": pl.Float64},
    "analysis_cca_heldout": {"task": pl.Utf8, "fold": pl.Int32, "grouped_by": pl.Utf8, "test_groups": pl.Utf8,
                             "n_train": pl.Int64, "n_test": pl.Int64, "heldout_correlation": pl.Float64},
    "analysis_cca_scores": {"task": pl.Utf8, "run_id": pl.Utf8, "step": pl.Int64, "dataset": pl.Utf8,
                            "architecture": pl.Utf8, "fold": pl.Int32, "u1": pl.Float64, "v1": pl.Float64,
                            "heldout_u1": pl.Float64, "heldout_v1": pl.Float64},
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


def _heldout_rows(res: TaskAnalysis) -> list[dict]:
    """Per fold: the groups it held out and its held-out first canonical correlation."""
    return [{"task": res.task, "fold": f.fold, "grouped_by": res.grouped_by,
             "test_groups": ", ".join(sorted(map(str, np.unique(res.groups[f.test_index])))),
             "n_train": f.n_train, "n_test": f.n_test, "heldout_correlation": f.heldout_correlation}
            for f in res.folds]


def _score_rows(res: TaskAnalysis, sub: pl.DataFrame) -> list[dict]:
    """Per snapshot of ``sub``: the in-sample first variates and the held-out ones of its fold."""
    held_u, held_v = np.full(sub.height, np.nan), np.full(sub.height, np.nan)
    fold_of = np.full(sub.height, -1)
    for f in res.folds:
        held_u[f.test_index], held_v[f.test_index], fold_of[f.test_index] = f.u, f.v, f.fold
    fit = res.fit
    return [{"task": res.task, "run_id": run_id, "step": step, "dataset": dataset, "architecture": architecture,
             "fold": int(fold_of[i]) if fold_of[i] >= 0 else None,
             "u1": float(fit.x_scores[i, 0]), "v1": float(fit.y_scores[i, 0]),
             "heldout_u1": float(held_u[i]), "heldout_v1": float(held_v[i])}
            for i, (run_id, step, dataset, architecture)
            in enumerate(sub.select("run_id", "step", "dataset", "architecture").iter_rows())]


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the CCA tables and verdicts."""
    snaps = con.sql("SELECT * FROM analysis_features ORDER BY run_id, step").pl()
    rows: dict[str, list[dict]] = {name: [] for name in _ROW_TYPES}
    verdicts = []
    for task in sorted(snaps["task"].unique().to_list()):
        sub = snaps.filter(pl.col("task") == task)
        res = analyse_task(task, sub)
        rows["analysis_cca"] += _cca_rows(res)
        if res.fit is not None:
            rows["analysis_cca_loadings"] += _loading_rows(res)
            rows["analysis_cca_heldout"] += _heldout_rows(res)
            rows["analysis_cca_scores"] += _score_rows(res, sub)
        verdicts.append(task_verdict(res))
    for name, table_rows in rows.items():
        frame = pl.DataFrame(table_rows, schema=_ROW_TYPES[name]).with_columns(pl.col(pl.Float64).fill_nan(None))
        write_table(con, name, frame)
    write_verdicts(con, "cca", verdicts)
