"""Change points of a piecewise-constant series by exact optimal partitioning (dynamic programming
over every segmentation), with a penalty per change point scaled by a robust noise estimate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: At most this many change points (four phases).
MAX_CHANGES = 3
#: Minimum number of values (rate intervals) in a segment.
MIN_SEGMENT = 2
#: Penalty per change point: PENALTY_C · σ² · ln(n).
PENALTY_C = 5.0
#: MAD -> standard deviation for Gaussian noise.
MAD_TO_SIGMA = 1.4826


def noise_sigma(series: Sequence[np.ndarray]) -> float:
    """σ = MAD_TO_SIGMA · median|Δx| / √2 over the first differences of all ``series`` pooled
    (uncentred MAD of differences). NaN when there are no differences."""
    diffs = [np.abs(np.diff(np.asarray(x, float))) for x in series if len(x) >= 2]
    pooled = np.concatenate(diffs) if diffs else np.empty(0)
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(pooled) / math.sqrt(2))


def penalty(sigma: float, n: int, penalty_c: float = PENALTY_C) -> float:
    """β = penalty_c · σ² · ln(n), the cost of one change point in a series of n values."""
    return penalty_c * sigma * sigma * math.log(n)


def optimal_partitions(values: np.ndarray, max_changes: int = MAX_CHANGES,
                       min_segment: int = MIN_SEGMENT) -> dict[int, tuple[float, list[int]]]:
    """For every feasible number of change points k <= max_changes, the least squared error of a
    piecewise-constant fit with k change points and segments of >= min_segment values, by dynamic
    programming (exact): C_k(j) = min_i C_{k-1}(i) + SSE(i, j), SSE(i, j) = Σ_{i<=t<j} (x_t - mean)².

    values: (n,). Returns {k: (sse, [τ_1, ..., τ_k])}, τ the index where a new segment starts.
    """
    x = np.asarray(values, float)
    n = len(x)
    cs = np.concatenate([[0.0], np.cumsum(x)])
    cs2 = np.concatenate([[0.0], np.cumsum(x * x)])

    def sse(i, j: int):
        s = cs[j] - cs[i]
        return np.maximum((cs2[j] - cs2[i]) - s * s / (j - i), 0.0)

    cost = np.full((max_changes + 1, n + 1), np.inf)
    arg = np.zeros((max_changes + 1, n + 1), dtype=int)
    for j in range(min_segment, n + 1):
        cost[0, j] = sse(0, j)
    for k in range(1, max_changes + 1):
        for j in range((k + 1) * min_segment, n + 1):
            i = np.arange(k * min_segment, j - min_segment + 1)
            c = cost[k - 1, i] + sse(i, j)
            best = int(np.argmin(c))
            cost[k, j], arg[k, j] = c[best], i[best]
    out = {}
    for k in range(max_changes + 1):
        if n >= 1 and np.isfinite(cost[k, n]):
            taus, j = [], n
            for kk in range(k, 0, -1):
                j = int(arg[kk, j])
                taus.append(j)
            out[k] = (float(cost[k, n]), sorted(taus))
    return out


def change_points(values: np.ndarray, max_changes: int = MAX_CHANGES, min_segment: int = MIN_SEGMENT,
                  penalty_c: float = PENALTY_C, sigma: float | None = None) -> list[int]:
    """Change points of a piecewise-constant signal: the k <= max_changes and positions minimizing
    SSE_k + k β, β = :func:`penalty` (σ, n). ``sigma`` defaults to the series' own :func:`noise_sigma`.
    values: (n,), finite. Returns the start indices of segments 2..k+1 (empty for no change, or when
    n < 2 · min_segment)."""
    x = np.asarray(values, float)
    n = len(x)
    if n < 2 * min_segment or not np.isfinite(x).all():
        return []
    s = noise_sigma([x]) if sigma is None or not math.isfinite(sigma) else float(sigma)
    beta = penalty(s, n, penalty_c)
    parts = optimal_partitions(x, max_changes, min_segment)
    best = min(parts, key=lambda k: (parts[k][0] + k * beta, k))
    return parts[best][1]


def segment_means(values: np.ndarray, cps: Sequence[int]) -> np.ndarray:
    """Mean of ``values`` (n,) on each segment [0, τ_1), [τ_1, τ_2), ..., [τ_k, n). Returns (k + 1,)."""
    bounds = [0, *cps, len(values)]
    return np.array([float(np.mean(values[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
