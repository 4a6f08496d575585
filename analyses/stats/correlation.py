"""Pearson, Spearman and partial correlations, plain and within groups, with their intervals.

Within groups (data sets, architectures): both variables are z-scored within each group
(:func:`analyses.stats.standardize.standardize_within`) and r is the Pearson r of the pooled
z-scores: r = sum_g n_g r_g / sqrt(n_x n_y), where n_x (n_y) counts the rows of the groups in which x
(y) is not constant (a constant group's z-scores are 0). With no constant group that is the
size-weighted mean sum_g n_g r_g / n. Removing k group means costs degrees of freedom: p from
t = r sqrt(nu / (1 - r^2)) with nu = n - k - 1 (- c controls); a constant group's rows still count in
n and k, so nu is then slightly too large.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from analyses.stats.bootstrap import row_bootstrap
from analyses.stats.estimate import CONFIDENCE, Estimate
from analyses.stats.standardize import rank_within, standardize_batched, standardize_within


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis of x, y (..., n): shape (...); NaN where either is constant."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def pearson(x: np.ndarray, y: np.ndarray, min_n: int = 3) -> float:
    """Pearson r of the finite pairs of x, y (n,); NaN below ``min_n`` pairs or with a constant side
    (no spread at all: a constant whose mean does not round exactly would otherwise give rounding noise)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < min_n or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(pearson_rows(x, y))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of x, y (n,): the Pearson r of their average ranks; NaN if n < 2 or a side is all tied."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return math.nan
    return float(pearson_rows(stats.rankdata(x), stats.rankdata(y)))


def pearson_ci(x: np.ndarray, y: np.ndarray, unit: str = "rows") -> Estimate:
    """Pearson r over the finite pairs with its Fisher-z interval tanh(atanh r +- z / sqrt(n - 3)) and
    two-sided p; NaN when n < 4 or either variable is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Estimate(math.nan, math.nan, math.nan, n, unit)
    r, p = stats.pearsonr(x, y)
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), stats.norm.ppf(0.5 + CONFIDENCE / 2) / math.sqrt(n - 3)
    return Estimate(float(r), float(np.tanh(z - half)), float(np.tanh(z + half)), n, unit, p=float(p))


def within_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, int, int]:
    """The within-group r of finite x, y (n,), groups (n,) of >= 2 rows kept: ``(r, n, k)``."""
    _, inv = np.unique(groups, return_inverse=True)
    keep = np.bincount(inv)[inv] >= 2
    x, y, g = x[keep], y[keep], np.asarray(groups)[keep]
    n, k = int(len(x)), int(len(np.unique(g)))
    if n == 0:
        return math.nan, n, k
    zx, zy = standardize_within(x, g), standardize_within(y, g)
    sxx, syy = float(zx @ zx), float(zy @ zy)
    if sxx <= 0 or syy <= 0:
        return math.nan, n, k
    return float(np.clip(zx @ zy / math.sqrt(sxx * syy), -1.0, 1.0)), n, k


def within_partial_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray, controls: np.ndarray | None = None) -> float:
    """The point statistic of :func:`within_group_r` for claim resamples: Pearson r of x and y (n,)
    z-scored within groups (n,), or with ``controls`` (n, c) the partial r of those z-scores on
    [1, the z-scored controls]. Rows with any value missing are left out; groups of one row (z = 0)
    add nothing. NaN below 4 rows."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    c = None if controls is None else np.asarray(controls, float).reshape(len(x), -1)
    ok = np.isfinite(x) & np.isfinite(y)
    if c is not None:
        ok &= np.isfinite(c).all(axis=1)
    if ok.sum() < 4:
        return math.nan
    g = np.asarray(groups)[ok]
    zx, zy = standardize_within(x[ok], g), standardize_within(y[ok], g)
    if c is not None:
        zc = standardize_within(c[ok], g)
        zx, zy = partial_residuals(zx, zc), partial_residuals(zy, zc)
    return pearson(zx, zy)


