"""The two blocks of a task's CCA: spectral features (X) and quality metrics (Y), NULL-free, z-scored
within data set, with constant and near-collinear columns dropped."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses import features as feat
from analyses.stats import standardize_within

#: The X block: spectra of weights, local and loss Hessians, and saturation (no gradient-derived features).
X_FEATURES = ("weight_stable_rank", "weight_spectral_norm", "adjacent_similarity", "saturation_fraction",
              "local_top", "local_std", "loss_top", "loss_effective_rank_ratio", "loss_relative_std",
              "loss_skewness", "loss_near_zero_fraction", "loss_negative_mass")
#: z-score every column within each data set before the CCA.
STANDARDIZE_WITHIN_DATASET = True
#: A column whose (within-data-set standardized) sd is below this is constant and dropped.
MIN_STD = 1e-8
#: A column whose R² on the block's columns kept before it exceeds this is near-collinear and dropped.
MAX_R2 = 0.98


def select_columns(block: np.ndarray, names: list[str]) -> list[int]:
    """Indices of the columns of block (n, p) kept, in order: drop a column with sd < MIN_STD, or
    whose R² on the columns kept before it (least squares with intercept) exceeds MAX_R2."""
    kept: list[int] = []
    for j in range(block.shape[1]):
        col = block[:, j]
        sd = col.std()
        if not np.isfinite(sd) or sd < MIN_STD:
            continue
        if kept:
            design = np.column_stack([np.ones(len(col)), block[:, kept]])
            coef, *_ = np.linalg.lstsq(design, col, rcond=None)
            resid = col - design @ coef
            r2 = 1 - float(resid @ resid) / float(((col - col.mean()) ** 2).sum())
            if r2 > MAX_R2:
                continue
        kept.append(j)
    return kept


def _block(sub: pl.DataFrame, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Columns ``names`` of ``sub`` without a NULL or NaN, standardized within data set, then those
    :func:`select_columns` keeps: (n, p') and their names."""
    names = [c for c in names if c in sub.columns and sub[c].null_count() == 0
             and not sub[c].cast(pl.Float64).is_nan().any()]
    if not names:
        return np.zeros((sub.height, 0)), []
    raw = sub.select([pl.col(c).cast(pl.Float64) for c in names]).to_numpy()
    if STANDARDIZE_WITHIN_DATASET:
        raw = standardize_within(raw, sub["dataset"].to_numpy(), tol=MIN_STD)
    keep = select_columns(raw, names)
    return raw[:, keep], [names[j] for j in keep]


def task_blocks(sub: pl.DataFrame, task: str) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """The task's X block (:data:`X_FEATURES`) and Y block (``features.METRICS[task]``, the primary
    metric first, so the collinearity rule keeps it) of its snapshot rows ``sub``: (x, x_names, y, y_names)."""
    x, xn = _block(sub, list(X_FEATURES))
    metrics = list(feat.METRICS.get(task, ()))
    primary = feat.PRIMARY_METRIC.get(task)
    if primary in metrics:
        metrics.remove(primary)
        metrics.insert(0, primary)
    y, yn = _block(sub, metrics)
    return x, xn, y, yn
