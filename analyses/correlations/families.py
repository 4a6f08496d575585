"""A family of within-data-set correlations: every feature x metric pair of one task and phase, with
Benjamini-Hochberg adjusted p-values over the family."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.kit import features as feat
from analyses.stats import bh_adjust, within_group_pearson

#: Family-wise level for ``significant`` (after Benjamini-Hochberg).
ALPHA = 0.05
#: z-score feature and metric within each data set before correlating (see the stage doc).
CONTROL_FOR_DATASET = True
#: Feature group of each feature name (weights, gradients, ...).
FEATURE_GROUP = {f.name: f.group for f in feat.FEATURES}


def float_column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` of ``frame`` as float64 (n,), NULL as NaN."""
    return frame[name].cast(pl.Float64).fill_null(math.nan).to_numpy()


def correlation_family(frame: pl.DataFrame, feature_names: list[str], metrics: list[str],
                       group_col: str | None) -> list[dict]:
    """Every feature x metric within-group correlation of ``frame`` (snapshot rows with ``run_id``): one
    dict per pair with n, n_runs, r and its Fisher-z interval, p_value, and p_adjusted (Benjamini-Hochberg
    over the pairs) with ``significant`` = p_adjusted < :data:`ALPHA`. ``group_col`` None: one group."""
    groups = frame[group_col].to_numpy() if group_col else np.zeros(frame.height, int)
    runs = frame["run_id"].to_numpy()
    rows = []
    for f in feature_names:
        x = float_column(frame, f)
        for m in metrics:
            y = float_column(frame, m)
            est = within_group_pearson(x, y, groups)
            ok = np.isfinite(x) & np.isfinite(y)
            rows.append({"feature": f, "feature_group": FEATURE_GROUP.get(f, ""), "metric": m, "n": est.n,
                         "n_runs": int(len(np.unique(runs[ok]))), "r": est.value, "ci_low": est.low,
                         "ci_high": est.high, "p_value": est.p})
    p_adj = bh_adjust(np.array([row["p_value"] for row in rows], float), alpha=ALPHA)
    for row, pa in zip(rows, p_adj, strict=True):
        row["p_adjusted"] = float(pa)
        row["significant"] = bool(np.isfinite(pa) and pa < ALPHA)
    return rows
