"""The snapshot vector: one standardized row of weight, gradient and Hessian-spectrum features per
spectral snapshot (see the stage docstring, "Snapshot vector")."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from analyses.kit.features import slog_sql

#: Feature groups of the snapshot vector.
SNAPSHOT_GROUPS = ("weights", "gradients", "local_hessian", "loss_hessian", "ggn")
#: A column whose standard deviation after imputation is at most this is dropped as constant.
CONSTANT_TOL = 1e-12
#: The context columns of a snapshot, in the order of ``analysis_umap``.
CONTEXT = ("run_id", "step", "snapshot_index", "progress", "dataset", "task", "architecture", "preset", "widths",
           "size", "activation", "norm", "optimizer")


def _has_widths(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'runs' "
                            "AND column_name = 'widths'").fetchall()[0][0])


#: The widths of ``runs.widths`` as text: "32x16"; more than two equal widths as "16(x8)".
WIDTHS_SQL = ("CASE WHEN len(r.widths) > 2 AND len(list_distinct(r.widths)) = 1 "
              "THEN r.widths[1]::VARCHAR || '(x' || len(r.widths)::VARCHAR || ')' "
              "ELSE array_to_string(r.widths, 'x') END")


def label_sql(widths: str = WIDTHS_SQL) -> tuple[str, str]:
    """SQL of the (architecture, widths) context columns: widths "32x16" from ``runs.widths``
    (:data:`WIDTHS_SQL`), and the
    architecture label that names them, activation[-norm] and widths ("relu 32x16", "sigmoid-batchnorm
    64x64"); where the widths are unknown (no ``runs`` table), the preset label of ``analysis_features``
    (size-activation[-norm])."""
    arch = (f"CASE WHEN {widths} IS NULL THEN a.architecture ELSE a.activation || CASE WHEN a.norm = 'none' "
            f"THEN '' ELSE '-' || a.norm END || ' ' || {widths} END")
    return arch, widths


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
    features, then the same features of the output layer (``out_<feature>``, transformed alike). The
    context's ``architecture`` names the widths (:func:`label_sql`), ``preset`` is the size preset label."""
    cat = con.execute('SELECT feature, transform FROM analysis_features_catalog WHERE "group" IN '
                      f"({', '.join(repr(g) for g in SNAPSHOT_GROUPS)}) ORDER BY feature").fetchall()
    feats = [f for f, _ in cat]
    out_cols = ", ".join((slog_sql(f"o.{f}") if t == "slog" else f"o.{f}") + f" AS out_{f}" for f, t in cat)
    mean_cols = ", ".join(f"a.{f}" for f in feats)
    has_runs = _has_widths(con)
    arch, widths = label_sql() if has_runs else label_sql("NULL::VARCHAR")
    derived = {"architecture": arch, "preset": "a.architecture", "widths": widths}
    context = ", ".join(f"{derived[c]} AS {c}" if c in derived else f"a.{c}" for c in CONTEXT)
    sql = f"""
        SELECT {context}
               {', ' + mean_cols if feats else ''} {', ' + out_cols if feats else ''}
        FROM analysis_features a
        LEFT JOIN (SELECT * FROM analysis_features_layer WHERE is_output) o USING (run_id, step)
        {'LEFT JOIN runs r ON r.run_id = a.run_id' if has_runs else ''}
        ORDER BY a.run_id, a.step"""
    df = con.sql(sql).pl()
    names = feats + [f"out_{f}" for f in feats]
    raw = (df.select([pl.col(c).cast(pl.Float64) for c in names]).to_numpy()
           if names and df.height else np.zeros((df.height, len(names))))
    return df.select(CONTEXT), raw, names
