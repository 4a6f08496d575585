"""The held-out first canonical correlation: folds that never let the fit see the groups (data sets or
runs) it scores, and their Fisher-z mean."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold

from analyses.cca.blocks import MIN_STD
from analyses.cca.canonical import fit_cca
from analyses.stats import Estimate, mean_ci, pearson

#: Most folds of the held-out estimate.
MAX_FOLDS = 5
#: Fewest held-out rows for a fold's correlation.
MIN_TEST_ROWS = 5


@dataclass(frozen=True)
class HeldOutFold:
    """One fold: its rows ``test_index`` (n_test,), their held-out first variates ``u``, ``v`` (n_test,;
    NaN when the training fit failed) and ``heldout_correlation`` = corr(u, v) (NaN: no fit, a constant
    projection, or fewer than :data:`MIN_TEST_ROWS` rows)."""

    fold: int
    n_train: int
    n_test: int
    test_index: np.ndarray
    u: np.ndarray
    v: np.ndarray
    heldout_correlation: float = math.nan


def heldout_first_correlations(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int,
                               orient: np.ndarray | None = None) -> list[HeldOutFold]:
    """Held-out first canonical correlation by GroupKFold over ``groups`` (n,).

    For each fold: standardize x (n, p), y (n, q) with the training rows' mean and sd, fit
    :func:`analyses.cca.canonical.fit_cca` on the training rows (oriented by ``orient`` (n,), if
    given), project the test rows with a_1, b_1 and correlate the two projections.
    """
    out = []
    for fold, (tr, te) in enumerate(GroupKFold(n_splits=n_splits).split(x, y, groups)):
        empty = HeldOutFold(fold, int(len(tr)), int(len(te)), te, np.full(len(te), np.nan), np.full(len(te), np.nan))
        mx, sx = x[tr].mean(0), x[tr].std(0)
        my, sy = y[tr].mean(0), y[tr].std(0)
        if (sx < MIN_STD).any() or (sy < MIN_STD).any() or len(tr) < x.shape[1] + y.shape[1] + 3:
            out.append(empty)
            continue
        try:
            fit = fit_cca((x[tr] - mx) / sx, (y[tr] - my) / sy, None if orient is None else orient[tr], tests=False)
        except (ValueError, np.linalg.LinAlgError):
            out.append(empty)
            continue
        u, v = fit.project((x[te] - mx) / sx, (y[te] - my) / sy)
        u, v = u[:, 0], v[:, 0]
        r = math.nan
        if len(te) >= MIN_TEST_ROWS and np.ptp(u) > 0 and np.ptp(v) > 0:
            r = pearson(u, v)
        out.append(HeldOutFold(fold, empty.n_train, empty.n_test, te, u, v, r))
    return out


def fisher_mean_ci(r: np.ndarray, unit: str = "folds") -> Estimate:
    """Mean of the finite correlations r (k,) on the Fisher-z scale with a t 95% interval over them,
    back-transformed: tanh(mean atanh r_i ± t_{0.975, k-1} sd/√k), and the one-sample t p-value of
    mean atanh r = 0 (:func:`analyses.stats.mean_ci`); n = k. No interval when k < 2."""
    r = np.asarray(r, float)
    z = np.arctanh(np.clip(r[np.isfinite(r)], -0.999999, 0.999999))
    est = mean_ci(z, unit)
    return Estimate(math.tanh(est.value), math.tanh(est.low), math.tanh(est.high), est.n, unit, p=est.p)
