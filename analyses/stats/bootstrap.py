"""Percentile bootstrap intervals, by resampling independent rows or whole clusters."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import polars as pl
from scipy import stats

from analyses.stats.estimate import CONFIDENCE, Estimate

#: Bootstrap resamples of every bootstrap interval.
N_BOOTSTRAP = 2000


def percentile_interval(draws: list[float] | np.ndarray) -> tuple[float, float]:
    """The central CONFIDENCE range of the finite resampled (or permuted) values ``draws`` (m,):
    ``(low, high)``; NaNs when fewer than half of them are finite."""
    d = np.asarray(draws, float).ravel()
    finite = d[np.isfinite(d)]
    if len(finite) == 0 or 2 * len(finite) < len(d):
        return math.nan, math.nan
    a = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(finite, [a, 1 - a])
    return float(lo), float(hi)


def cluster_bootstrap(frame: pl.DataFrame, cluster: str, statistic: Callable[[pl.DataFrame], float],
                      n_boot: int = N_BOOTSTRAP, seed: int = 0, unit: str = "clusters") -> Estimate:
    """A statistic of ``frame`` with a percentile interval from resampling whole clusters.

    Rows of one cluster (one run: its checkpoints are not independent) are drawn together, so the
    interval reflects the number of clusters k, not of rows; n = k. No interval below 3 clusters.
    """
    estimate = float(statistic(frame))
    groups = frame.partition_by(cluster, maintain_order=True)
    k = len(groups)
    if k < 3 or not math.isfinite(estimate):
        return Estimate.missing(k, unit, estimate)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, k, size=k)
        draws.append(statistic(pl.concat([groups[i] for i in pick])))
    lo, hi = percentile_interval(draws)
    return Estimate(estimate, lo, hi, k, unit)


def row_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int = N_BOOTSTRAP,
                  seed: int = 0, unit: str = "rows") -> Estimate:
    """A statistic of n independent rows with a percentile interval from resampling rows
    (``scipy.stats.bootstrap`` on the row indices, so any number of paired columns resample together).

    ``statistic(idx)`` maps integer row indices of shape (..., n) to values of shape (...,), vectorized
    over leading axes. Resamples where it is NaN (a constant column) are left out; with fewer than half
    of them finite, or n < 4, there is no interval.
    """
    estimate = float(statistic(np.arange(n)))
    if n < 4 or not math.isfinite(estimate):
        return Estimate.missing(n, unit, estimate)
    with warnings.catch_warnings():
        # scipy's own interval, unused here, is NaN when a resample's statistic is (and it warns so);
        # the interval below leaves those resamples out, or gives none
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((np.arange(n),), lambda idx, axis=-1: statistic(np.moveaxis(idx, axis, -1)),
                              vectorized=True, n_resamples=n_boot, method="percentile",
                              rng=np.random.default_rng(seed))
    lo, hi = percentile_interval(res.bootstrap_distribution)
    return Estimate(estimate, lo, hi, n, unit)


def stratified_resamples(groups: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) row indices: each resample draws, within every group of ``groups`` (n,), as many rows
    as the group has, with replacement, so every resample keeps the groups and their sizes."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    out = np.empty((n_boot, len(groups)), dtype=np.int64)
    pos = 0
    for idx in members:
        out[:, pos:pos + len(idx)] = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        pos += len(idx)
    return out


def stratified_bootstrap(statistic: Callable[[np.ndarray], float], groups: np.ndarray, n_boot: int = N_BOOTSTRAP,
                         seed: int = 0, unit: str = "rows") -> Estimate:
    """``statistic(idx)`` of n rows (idx: integer row indices (n,)) with a percentile interval over
    :func:`stratified_resamples` of ``groups`` (n,): the groups (data sets) stay fixed, their rows are
    drawn. ``groups`` of the estimate counts them."""
    groups = np.asarray(groups)
    n, k = len(groups), len(np.unique(groups))
    value = float(statistic(np.arange(n)))
    draws = [statistic(idx) for idx in stratified_resamples(groups, n_boot, seed)]
    lo, hi = percentile_interval(draws)
    return Estimate(value, lo, hi, n, unit, groups=k)


def bootstrap_mean_interval(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (n,), one per independent unit, over ``n_boot``
    resamples of the units drawn from ``rng`` in one (n_boot, n) call (the caller's stream goes on)."""
    v = np.asarray(values, float)
    pick = rng.integers(0, len(v), size=(n_boot, len(v)))
    return percentile_interval(v[pick].mean(axis=1))


def permutation_p(null: np.ndarray, observed: float, two_sided: bool = False, tol: float = 0.0) -> float:
    """Permutation p-value (1 + #{null >= observed - tol}) / (1 + m) over m null statistics (m,); with
    ``two_sided``, of |null| against |observed|. The +1 counts the observed arrangement itself, so p > 0."""
    null = np.asarray(null, float)
    if two_sided:
        null, observed = np.abs(null), abs(observed)
    return float((1 + np.sum(null >= observed - tol)) / (1 + len(null)))
