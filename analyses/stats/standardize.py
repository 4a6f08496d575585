"""z-scores and ranks within groups.

A correlation pooled over data sets mostly says which data set a row came from; z-scoring both
variables within each group first makes r the size-weighted mean of the per-group correlations
(when neither variable is constant in any group; see :mod:`analyses.stats.correlation`).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def standardize_batched(values: np.ndarray, codes: np.ndarray, n_codes: int, tol: float = 1e-12) -> np.ndarray:
    """z-score values (B, n, m) within the groups ``codes`` (B, n) (integers below n_codes), column by
    column: (x - mean_g) / sd_g, ddof 0. A group of one row, or a column whose sd is at most
    tol * max(1, |mean_g|) there, maps to 0: it carries no within-group information.
    Returns shape (B, n, m)."""
    b, n, m = values.shape
    flat, v = codes.reshape(-1), values.reshape(b * n, m)
    count = np.bincount(flat, minlength=n_codes).astype(float)
    safe = np.maximum(count, 1.0)
    out = np.zeros_like(v)
    for j in range(m):
        mean = np.bincount(flat, weights=v[:, j], minlength=n_codes) / safe
        centred = v[:, j] - mean[flat]
        sd = np.sqrt(np.bincount(flat, weights=centred ** 2, minlength=n_codes) / safe)
        ok = (count[flat] > 1) & (sd[flat] > tol * np.maximum(1.0, np.abs(mean[flat])))
        out[ok, j] = centred[ok] / sd[flat][ok]
    return out.reshape(b, n, m)


def standardize_within(values: np.ndarray, groups: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """:func:`standardize_batched` for one sample: values (n,) or (n, p), groups (n,) of any labels.
    Returns the shape of ``values``."""
    x = np.asarray(values, float)
    flat = x.ndim == 1
    x2 = x[:, None] if flat else x
    _, inv = np.unique(groups, return_inverse=True)
    out = standardize_batched(x2[None], inv.reshape(1, -1), int(inv.max(initial=-1)) + 1, tol)[0]
    return out[:, 0] if flat else out


def rank_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Average ranks (1..n_g) of values (n,) within each group (n,): the Pearson r of these, z-scored
    within group, is the within-group Spearman r."""
    v = np.asarray(values, float)
    out = np.empty_like(v)
    for g in np.unique(groups):
        m = groups == g
        out[m] = stats.rankdata(v[m])
    return out
