"""Linear prediction of the generalization gap from per-model features (Jiang et al. 2019).

For n models with features X (n, k) and gap y (n,):

- :func:`ols_fit`: y = b0 + X b + e by ordinary least squares (statsmodels ``OLS``, pseudo-inverse,
  so collinear columns are tolerated); R^2 = 1 - SS_res / SS_tot and adjusted
  R^2 = 1 - (1 - R^2)(n - 1)/(n - k - 1).
- :func:`grouped_cv_predictions`: out-of-fold predictions with folds grouped by data set
  (scikit-learn ``GroupKFold``), so a model is always predicted by a fit that saw no model of its
  data set; :func:`cv_r2` = 1 - sum (y - y_oof)^2 / sum (y - mean y)^2 (can be negative: worse than
  predicting the mean of every held-out gap).
- :func:`transfer_predictions`: the same folds, but each fold's fit uses models described at one
  training stage and predicts the held-out data sets' models at another.
- :func:`kendall_tau`: Kendall's tau-b over model pairs (scipy ``kendalltau``) between a prediction
  and the gap: the share of concordant minus discordant pairs, the rank agreement Jiang et al. 2020 use.
- the interval of the cross-validated R^2: :func:`analyses.stats.stratified_bootstrap`, resampling
  models within data sets.
- :func:`fit_row`: all of these for one predictor set: the columns of ``analysis_gap_regression``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import statsmodels.api as sm
from scipy import stats
from sklearn.model_selection import GroupKFold

from analyses.stats import Estimate, stratified_bootstrap

#: Folds of the grouped cross-validation (fewer when there are fewer data sets).
N_FOLDS = 5
#: Folds of the random (not grouped) cross-validation row, Jiang et al.'s 90/10 split.
RANDOM_FOLDS = 10
#: Bootstrap resamples of the cross-validated R^2.
N_BOOT = 400


class OLSFit(NamedTuple):
    """In-sample result of an OLS fit."""

    r2: float
    r2_adj: float
    fitted: np.ndarray


def _design(X: np.ndarray) -> np.ndarray:
    return sm.add_constant(np.asarray(X, float), has_constant="add")


def ols_fit(X: np.ndarray, y: np.ndarray) -> OLSFit:
    """R^2, adjusted R^2 and fitted values (n,) of the OLS fit of y (n,) on X (n, k) with an intercept."""
    res = sm.OLS(np.asarray(y, float), _design(X)).fit()
    return OLSFit(float(res.rsquared), float(res.rsquared_adj), np.asarray(res.fittedvalues, float))


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


def kendall_tau(a: np.ndarray, b: np.ndarray, unit: str = "models") -> Estimate:
    """Kendall's tau-b and its two-sided p over the rows where both are finite (n of them), with no
    interval; NaN if n < 3 or either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return Estimate.missing(n, unit)
    res = stats.kendalltau(a[ok], b[ok])
    return Estimate.missing(n, unit, float(res.statistic), p=float(res.pvalue))


def fit_row(X_fit: np.ndarray, y_fit: np.ndarray, groups: np.ndarray, X_eval: np.ndarray | None = None,
            y_eval: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0,
            random_folds: bool = False) -> tuple[dict, np.ndarray]:
    """The regression columns for models with features X_fit (n, k) and gaps y_fit (n,) in data sets
    ``groups``; with X_eval/y_eval (the same models at another stage) the CV predicts those instead
    (a transfer). ``random_folds``: :data:`RANDOM_FOLDS` random folds of models instead of folds of data
    sets (Jiang et al.'s setting, where every model shares one data set). Returns (columns, out-of-fold
    predictions (n,))."""
    X_eval = X_fit if X_eval is None else X_eval
    y_eval = y_fit if y_eval is None else y_eval
    n, k = X_fit.shape
    cv_groups = (np.random.default_rng(seed).permutation(n) % RANDOM_FOLDS) if random_folds else groups
    n_cv = RANDOM_FOLDS if random_folds else N_FOLDS
    folds = n_folds(cv_groups, n_cv)
    out = {"n_models": n, "n_datasets": len(np.unique(groups)), "k": k, "cv_folds": folds, "r2": None,
           "r2_adj": None, "r2_cv": None, "r2_cv_low": None, "r2_cv_high": None, "kendall_tau": None,
           "kendall_tau_feature": None, "kendall_tau_cv": None, "kendall_p_cv": None, "note": None}
    oof = np.full(n, np.nan)
    if n < k + 3:
        out["note"] = f"too few models ({n}) for {k} features"
        return out, oof
    if X_eval is X_fit:
        fit = ols_fit(X_fit, y_fit)
        out.update(r2=fit.r2, r2_adj=fit.r2_adj, kendall_tau=kendall_tau(fit.fitted, y_fit).value)
        if k == 1:  # the predictor's own rank agreement, with its sign
            out["kendall_tau_feature"] = kendall_tau(X_fit[:, 0], y_fit).value
    if folds == 0:
        out["note"] = "one data set: no grouped cross-validation"
        return out, oof
    oof = transfer_predictions(X_fit, y_fit, X_eval, cv_groups, n_cv)
    missing = int((~np.isfinite(oof)).sum())
    if missing:
        out["note"] = f"{missing} models in folds too small to fit are left out of r2_cv"
    tau = kendall_tau(oof, y_eval)
    out["kendall_tau_cv"], out["kendall_p_cv"] = tau.value, tau.p
    # resample models within data sets; a drawn model keeps its fold, so its copies never score each other
    r2 = stratified_bootstrap(lambda idx: cv_r2(y_eval[idx], transfer_predictions(
        X_fit[idx], y_fit[idx], X_eval[idx], cv_groups[idx], n_cv)), groups, n_boot, seed, unit="models")
    out["r2_cv"], out["r2_cv_low"], out["r2_cv_high"] = r2.value, r2.low, r2.high
    return out, oof
