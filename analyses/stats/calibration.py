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

KINDS = ("mean", "correlation", "partial", "concordance")
#: The planted effect of each kind (on its natural scale, before heterogeneity).
PLANTED = {"mean": 0.2, "correlation": 0.2, "partial": 0.2, "concordance": 0.65}
#: The grid of the issue that asked for the check: data sets, runs per data set, between-data-set SD.
GRID_K, GRID_M, GRID_TAU = (5, 10, 20), (10, 30), (0.0, 0.1, 0.3)


@dataclass(frozen=True)
class Cell:
    """One simulation cell: the kind, k data sets, m runs each, the between-data-set SD tau."""

    kind: str
    k: int
    m: int
    tau: float


def rows_of(k: int, m: int) -> pl.DataFrame:
    """The claim rows of a corpus of k data sets with m runs each (one row per run)."""
    return pl.DataFrame({"run_id": [f"r{i}" for i in range(k * m)],
                         "dataset": np.repeat([f"d{j}" for j in range(k)], m).tolist()})


def _logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def truth(cell: Cell) -> float:
    """The planted effect of ``cell`` on its natural scale."""
    if cell.kind != "concordance" or cell.tau == 0:
        return PLANTED[cell.kind]
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    base = math.log(PLANTED["concordance"] / (1 - PLANTED["concordance"]))
    return float((weights * _logistic(base + cell.tau * nodes)).sum() / weights.sum())


def simulate(cell: Cell, rng: np.random.Generator) -> ClaimData:
    """One simulated corpus of ``cell`` as the claim data a verdict would hand over."""
    k, m, tau = cell.k, cell.m, cell.tau
    rows = rows_of(k, m)
    u = np.repeat(rng.normal(0.0, tau, k), m) if tau > 0 else np.zeros(k * m)
    if cell.kind == "mean":
        return ClaimData(rows, Mean(PLANTED["mean"] + u + rng.normal(size=k * m)))
    if cell.kind == "concordance":
        p = _logistic(math.log(PLANTED["concordance"] / (1 - PLANTED["concordance"])) + u)
        return ClaimData(rows, Concordance(np.where(rng.random(k * m) < p, 1.0, -1.0), +1))
    r = np.tanh(math.atanh(PLANTED[cell.kind]) + u)
    ex = rng.normal(size=k * m)
    ey = r * ex + np.sqrt(1 - r * r) * rng.normal(size=k * m)
    if cell.kind == "correlation":
        return ClaimData(rows, Correlation(ex, ey))
    t = rng.normal(size=k * m)
    return ClaimData(rows, Correlation(0.8 * t + ex, -0.6 * t + ey, controls=t), confound="t")


def coverage(cell: Cell, reps: int, seed: int = 0) -> tuple[float, int]:
    """(share of ``reps`` simulated corpora whose 95% interval covers the planted effect, corpora with an
    interval)."""
    rng = np.random.default_rng(seed)
    target = truth(cell)
    null = 0.5 if cell.kind == "concordance" else 0.0
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
