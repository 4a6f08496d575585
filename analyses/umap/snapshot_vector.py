"""The snapshot vector: one standardized row of weight, gradient and Hessian-spectrum features per
spectral snapshot (see the stage docstring, "Snapshot vector")."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from analyses.features import slog_sql

#: Feature groups of the snapshot vector.
SNAPSHOT_GROUPS = ("weights", "gradients", "local_hessian", "loss_hessian", "ggn")
#: A column whose standard deviation after imputation is at most this is dropped as constant.
CONSTANT_TOL = 1e-12
#: The context columns of a snapshot, in the order of ``analysis_umap``.
CONTEXT = ("run_id", "step", "snapshot_index", "progress", "dataset", "task", "architecture", "size", "activation",
           "norm", "optimizer")


def standardize_features(raw: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], float]:
    """Impute, prune and standardize a snapshot-by-feature matrix.

    ``raw`` (n, p) with NaN (or inf) for missing. Columns with no finite value are dropped, missing
    entries set to the column median, columns with ``std <= CONSTANT_TOL`` dropped, the rest z-scored
    (population std). Returns ``(Z (n, p'), kept names, share of imputed entries among the kept)``.
    """
    x = np.array(raw, dtype=float, copy=True)
    x[~np.isfinite(x)] = np.nan
    if x.size == 0:
        return np.zeros((x.shape[0], 0)), [], 0.0
    has = ~np.all(np.isnan(x), axis=0)
    x, names = x[:, has], [n for n, h in zip(names, has, strict=True) if h]
    missing = np.isnan(x)
    if x.shape[1]:
        med = np.nanmedian(x, axis=0)
        x = np.where(missing, med[None, :], x)
    std = x.std(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    keep = std > CONSTANT_TOL
    imputed = float(missing[:, keep].mean()) if keep.any() else 0.0
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]
    return z, [n for n, k in zip(names, keep, strict=True) if k], imputed


def snapshot_matrix(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, np.ndarray, list[str]]:
    """The context frame (one row per snapshot, :data:`CONTEXT` columns, ordered by run_id, step), the
    raw feature matrix (n, p) and its column names: the layer means of the :data:`SNAPSHOT_GROUPS`
    features, then the same features of the output layer (``out_<feature>``, transformed alike)."""
    cat = con.execute('SELECT feature, transform FROM analysis_features_catalog WHERE "group" IN '
                      f"({', '.join(repr(g) for g in SNAPSHOT_GROUPS)}) ORDER BY feature").fetchall()
    feats = [f for f, _ in cat]
    out_cols = ", ".join((slog_sql(f"o.{f}") if t == "slog" else f"o.{f}") + f" AS out_{f}" for f, t in cat)
    mean_cols = ", ".join(f"a.{f}" for f in feats)
    sql = f"""
        SELECT {', '.join(f'a.{c}' for c in CONTEXT)}
               {', ' + mean_cols if feats else ''} {', ' + out_cols if feats else ''}
        FROM analysis_features a
        LEFT JOIN (SELECT * FROM analysis_features_layer WHERE is_output) o USING (run_id, step)
        ORDER BY a.run_id, a.step"""
    df = con.sql(sql).pl()
    names = feats + [f"out_{f}" for f in feats]
    raw = (df.select([pl.col(c).cast(pl.Float64) for c in names]).to_numpy()
           if names and df.height else np.zeros((df.height, len(names))))
    return df.select(CONTEXT), raw, names
