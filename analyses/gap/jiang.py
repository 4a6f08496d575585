"""The gap study as Jiang et al. (2019) fitted it: log quartiles of the normalized margin distribution,
per data set and pooled with data-set indicators, repeated random folds, R^2 and Kendall's tau.

For n models with gap y (n,):

- **exclusions** (:func:`excluded`): a model is *stalled* when its final training loss is above
  :data:`STALL_LOSS_RATIO` times its step-0 training loss (it never left the initial plateau: the deep
  sigmoid networks of the default corpus, whose normalized margins of 400-2,600 against 0.3-1 elsewhere
  dominated the old fit's squared error); a model trained with label noise is left out because its
  train accuracy is scored on the noisy labels and no clean-label train accuracy is stored, so its
  "gap" is not the clean-label gap;
- **features** (:func:`log_quartiles`): ln Q1, ln median, ln Q3 of the normalized margins over
  correctly classified training points at input, h0 and output (9 columns; a margin over correct points
  is positive, so the log is a true log). The two fences are left out: in raw space they are exact
  linear combinations of the quartiles (Q1 - 1.5 IQR, Q3 + 1.5 IQR), hence the VIFs of 400-13,000 of
  the old fit; they add no information a linear model can use;
- **indicators** (:func:`indicators`): one-hot data-set columns without the first (the data-set-mean
  model: alone, it predicts each model by the mean gap of its data set's training-fold models);
- **cross-validation** (:func:`repeated_oof`): :data:`N_REPEATS` repeats of :data:`N_FOLDS` random folds
  of models (Jiang et al.'s setting: a model's data set is in the fit), OLS with an intercept
  (numpy ``lstsq``, minimum-norm where collinear). The per-model prediction is the mean of its
  out-of-fold predictions over the repeats (each one out of fold); the spread of the per-repeat R^2_cv
  and tau is reported (the old single 10-fold split's R^2_cv swung from -4.5 to -20 with its seed);
- :func:`r2_score` = 1 - sum (y - p)^2 / sum (y - mean y)^2 and :func:`tau_score` = Kendall's tau-b
  (scipy) of predictions and gaps, both pure functions of rows, so a verdict resamples them;
  :func:`tau_within`: tau within each data set, pair-weighted: the ranking beyond data-set identity.
  (Not the tau of the out-of-fold data-set-mean model: a model's out-of-fold mean excludes its own gap,
  so averaged over repeats it ranks a data set's models exactly backwards, tau near -1, an artifact;
  the in-sample data-set mean (:func:`group_means`) ties every pair within a data set instead.)
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats

from analyses.gap.predictors import MARGIN_REPRESENTATIONS, column, margin_column

#: A model whose final training loss exceeds this share of its step-0 loss is stalled (left out).
STALL_LOSS_RATIO = 0.5
#: The other stall ratios the pooled fit is repeated at, so the rule can be seen not to decide the call.
ALT_STALL_LOSS_RATIOS = (0.25, 0.9)
#: Repeats and folds of the random cross-validation.
N_REPEATS, N_FOLDS = 10, 10
#: Fewest models for a per-data-set fit (below it the data set enters only the pooled fit).
MIN_MODELS = 30
#: The quartile columns, in design order.
QUARTILES = tuple(margin_column(r, s) for r in MARGIN_REPRESENTATIONS for s in ("q1", "median", "q3"))


def excluded(frame: pl.DataFrame, stall_ratio: float = STALL_LOSS_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(stalled (n,), noisy (n,)) booleans for the models of ``frame`` (columns ``train_loss``,
    ``initial_train_loss``, ``label_noise``; see module doc): stalled when final > stall_ratio x initial."""
    final, start = column(frame, "train_loss"), column(frame, "initial_train_loss")
    with np.errstate(invalid="ignore"):
        stalled = ~(final <= stall_ratio * start)  # NaN losses count as stalled
    noisy = ~(column(frame, "label_noise") == 0)
    return stalled, noisy


def log_quartiles(frame: pl.DataFrame) -> np.ndarray:
    """ln of the quartile columns (n, 9); NaN where a quartile is missing or not positive."""
    X = np.column_stack([column(frame, c) for c in QUARTILES])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(X > 0, np.log(np.where(X > 0, X, 1.0)), np.nan)


def indicators(datasets: np.ndarray) -> np.ndarray:
    """One-hot data-set columns (n, K-1), the first data set (sorted) the reference."""
    levels = sorted(set(datasets.tolist()))
    return np.column_stack([(datasets == d).astype(float) for d in levels[1:]]) if len(levels) > 1 \
        else np.empty((len(datasets), 0))


