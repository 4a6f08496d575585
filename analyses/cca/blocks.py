"""The two blocks of a task's CCA: spectral features (X) and quality metrics (Y), NULL-free, z-scored
within data set, with constant and near-collinear columns dropped."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.kit import features as feat
from analyses.stats import standardize_within

#: The X block: spectra of weights, local and loss Hessians, and saturation (no gradient-derived features).
X_FEATURES = ("weight_stable_rank", "weight_spectral_norm", "adjacent_similarity", "saturation_fraction",
              "local_top", "local_std", "loss_top", "loss_effective_rank_ratio", "loss_relative_std",
              "loss_skewness", "loss_near_zero_fraction", "loss_negative_mass")
#: Metrics defined by the training loss (cross-entropy or MSE on the train or test split, their gap, and
#: the test RMSE = sqrt(test MSE)): the verdict's Y block leaves them out, since the loss Hessian and the
#: spectra relate to the loss by construction and the loss falls with training time alone.
LOSS_DEFINED_METRICS = ("train_loss", "test_loss", "gap_loss", "test_rmse")
#: The training-time column of the baseline's X block: ln(1 + step) (step 0 exists; ln 1 = 0 there).
TIME_FEATURE = "ln_step"
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


def partial_within(block: np.ndarray, groups: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each column of block (n, p) minus its least-squares fit on [1, t] within each group (n,): the
    residual e_j = x_j - a_g - b_g t, (a_g, b_g) fitted on group g's rows alone (t constant within g:
    intercept only), then standardized within group (a residual with sd < MIN_STD stays 0)."""
    out = np.asarray(block, float).copy()
    t = np.asarray(t, float)
    for g in np.unique(groups):
        m = groups == g
        tg = t[m]
        design = np.column_stack([np.ones(m.sum()), tg]) if np.ptp(tg) > 0 else np.ones((m.sum(), 1))
        coef, *_ = np.linalg.lstsq(design, out[m], rcond=None)
        out[m] = out[m] - design @ coef
    return standardize_within(out, groups, tol=MIN_STD)


def _block(sub: pl.DataFrame, names: list[str], partial_time: bool = False) -> tuple[np.ndarray, list[str]]:
    """Columns ``names`` of ``sub`` without a NULL or NaN, standardized within data set (with
    ``partial_time``, their residuals on ln(1 + step) within data set, :func:`partial_within`), then
    those :func:`select_columns` keeps: (n, p') and their names."""
    names = [c for c in names if c in sub.columns and sub[c].null_count() == 0
             and not sub[c].cast(pl.Float64).is_nan().any()]
    if not names:
        return np.zeros((sub.height, 0)), []
    raw = sub.select([pl.col(c).cast(pl.Float64) for c in names]).to_numpy()
    if STANDARDIZE_WITHIN_DATASET:
        raw = standardize_within(raw, sub["dataset"].to_numpy(), tol=MIN_STD)
    if partial_time:
        raw = partial_within(raw, sub["dataset"].to_numpy(), sub[TIME_FEATURE].to_numpy())
    keep = select_columns(raw, names)
    return raw[:, keep], [names[j] for j in keep]


def quality_metrics(task: str) -> tuple[str, ...]:
    """The task's metrics without the loss-defined ones (:data:`LOSS_DEFINED_METRICS`): for
    classification test_accuracy, gap_accuracy, test_f1, test_auc; for regression test_r2, test_mae."""
    return tuple(m for m in feat.METRICS.get(task, ()) if m not in LOSS_DEFINED_METRICS)


def with_time(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the :data:`TIME_FEATURE` column ln(1 + step)."""
    return frame.with_columns(pl.col("step").cast(pl.Float64).log1p().alias(TIME_FEATURE))


def task_blocks(sub: pl.DataFrame, task: str, features: tuple[str, ...] = X_FEATURES,
                metrics: tuple[str, ...] | None = None, partial_time: bool = False
                ) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """The task's X block (``features``, default :data:`X_FEATURES`) and Y block (``metrics``, default
    ``features.METRICS[task]``; the primary metric first, so the collinearity rule keeps it) of its
    snapshot rows ``sub``: (x, x_names, y, y_names). ``partial_time``: both blocks residualized on
    ln(1 + step) within data set (``sub`` needs the :data:`TIME_FEATURE` column, :func:`with_time`)."""
    x, xn = _block(sub, list(features), partial_time)
    metrics = list(feat.METRICS.get(task, ()) if metrics is None else metrics)
    primary = feat.PRIMARY_METRIC.get(task)
    if primary in metrics:
        metrics.remove(primary)
        metrics.insert(0, primary)
    y, yn = _block(sub, metrics, partial_time)
    return x, xn, y, yn
