"""The gap verdicts' intervals: a bootstrap of the whole cross-validation, folds refitted in every draw.

Rescoring fixed out-of-fold predictions on resampled models ignores that a resample of the models
would have fitted other coefficients (the refit variance). Here each bootstrap draw resamples the models
within their data sets (the data sets are fixed: the pooled fits carry data-set indicators, and a
per-data-set fit is about that data set), repeats the random-fold cross-validation on the drawn models
(a model drawn twice stays in one fold, so it never predicts itself) and recomputes the score.

The folds' OLS fits are solved in one batch through their normal equations, (A_fit^T A_fit - A_f^T A_f)
beta_f = A_fit^T y - A_f^T y_f for fold f (A = [1, X]), with a ridge of 1e-10 of the Gram matrix's mean
diagonal so that a fold missing a data set's indicator still has a (minimum-norm-like) solution; it agrees
with :func:`analyses.gap.jiang.repeated_oof`'s ``lstsq`` to rounding (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from analyses.gap.jiang import N_FOLDS, N_REPEATS

#: Relative ridge of the batched normal equations.
RIDGE = 1e-10


@dataclass(frozen=True)
class CVFit:
    """One cross-validated OLS fit: fitted on (X_fit, y_fit), evaluated at X_eval against y_eval (all with
    the same n rows: the same models, possibly at another stage)."""

    X_fit: np.ndarray
    y_fit: np.ndarray
    X_eval: np.ndarray
    y_eval: np.ndarray


def fold_assignments(units: np.ndarray, n_repeats: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(n_repeats, n) fold of each row: per repeat a random permutation of the distinct ``units`` (n,)
    modulo ``folds``, so rows of one unit share a fold. For distinct units 0..n-1 in order this draws what
    :func:`analyses.gap.jiang.repeated_oof` draws."""
    uniq, inv = np.unique(units, return_inverse=True)
    return np.stack([(rng.permutation(len(uniq)) % folds)[inv] for _ in range(n_repeats)])


def oof_mean_prediction(fit: CVFit, fold_of: np.ndarray) -> np.ndarray:
    """The mean over repeats of each row's out-of-fold prediction (n,) for the fold assignments
    ``fold_of`` (R, n); NaN where no repeat predicted it (a fold whose fitting part has fewer than k + 2
    rows predicts nothing, as in :func:`analyses.gap.jiang.repeated_oof`)."""
    A = np.column_stack([np.ones(len(fit.X_fit)), fit.X_fit])
    B = np.column_stack([np.ones(len(fit.X_eval)), fit.X_eval])
    n, p = A.shape
    folds = int(fold_of.max()) + 1 if fold_of.size else 0
    onehot = (fold_of[..., None] == np.arange(folds)).astype(float)  # (R, n, F)
    gram_f = np.einsum("rnf,nij->rfij", onehot, A[:, :, None] * A[:, None, :], optimize=True)
    rhs_f = np.einsum("rnf,ni->rfi", onehot, A * fit.y_fit[:, None], optimize=True)
    gram = A.T @ A - gram_f
    rhs = A.T @ fit.y_fit - rhs_f
    ridge = RIDGE * max(float(np.trace(A.T @ A)) / p, 1e-300)
    beta = np.linalg.solve(gram + ridge * np.eye(p), rhs[..., None])[..., 0]  # (R, F, p)
    n_train = n - onehot.sum(axis=1)  # (R, F)
    pred_all = np.einsum("ni,rfi->rfn", B, beta, optimize=True)  # every fold's fit at every row
    pred = np.take_along_axis(pred_all, fold_of[:, None, :], axis=1)[:, 0, :]  # (R, n): own fold's fit
    ok = np.take_along_axis(n_train, fold_of, axis=1) >= (p - 1) + 2
    pred = np.where(ok, pred, np.nan)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(ok, pred, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)


Score = Callable[[Mapping[str, tuple[np.ndarray, np.ndarray]], np.ndarray], float]


def cv_statistic(fits: Mapping[str, CVFit], score: Score, n_repeats: int = N_REPEATS, folds: int = N_FOLDS
                 ) -> Callable[[np.ndarray], float]:
    """A statistic of row indices (rows may repeat): refit every fit of ``fits`` on the rows drawn, with
    the same random folds for all of them (their difference is paired), and ``score`` ({name: (y_eval,
    mean out-of-fold prediction)}, the rows drawn). The folds' generator is seeded from the rows drawn,
    so the statistic is a function of them; on every row once, in order, it is seeded 0, so its value is
    that of the stage's fits (:func:`analyses.gap.fits.jiang_fits`)."""
    def statistic(idx: np.ndarray) -> float:
        idx = np.asarray(idx)
        if len(np.unique(idx)) < folds:
            return math.nan
        n = len(next(iter(fits.values())).y_fit)
        identity = len(idx) == n and bool((idx == np.arange(n)).all())
        seed = 0 if identity else int(np.random.SeedSequence(idx.tolist()).generate_state(1)[0])
        fold_of = fold_assignments(idx, n_repeats, folds, np.random.default_rng(seed))
        out = {}
        for name, f in fits.items():
            sub = CVFit(f.X_fit[idx], f.y_fit[idx], f.X_eval[idx], f.y_eval[idx])
            out[name] = (sub.y_eval, oof_mean_prediction(sub, fold_of))
        return float(score(out, idx))
    return statistic