def within_group_pearson(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Estimate:
    """Pearson r of x and y (n,) within groups, analytic interval and p-value.

    Finite pairs only; groups of one row are dropped (``groups=None``: one group, the ordinary r).
    With n rows in k groups: nu = n - k - 1, interval tanh(atanh r +- z_{0.975} / sqrt(nu - 1)).
    NaN where nu - 1 < 1 or a variable is constant within every group.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    g = np.zeros(len(x), int) if groups is None else np.asarray(groups)
    ok = np.isfinite(x) & np.isfinite(y)
    r, n, k = within_r(x[ok], y[ok], g[ok])
    dof = n - k - 1
    if not math.isfinite(r) or dof - 1 < 1:
        return Estimate(math.nan, math.nan, math.nan, n, groups=k)
    if abs(r) >= 1.0:
        return Estimate(r, r, r, n, p=0.0, groups=k)
    t = r * math.sqrt(dof / (1 - r * r))
    half = stats.norm.ppf(0.5 + CONFIDENCE / 2) / math.sqrt(dof - 1)
    z = math.atanh(r)
    return Estimate(r, math.tanh(z - half), math.tanh(z + half), n, p=float(2 * stats.t.sf(abs(t), dof)), groups=k)


def partial_residuals(y: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Residuals of y (..., n) after least squares on [1, controls] (..., n, c), by pseudo-inverse, so
    collinear controls still give the projection. A y wholly explained by the controls gives 0 (its
    residual is rounding noise, not a direction to correlate)."""
    design = np.concatenate([np.ones((*controls.shape[:-1], 1)), controls], axis=-1)
    beta = np.linalg.pinv(design) @ y[..., None]
    res = y - (design @ beta)[..., 0]
    scale = np.linalg.norm(y - y.mean(axis=-1, keepdims=True), axis=-1, keepdims=True)
    return np.where(np.linalg.norm(res, axis=-1, keepdims=True) <= 1e-9 * scale, 0.0, res)


def within_group_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray, controls: np.ndarray | None = None,
                   method: str = "pearson", seed: int = 0, unit: str = "runs") -> Estimate:
    """Correlation of x and y (n,), one row per independent unit, within groups (n,) of labels
    ("dataset|architecture"), with a bootstrap interval.

    Groups with one finite row are dropped. x, y (and the controls (n, c), if any) are z-scored within
    each group; r is the Pearson r of the z-scores, or with controls the partial r (Pearson r of the
    residuals of both on [1, controls]); "spearman" ranks x and y within group first. The interval is
    a percentile bootstrap over rows (:func:`analyses.stats.bootstrap.row_bootstrap`) that redoes the
    z-scoring in every resample (the ranks stay those of the full sample). p from
    t = r sqrt(nu / (1 - r^2)), nu = n - k - 1 - c. ``datasets`` counts the distinct first fields of
    the group labels.
    """
    x, y, g = np.asarray(x, float), np.asarray(y, float), np.asarray(groups).astype(str)
    c = np.zeros((len(x), 0)) if controls is None else np.asarray(controls, float)
    c = c[:, None] if c.ndim == 1 else c
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(c).all(axis=1)
    x, y, c, g = x[ok], y[ok], c[ok], g[ok]
    _, inv = np.unique(g, return_inverse=True)
    keep = np.bincount(inv)[inv] >= 2
    x, y, c, g = x[keep], y[keep], c[keep], g[keep]
    labels, codes = np.unique(g, return_inverse=True)
    n, k, n_first = int(len(x)), int(len(labels)), int(len({lab.split("|")[0] for lab in labels}))
    if method == "spearman":
        x, y = rank_within(x, codes), rank_within(y, codes)
    data = np.column_stack([x, y, c])

    def statistic(idx: np.ndarray) -> np.ndarray:
        batch = np.atleast_2d(idx)
        offsets = np.arange(len(batch))[:, None] * k
        z = standardize_batched(data[batch], codes[batch] + offsets, len(batch) * k)
        zx, zy = z[..., 0], z[..., 1]
        if c.shape[1]:
            zx, zy = partial_residuals(zx, z[..., 2:]), partial_residuals(zy, z[..., 2:])
        r = pearson_rows(zx, zy)
        return r if np.ndim(idx) == 2 else r[0]

    if n < 4:
        return Estimate(math.nan, math.nan, math.nan, n, unit, groups=k, datasets=n_first)
    boot = row_bootstrap(statistic, n, seed=seed)
    r, dof = boot.value, n - k - 1 - c.shape[1]
    p = math.nan
    if math.isfinite(r) and dof >= 1:
        p = float(2 * stats.t.sf(abs(r * math.sqrt(dof / max(1e-300, 1 - r * r))), dof))
    return Estimate(r, boot.low, boot.high, n, unit, p=p, groups=k, datasets=n_first)


def within_run_ranks(values: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """Run fixed effects on a rank scale: each column of ``values`` (n,) or (n, c) ranked among the rows
    of its run (average ranks) and centred on the run's mean rank, so that pooling the rows of many
    runs compares layers only within their own run. Rows with any value missing are NaN and take no rank."""
    v = np.asarray(values, float)
    flat = v.ndim == 1
    v = v[:, None] if flat else v
    ok = np.isfinite(v).all(axis=1)
    out = np.full(v.shape, np.nan)
    runs = np.asarray(runs)
    for r in np.unique(runs[ok]):
        m = ok & (runs == r)
        ranks = stats.rankdata(v[m], axis=0)
        out[m] = ranks - ranks.mean(axis=0)
    return out[:, 0] if flat else out


def partial_r(x: np.ndarray, y: np.ndarray, controls: np.ndarray | None = None) -> float:
    """Pearson r of x and y (n,), or with ``controls`` (n, c) the r of their residuals on [1, controls],
    over the rows where everything is finite; NaN below 4 such rows or with a side left constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    c = None if controls is None else np.asarray(controls, float).reshape(len(x), -1)
    if c is not None:
        ok &= np.isfinite(c).all(axis=1)
    if ok.sum() < 4:
        return math.nan
    if c is None or c.shape[1] == 0:
        return pearson(x[ok], y[ok])
    return pearson(partial_residuals(x[ok], c[ok]), partial_residuals(y[ok], c[ok]))
