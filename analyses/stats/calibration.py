"""Simulated corpora with a planted effect, and how often the verdicts' intervals cover it.

A corpus of k data sets with m runs each is drawn from a model of the kind a verdict assumes, with a
between-data-set standard deviation tau of the effect (on the pooling scale), and its claim is pooled
exactly as the verdicts pool it (:func:`analyses.stats.claims.infer`). The kinds:

- ``mean``: one value per run, mu + u_j + e, u_j ~ N(0, tau^2), e ~ N(0, 1) (a per-run ρ, a paired
  difference); the planted effect is mu.
- ``correlation``: per run (x, y) bivariate normal with correlation tanh(atanh(rho) + u_j) in data set j;
  the planted effect is rho = tanh(E[z_j]).
- ``partial``: the same correlation between x and y beyond a confound t that drives both
  (x = a t + e_x, y = b t + e_y, corr(e_x, e_y) = r_j), decided on the partial r given t.
- ``concordance``: one sign per run, positive with probability p_j = logistic(logit(p) + u_j); the
  planted effect is the mean of p_j over data sets (by quadrature).
- ``mean_uneven`` and ``concordance_uneven``: the same with data sets of unequal size (m/4 to 2m runs,
  at least 3) and, for the mean, unequal spread (a within SD of exp(N(0, 0.7)) per data set): one large
  noisy data set beside small precise ones misweighs a pooled variance; the planted effect of the uneven
  shares is the run-weighted mean of p_j, by simulation.

:func:`coverage` returns the share of corpora whose 95% interval holds the planted effect. It backs the
calibration test (``tests/analyses/test_stats_calibration.py``), the benchmark
(``benchmarks/calibration.py``) and the coverage table in ``docs/verdicts/calibration.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from analyses.stats.claims import ClaimData, infer
from analyses.stats.estimands import Concordance, Correlation, Mean

KINDS = ("mean", "correlation", "partial", "concordance", "mean_uneven", "concordance_uneven")
#: The planted effect of each kind (on its natural scale, before heterogeneity).
PLANTED = {"mean": 0.2, "correlation": 0.2, "partial": 0.2, "concordance": 0.65, "mean_uneven": 0.2,
           "concordance_uneven": 0.65}
#: Run counts of the uneven kinds, as multiples of m (cycled over the data sets).
UNEVEN_SIZES = (0.25, 2.0, 0.5, 1.0)
#: The grid of the issue that asked for the check: data sets, runs per data set, between-data-set SD.
GRID_K, GRID_M, GRID_TAU = (5, 10, 20), (10, 30), (0.0, 0.1, 0.3)


@dataclass(frozen=True)
class Cell:
    """One simulation cell: the kind, k data sets, m runs each, the between-data-set SD tau."""

    kind: str
    k: int
    m: int
    tau: float


def sizes_of(cell: Cell) -> np.ndarray:
    """The runs of each data set of ``cell`` (k,)."""
    if not cell.kind.endswith("_uneven"):
        return np.full(cell.k, cell.m)
    return np.array([max(3, round(cell.m * UNEVEN_SIZES[j % len(UNEVEN_SIZES)])) for j in range(cell.k)])


def rows_of(sizes: np.ndarray) -> pl.DataFrame:
    """The claim rows of a corpus with data sets of ``sizes`` runs (one row per run)."""
    n = int(sizes.sum())
    return pl.DataFrame({"run_id": [f"r{i}" for i in range(n)],
                         "dataset": np.repeat([f"d{j}" for j in range(len(sizes))], sizes).tolist()})


def _logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def truth(cell: Cell) -> float:
    """The planted effect of ``cell`` on its natural scale: for a share with heterogeneity, the mean p_j
    (the run-weighted one for uneven data sets, whose large data sets weigh more), by quadrature."""
    if not cell.kind.startswith("concordance") or cell.tau == 0:
        return PLANTED[cell.kind]
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    base = math.log(PLANTED[cell.kind] / (1 - PLANTED[cell.kind]))
    return float((weights * _logistic(base + cell.tau * nodes)).sum() / weights.sum())


def simulate(cell: Cell, rng: np.random.Generator) -> ClaimData:
    """One simulated corpus of ``cell`` as the claim data a verdict would hand over."""
    sizes = sizes_of(cell)
    n, tau = int(sizes.sum()), cell.tau
    rows = rows_of(sizes)
    u = np.repeat(rng.normal(0.0, tau, cell.k), sizes) if tau > 0 else np.zeros(n)
    if cell.kind.startswith("mean"):
        spread = np.repeat(np.exp(rng.normal(0.0, 0.7, cell.k)), sizes) if cell.kind == "mean_uneven" else 1.0
        return ClaimData(rows, Mean(PLANTED[cell.kind] + u + spread * rng.normal(size=n)))
    if cell.kind.startswith("concordance"):
        p = _logistic(math.log(PLANTED[cell.kind] / (1 - PLANTED[cell.kind])) + u)
        return ClaimData(rows, Concordance(np.where(rng.random(n) < p, 1.0, -1.0), +1))
    r = np.tanh(math.atanh(PLANTED[cell.kind]) + u)
    ex = rng.normal(size=n)
    ey = r * ex + np.sqrt(1 - r * r) * rng.normal(size=n)
    if cell.kind == "correlation":
        return ClaimData(rows, Correlation(ex, ey))
    t = rng.normal(size=n)
    return ClaimData(rows, Correlation(0.8 * t + ex, -0.6 * t + ey, controls=t), confound="t")


def coverage(cell: Cell, reps: int, seed: int = 0) -> tuple[float, int]:
    """(share of ``reps`` simulated corpora whose 95% interval covers the planted effect, corpora with an
    interval)."""
    rng = np.random.default_rng(seed)
    target = truth(cell)
    null = 0.5 if cell.kind.startswith("concordance") else 0.0
    hits = n = 0
    for _ in range(reps):
        pooled, _ = infer(simulate(cell, rng), null)
        if math.isfinite(pooled.low) and math.isfinite(pooled.high):
            n += 1
            hits += pooled.low <= target <= pooled.high
    return (hits / n if n else math.nan), n


def grid(kinds: tuple[str, ...] = KINDS) -> list[Cell]:
    """Every cell of the grid for ``kinds``."""
    return [Cell(kind, k, m, tau) for kind in kinds for k in GRID_K for m in GRID_M for tau in GRID_TAU]
