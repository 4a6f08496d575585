"""The gap regression: OLS, grouped and transfer cross-validation, Kendall tau, resamples, one row's columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression

from analyses.gap import regression


def _data(n: int = 60, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k))
    groups = np.repeat(np.arange(6), n // 6).astype(str)
    y = X @ rng.standard_normal(k) + 0.3 * rng.standard_normal(n)
    return X, y, groups


def test_ols_fit_matches_least_squares() -> None:
    X, y, _ = _data()
    r2, r2_adj, fitted = regression.ols_fit(X, y)
    ref = LinearRegression().fit(X, y)
    np.testing.assert_allclose(fitted, ref.predict(X), atol=1e-10)
    assert r2 == pytest.approx(ref.score(X, y), abs=1e-12)
    n, k = X.shape
    assert r2_adj == pytest.approx(1 - (1 - r2) * (n - 1) / (n - k - 1), abs=1e-12)


def test_grouped_cv_never_sees_the_held_out_data_set() -> None:
    """Each data set's predictions equal a fit on the other data sets only."""
    X, y, groups = _data()
    oof = regression.grouped_cv_predictions(X, y, groups, folds=6)  # one data set per fold
    for g in np.unique(groups):
        held = groups == g
        ref = LinearRegression().fit(X[~held], y[~held]).predict(X[held])
        np.testing.assert_allclose(oof[held], ref, atol=1e-10)
    assert regression.cv_r2(y, oof) == pytest.approx(1 - ((y - oof) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_a_data_set_offset_cannot_be_learned_across_data_sets() -> None:
    """y = a constant per data set, unrelated to X: in-sample a per-set feature fits it, grouped CV does not."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(5), 10).astype(str)
    offsets = rng.standard_normal(5) * 3
    y = offsets[np.repeat(np.arange(5), 10)]
    X = y[:, None] + 0.01 * rng.standard_normal((50, 1))  # a feature that just names the data set's level
    X_unrelated = rng.standard_normal((50, 1))
    assert regression.ols_fit(X, y).r2 > 0.99
    assert regression.cv_r2(y, regression.grouped_cv_predictions(X_unrelated, y, groups)) < 0.05


def test_transfer_uses_the_fit_stage_and_predicts_the_other() -> None:
    X, y, groups = _data()
    X_other = X + 1.0
    pred = regression.transfer_predictions(X, y, X_other, groups, folds=6)
    for g in np.unique(groups):
        held = groups == g
        np.testing.assert_allclose(pred[held], LinearRegression().fit(X[~held], y[~held]).predict(X_other[held]),
                                   atol=1e-10)


def test_kendall_and_folds() -> None:
    a, b = np.array([1.0, 2, 3, 4, 5, np.nan]), np.array([2.0, 1, 4, 3, 5, 0])
    tau = regression.kendall_tau(a, b)
    ref = stats.kendalltau(a[:5], b[:5])
    assert tau.value == pytest.approx(ref.statistic) and tau.p == pytest.approx(ref.pvalue)
    assert math.isnan(regression.kendall_tau(np.ones(5), np.arange(5.0)).value)
    assert regression.n_folds(np.array(["a"] * 5)) == 0 and regression.n_folds(np.array(list("abc"))) == 3


def test_too_few_models_is_a_note_not_a_crash() -> None:
    X, y, groups = _data(n=12, k=15)
    cols, oof = regression.fit_row(X[:, :15], y, groups)
    assert cols["r2_cv"] is None and "too few models" in cols["note"] and np.isnan(oof).all()
    cols, _ = regression.fit_row(X[:, :1], y, np.array(["one"] * 12))
    assert cols["r2"] is not None and cols["r2_cv"] is None and "one data set" in cols["note"]
