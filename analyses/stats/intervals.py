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
        return Estimate.missing(n, unit, m)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    return Estimate(m, m - half, m + half, n, unit, p=mean_t_p(v, null), df=n - 1)


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
    p = k / n
    return Estimate(p, *wilson_bounds(p, n, CONFIDENCE), n, unit)


def bh_adjust(p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels ``multipletests(method='fdr_bh')``) over the
    finite entries of ``p`` (m,); NaN stays NaN."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="fdr_bh")[1]
    return out


def design_effect(scores: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """(Kish's design effect 1 + (m_w - 1) ICC with m_w = sum m_j^2 / n the size-weighted cluster size, the
    ICC) of ``scores`` (n,) in ``clusters`` (n,): the ICC by one-way ANOVA, (MSB - MSW) / (MSB + (m0 - 1)
    MSW) with m0 = (n - sum m_j^2 / n) / (k - 1), clipped to [0, 1]; 1 and 0 with one cluster or no
    within-cluster spread to compare against."""
    s, c = np.asarray(scores, float), np.asarray(clusters)
    labels, inv, m = np.unique(c, return_inverse=True, return_counts=True)
    n, k = len(s), len(labels)
    if k < 2 or n <= k:
        return 1.0, 0.0
    means = np.bincount(inv, weights=s) / m
    msb = float((m * (means - s.mean()) ** 2).sum() / (k - 1))
    msw = float(((s - means[inv]) ** 2).sum() / (n - k))
    m0 = (n - float((m * m).sum()) / n) / (k - 1)
    den = msb + (m0 - 1) * msw
    icc = min(1.0, max(0.0, (msb - msw) / den)) if den > 0 else 0.0
    return 1.0 + (float((m * m).sum()) / n - 1) * icc, icc


def wilson_bounds(p: float, n: float, level: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion p over n (possibly effective, fractional) trials."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
