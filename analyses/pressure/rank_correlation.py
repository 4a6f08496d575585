"""The pooled within-run rank correlation of the bottleneck tests: Spearman's ρ across the layers of
each run, averaged over runs, with a bootstrap-over-runs interval and a within-run permutation p-value
(see the stage docstring, "Tests")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from analyses.stats import N_BOOTSTRAP, Estimate, bootstrap_mean_interval, permutation_p, spearman

#: A run enters a per-run rank correlation with at least this many usable layers.
MIN_LAYERS = 2
#: Within-run permutations for the p-values.
N_PERMUTATIONS = 2000
#: Seed of permutations and bootstraps.
SEED = 0


@dataclass(frozen=True)
class RankCorrelation:
    """The result of :func:`pooled_rank_correlation`.

    ``effect``: the mean over runs of the within-run ρ (n = runs, unit "runs") with its bootstrap
    interval (NaN with fewer than 3 runs) and two-sided permutation p; ``rho``: {run: ρ};
    ``mean_rho_3plus`` and ``n_3plus``: the mean ρ over, and the number of, runs with >= 3 usable layers.
    """

    effect: Estimate
    rho: dict[str, float]
    mean_rho_3plus: float
    n_3plus: int


def per_run_spearman(runs, x, y, min_layers: int = MIN_LAYERS) -> dict[str, float]:
    """ρ(x, y) across the layers of each run: ``{run: ρ}`` for runs with >= min_layers finite pairs
    and a defined ρ. ``runs``, ``x``, ``y``: (n,) one entry per layer."""
    runs, x, y = np.asarray(runs), np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    out = {}
    for r in dict.fromkeys(runs[ok].tolist()):
        m = ok & (runs == r)
        if m.sum() >= min_layers:
            rho = spearman(x[m], y[m])
            if math.isfinite(rho):
                out[r] = rho
    return out


def _permutation_null(groups: list[tuple[np.ndarray, np.ndarray]], n_perm: int, rng: np.random.Generator,
                      n_runs: int) -> np.ndarray:
    """The permutation distribution (n_perm,) of the mean within-run ρ: every run's y permuted among its
    layers. ``groups``: per layer count m, the runs' x and y of shape (R, m). Ranks are centred and ρ is
    Σ rx ry / sqrt(Σ rx² Σ ry²), batched over runs of one layer count."""
    total = np.zeros(n_perm)
    for x, y in groups:
        m = x.shape[1]
        rx, ry = rankdata(x, axis=-1) - (m + 1) / 2, rankdata(y, axis=-1) - (m + 1) / 2
        den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))  # (R,)
        order = np.argsort(rng.random((n_perm, len(x), m)), axis=2)
        ryp = np.take_along_axis(np.broadcast_to(ry, (n_perm, *ry.shape)), order, axis=2)
        total += ((rx[None] * ryp).sum(axis=2) / den[None]).sum(axis=1)
    return total / n_runs


def pooled_rank_correlation(runs, x, y, min_layers: int = MIN_LAYERS, n_boot: int = N_BOOTSTRAP,
                            n_perm: int = N_PERMUTATIONS, seed: int = SEED) -> RankCorrelation:
    """Mean over runs of the within-run Spearman ρ(x, y) (``runs``, ``x``, ``y``: (n,), one entry per
    layer), with a percentile bootstrap-over-runs interval (``n_boot`` resamples of the runs' ρ) and a
    two-sided within-run permutation p-value ``(1 + #{|null| >= |observed|}) / (1 + n_perm)``; one
    generator seeded ``seed`` draws the bootstrap, then the permutations."""
    runs, x, y = np.asarray(runs), np.asarray(x, float), np.asarray(y, float)
    rho = per_run_spearman(runs, x, y, min_layers)
    n = len(rho)
    if n == 0:
        return RankCorrelation(Estimate.missing(n, "runs"), rho, math.nan, 0)
    vals = np.array(list(rho.values()))
    mean = float(vals.mean())
    ok = np.isfinite(x) & np.isfinite(y)
    sizes = {r: int((ok & (runs == r)).sum()) for r in rho}
    big = [rho[r] for r in rho if sizes[r] >= 3]
    rng = np.random.default_rng(seed)
    low = high = p = math.nan
    if n >= 3 and n_boot > 0:
        low, high = bootstrap_mean_interval(vals, n_boot, rng)
    if n_perm > 0:
        # runs grouped by layer count, so each group permutes as one array
        groups = []
        for m in sorted(set(sizes.values())):
            members = [r for r in rho if sizes[r] == m]
            groups.append((np.stack([x[ok & (runs == r)] for r in members]),
                           np.stack([y[ok & (runs == r)] for r in members])))
        null = _permutation_null(groups, n_perm, rng, n)
        p = permutation_p(null, mean, two_sided=True, tol=1e-12)
    return RankCorrelation(Estimate(mean, low, high, n, "runs", p=p), rho,
                           float(np.mean(big)) if big else math.nan, len(big))
