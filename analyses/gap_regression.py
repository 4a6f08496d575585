"""Linear prediction of the generalization gap from per-model features (Jiang et al. 2019).

For n models with features X (n, k) and gap y (n,):

- ``ols_fit``: y = b0 + X b + e by ordinary least squares (statsmodels ``OLS``, pseudo-inverse, so
  collinear columns are tolerated); R^2 = 1 - SS_res / SS_tot and adjusted
  R^2 = 1 - (1 - R^2)(n - 1)/(n - k - 1).
- ``grouped_cv_predictions``: out-of-fold predictions with folds grouped by data set
  (scikit-learn ``GroupKFold``), so a model is always predicted by a fit that saw no model of its
  data set; ``cv_r2`` = 1 - sum (y - y_oof)^2 / sum (y - mean y)^2 (can be negative: worse than
  predicting the mean of every held-out gap).
- ``transfer_predictions``: the same folds, but each fold's fit uses models described at one
  training stage and predicts the held-out data sets' models at another.
- Kendall's tau-b over model pairs (scipy ``kendalltau``) between a prediction and the gap: the
  share of concordant minus discordant pairs, the rank agreement Jiang et al. 2020 use.
"""

from __future__ import annotations

import math

import numpy as np
import statsmodels.api as sm
from scipy import stats
from sklearn.model_selection import GroupKFold

#: Folds of the grouped cross-validation (fewer when there are fewer data sets).
N_FOLDS = 5


def _design(X: np.ndarray) -> np.ndarray:
    return sm.add_constant(np.asarray(X, float), has_constant="add")


def ols_fit(X: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(R^2, adjusted R^2, fitted values (n,)) of the OLS fit of y (n,) on X (n, k) with an intercept."""
    res = sm.OLS(np.asarray(y, float), _design(X)).fit()
    return float(res.rsquared), float(res.rsquared_adj), np.asarray(res.fittedvalues, float)


def _ols_predict(X_fit: np.ndarray, y_fit: np.ndarray, X_new: np.ndarray) -> np.ndarray:
    res = sm.OLS(y_fit, _design(X_fit)).fit()
    return np.asarray(res.predict(_design(X_new)), float)


def n_folds(groups: np.ndarray, wanted: int = N_FOLDS) -> int:
    """Folds used: at most ``wanted`` and at most the number of distinct groups (0 below two)."""
    k = len(np.unique(groups))
    return min(wanted, k) if k >= 2 else 0


def transfer_predictions(X_fit: np.ndarray, y_fit: np.ndarray, X_new: np.ndarray, groups: np.ndarray,
                         folds: int = N_FOLDS) -> np.ndarray:
    """Out-of-fold predictions for rows of X_new (n, k): for each fold of data sets (``groups`` (n,)),
    fit on (X_fit, y_fit) rows of the other data sets and predict X_new rows of the held-out ones.

    X_fit and X_new describe the same n models (e.g. at the end and in the middle of training).
    NaN where a fold cannot be fitted (fewer fitting rows than k + 2) or with fewer than two groups."""
    X_fit, X_new, y_fit = np.asarray(X_fit, float), np.asarray(X_new, float), np.asarray(y_fit, float)
    out = np.full(len(y_fit), np.nan)
    k = n_folds(groups, folds)
    if k == 0:
        return out
    for train, test in GroupKFold(n_splits=k).split(X_fit, y_fit, groups):
        if len(train) < X_fit.shape[1] + 2:
            continue
        out[test] = _ols_predict(X_fit[train], y_fit[train], X_new[test])
    return out


def grouped_cv_predictions(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = N_FOLDS) -> np.ndarray:
    """Out-of-fold OLS predictions (n,) with folds grouped by ``groups`` (see transfer_predictions)."""
    return transfer_predictions(X, y, X, groups, folds)


def cv_r2(y: np.ndarray, predicted: np.ndarray) -> float:
    """1 - sum (y - p)^2 / sum (y - mean y)^2 over rows where p is finite; NaN if y is constant there."""
    y, p = np.asarray(y, float), np.asarray(predicted, float)
    ok = np.isfinite(p) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    ss_tot = float(((y[ok] - y[ok].mean()) ** 2).sum())
    if ss_tot == 0:
        return math.nan
    return 1.0 - float(((y[ok] - p[ok]) ** 2).sum()) / ss_tot


def kendall_tau(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Kendall's tau-b and its two-sided p over the rows where both are finite (NaN if < 3 or constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan, math.nan
    res = stats.kendalltau(a[ok], b[ok])
    return float(res.statistic), float(res.pvalue)


def stratified_resamples(groups: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) row indices: each resample draws, within every group, as many rows as the group has,
    with replacement, so every resample keeps the data sets and their sizes (and the CV folds)."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    out = np.empty((n_boot, len(groups)), dtype=np.int64)
    pos = 0
    for idx in members:
        out[:, pos:pos + len(idx)] = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        pos += len(idx)
    return out