def ols_predict(X_fit: np.ndarray, y_fit: np.ndarray, X_new: np.ndarray) -> np.ndarray:
    """Predictions (m,) at X_new (m, k) of the OLS fit with an intercept of y_fit (n,) on X_fit (n, k)."""
    A = np.column_stack([np.ones(len(X_fit)), X_fit])
    beta = np.linalg.lstsq(A, y_fit, rcond=None)[0]
    return np.column_stack([np.ones(len(X_new)), X_new]) @ beta


def r2_in_sample(X: np.ndarray, y: np.ndarray) -> float:
    """In-sample R^2 of the OLS fit of y (n,) on X (n, k) with an intercept."""
    return r2_score(y, ols_predict(X, y, X))


def r2_score(y: np.ndarray, p: np.ndarray) -> float:
    """1 - sum (y - p)^2 / sum (y - mean y)^2 over rows where both are finite; NaN if y is constant."""
    ok = np.isfinite(y) & np.isfinite(p)
    if ok.sum() < 2:
        return math.nan
    ss = float(((y[ok] - y[ok].mean()) ** 2).sum())
    return 1.0 - float(((y[ok] - p[ok]) ** 2).sum()) / ss if ss > 0 else math.nan


def tau_score(y: np.ndarray, p: np.ndarray) -> float:
    """Kendall's tau-b of p and y over rows where both are finite; NaN under 3 rows or a constant side."""
    ok = np.isfinite(y) & np.isfinite(p)
    if ok.sum() < 3 or np.ptp(y[ok]) == 0 or np.ptp(p[ok]) == 0:
        return math.nan
    return float(stats.kendalltau(p[ok], y[ok]).statistic)


def tau_within(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """Kendall's tau-b of p and y within each group (data set), averaged with weights n_g (n_g - 1) / 2
    (the pairs each group contributes): ranking beyond data-set identity, since no pair across data sets
    counts. Groups whose tau is undefined are skipped; NaN if none is defined."""
    total, weight = 0.0, 0.0
    for g in np.unique(groups):
        m = groups == g
        t = tau_score(y[m], p[m])
        if math.isfinite(t):
            w = m.sum() * (m.sum() - 1) / 2
            total, weight = total + w * t, weight + w
    return total / weight if weight > 0 else math.nan


def group_means(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's group mean of y (n,): the data-set-mean prediction in sample (ties within a group)."""
    out = np.empty(len(y))
    for g in np.unique(groups):
        m = groups == g
        out[m] = y[m].mean()
    return out


def max_vif(X: np.ndarray) -> float:
    """Largest variance inflation factor 1 / (1 - R^2_j) of the columns of X (n, k) (R^2_j: column j on
    the others with an intercept); NaN under two columns, inf for an exact linear dependence."""
    if X.shape[1] < 2:
        return math.nan
    out = []
    for j in range(X.shape[1]):
        r2 = r2_in_sample(np.delete(X, j, axis=1), X[:, j])
        out.append(math.inf if not r2 < 1 - 1e-12 else 1.0 / (1.0 - r2))
    return float(max(out))


def repeated_oof(X_fit: np.ndarray, y_fit: np.ndarray, X_eval: np.ndarray | None = None,
                 y_eval: np.ndarray | None = None, n_repeats: int = N_REPEATS, folds: int = N_FOLDS,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Repeated random-fold out-of-fold predictions of the n models.

    Each repeat splits the models into ``folds`` random folds; a model's prediction is the OLS fit on
    (X_fit, y_fit) of the other folds evaluated at its own row of X_eval (default X_fit: the same
    stage; another stage's features for a transfer). Returns (mean prediction over repeats (n,),
    R^2_cv per repeat (R,), tau per repeat (R,)), both scored against y_eval (default y_fit). A fold
    whose fitting part has fewer than k + 2 rows predicts NaN."""
    X_eval = X_fit if X_eval is None else X_eval
    y_eval = y_fit if y_eval is None else y_eval
    n, k = X_fit.shape
    rng = np.random.default_rng(seed)
    preds = np.full((n_repeats, n), np.nan)
    for r in range(n_repeats):
        fold = rng.permutation(n) % folds
        for f in range(folds):
            test, train = fold == f, fold != f
            if train.sum() >= k + 2 and test.any():
                preds[r, test] = ols_predict(X_fit[train], y_fit[train], X_eval[test])
    r2s = np.array([r2_score(y_eval, p) for p in preds])
    taus = np.array([tau_score(y_eval, p) for p in preds])
    finite = np.isfinite(preds)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(finite, preds, 0.0).sum(axis=0) / count, np.nan)
    return mean, r2s, taus
