"""Canonical correlation analysis of two blocks of columns, by statsmodels ``CanCorr``, with Wilks'
lambda tests, variates of unit sample variance, and structure correlations (loadings)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from statsmodels.multivariate.cancorr import CanCorr


@dataclass(frozen=True)
class CcaFit:
    """A CCA of X (n, p) and Y (n, q), k = min(p, q) components.

    ``cancorr`` (k,); ``x_coef`` (p, k), ``y_coef`` (q, k) canonical weights of the centred blocks;
    ``x_scores`` U = X_c x_coef (n, k), ``y_scores`` V (n, k), each column of unit sample variance;
    ``x_loadings`` (p, k) = corr(X_j, U_c), ``y_loadings`` (q, k); Wilks' Λ_c = Π_{j>=c}(1 - ρ_j²)
    with Rao's F, its dfs and p-value, (k,) each.
    """

    cancorr: np.ndarray
    x_coef: np.ndarray
    y_coef: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    x_scores: np.ndarray
    y_scores: np.ndarray
    x_loadings: np.ndarray
    y_loadings: np.ndarray
    wilks: np.ndarray
    f_stat: np.ndarray
    df_num: np.ndarray
    df_den: np.ndarray
    p_value: np.ndarray

    def project(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical variates of new rows x (m, p), y (m, q): ((x - x̄) a, (y - ȳ) b), each (m, k)."""
        return (x - self.x_mean) @ self.x_coef, (y - self.y_mean) @ self.y_coef


def corr_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """corr(a[:, i], b[:, j]) for a (n, p), b (n, k): (p, k); 0 where a column is constant."""
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = np.sqrt((ac ** 2).sum(0)), np.sqrt((bc ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ac.T @ bc) / np.outer(na, nb)
    return np.nan_to_num(out)


def fit_cca(x: np.ndarray, y: np.ndarray, orient: np.ndarray | None = None, tests: bool = True) -> CcaFit:
    """CCA of x (n, p) and y (n, q) by statsmodels ``CanCorr(endog=y, exog=x)`` with its Wilks' lambda
    tests (``corr_test``; with ``tests`` false, as in the held-out folds, they are skipped and NaN: they
    cost about half the fit). ``orient`` (n,), optional: flip each component's sign so its y variate
    correlates positively with it. Raises ValueError when a block is collinear."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    model = CanCorr(y, x)
    collinear = "a canonical correlation is exactly 1: the blocks are collinear"
    if tests:
        try:
            table = model.corr_test().stats
        except ZeroDivisionError:
            # a canonical correlation of exactly 1 (Wilks' lambda 0): the blocks are collinear, seen in a
            # small held-out fold of the test corpus
            raise ValueError(collinear) from None
        wilks, f_stat, df_num, df_den, p_value = (table[c].to_numpy(float) for c in
                                                  ("Wilks' lambda", "F Value", "Num DF", "Den DF", "Pr > F"))
    else:
        if np.any(1.0 - np.asarray(model.cancorr, float) ** 2 <= 0.0):
            raise ValueError(collinear)
        wilks = f_stat = df_num = df_den = p_value = np.full(len(model.cancorr), np.nan)
    # statsmodels scales the variates to unit norm; rescale them to unit sample variance
    scale = math.sqrt(max(len(x) - 1, 1))
    a, b = np.asarray(model.x_cancoef, float) * scale, np.asarray(model.y_cancoef, float) * scale
    xm, ym = x.mean(0), y.mean(0)
    u, v = (x - xm) @ a, (y - ym) @ b
    if orient is not None:
        sign = np.sign(corr_columns(np.asarray(orient, float)[:, None], v)[0])
        sign[sign == 0] = 1.0
        a, b, u, v = a * sign, b * sign, u * sign, v * sign
    return CcaFit(cancorr=np.asarray(model.cancorr, float), x_coef=a, y_coef=b, x_mean=xm, y_mean=ym,
                  x_scores=u, y_scores=v, x_loadings=corr_columns(x, u), y_loadings=corr_columns(y, v),
                  wilks=wilks, f_stat=f_stat, df_num=df_num, df_den=df_den, p_value=p_value)
