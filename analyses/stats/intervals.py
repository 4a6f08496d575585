"""Means, proportions and multiple-testing adjustment."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analyses.stats.estimate import CONFIDENCE, Estimate


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, float)
    return v[np.isfinite(v)]


def mean_ci(values: np.ndarray, unit: str = "rows", null: float = 0.0) -> Estimate:
    """Mean of the finite values (n,) with a t interval mean +- t_{n-1} sd / sqrt(n), and the two-sided
    p of the one-sample t test of mean ``null`` (:func:`mean_t_p`)."""
    v = _finite(values)
    n = int(len(v))
    if n < 2:
        return Estimate.missing(n, unit, float(v.mean()) if n else math.nan)
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(n))
    if se == 0:
        return Estimate(m, m, m, n, unit)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    return Estimate(m, m - half, m + half, n, unit, p=mean_t_p(v, null))


def mean_t_p(values: np.ndarray, null: float = 0.0) -> float:
    """Two-sided p of the one-sample t test of mean ``null`` over the finite values; NaN below two or
    with no spread."""
    v = _finite(values)
    if len(v) < 2 or np.ptp(v) == 0:
        return math.nan
    return float(stats.ttest_1samp(v, null).pvalue)


def wilson_ci(k: int, n: int, unit: str = "trials") -> Estimate:
    """Proportion k/n with its Wilson interval."""
    if n == 0:
        return Estimate.missing(0, unit)
    z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, unit)


def bh_adjust(p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels ``multipletests(method='fdr_bh')``) over the
    finite entries of ``p`` (m,); NaN stays NaN."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="fdr_bh")[1]
    return out
