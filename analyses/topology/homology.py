"""H0 persistent homology of a layer's neuron weight point cloud, and the summaries paper 003 reads
from it (DESIGN.md, definition 8).

The point cloud of a Linear layer with weight W (q x d) is its q rows, one point per neuron: the
neuron's incoming weight vector (with the bias appended as a (d+1)-th coordinate when asked). Before
the filtration, **dead** neurons (all-zero rows: they compute a constant and have no direction) are
dropped and counted, and exact **duplicate** rows are merged into one point and counted, so that every
bar has positive length and ``n_points`` distinct points remain.

H0 of the Vietoris-Rips filtration of n points: every point is born at 0; a component dies when it
merges with another, at the length of the edge that joins them. The finite deaths are exactly the
n - 1 edge lengths of a Euclidean minimum spanning tree (one component lives forever and is left
out). :func:`h0_deaths` computes them with ripser (the reference) or with Prim's algorithm on the
dense distance matrix (the fast path; ``benchmarks/topology.py`` measures both).

From the m = n - 1 finite bars with lifetimes l_k > 0 and total L = sum_k l_k:

- persistent entropy H = -sum_k (l_k / L) ln(l_k / L), in nats;
- normalized entropy H / ln m, in [0, 1], scale-free (the primary metric; NULL for m <= 1);
- the ITMO convention H / ln L, NULL at L = 1; it depends on the unit of the weights (L < 1 gives a
  negative value), so it is kept for comparison with paper 003's tables only;
- mean lifetime L / m, raw and divided by the mean norm of the cloud's points (scale-free).

All functions are pure: arrays in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["auto", "ripser", "mst"]
METHODS = ("auto", "ripser", "mst")


@dataclass(frozen=True)
class NeuronCloud:
    """A layer's neurons as distinct points: ``points`` (n_points, d) float64, and what was removed."""

    points: np.ndarray
    n_neurons: int
    n_dead: int
    n_duplicates: int

    @property
    def n_points(self) -> int:
        return int(len(self.points))


@dataclass(frozen=True)
class TopologySummary:
    """Definition 8's numbers for one point cloud (None where undefined)."""

    n_points: int
    n_bars: int
    total_lifetime: float | None
    entropy: float | None
    normalized_entropy: float | None
    normalized_entropy_log_total: float | None
    mean_lifetime: float | None
    mean_neuron_norm: float | None
    mean_lifetime_scaled: float | None


def neuron_point_cloud(weight: np.ndarray, bias: np.ndarray | None = None) -> NeuronCloud:
    """The rows of ``weight`` (q, d), with ``bias`` (q,) appended as a last column when given, as distinct
    nonzero points (float64). Dead (all-zero) rows are dropped; duplicate rows are kept once."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weight must be a matrix (q, d), got shape {w.shape}")
    if bias is not None:
        b = np.asarray(bias, dtype=np.float64).reshape(-1, 1)
        if len(b) != len(w):
            raise ValueError(f"bias has {len(b)} entries for {len(w)} neurons")
        w = np.hstack([w, b])
    if not np.isfinite(w).all():
        raise ValueError("weight has non-finite entries")
    alive = np.any(w != 0, axis=1)
    live = w[alive]
    points = np.unique(live, axis=0) if len(live) else live
    return NeuronCloud(points=points, n_neurons=len(w), n_dead=int((~alive).sum()),
                       n_duplicates=int(len(live) - len(points)))


def minimum_spanning_tree_lengths(points: np.ndarray) -> np.ndarray:
    """Sorted edge lengths (n - 1,) of the Euclidean minimum spanning tree of ``points`` (n, d).

    Prim's algorithm on the dense squared-distance matrix, O(n^2) memory and time after one (n, d) x
    (d, n) product. The points are centred first (distances do not change) to limit cancellation in
    ||x||^2 + ||y||^2 - 2 x.y; the chosen edges' lengths are then recomputed as ||x - y|| exactly.
    """
    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    if n < 2:
        return np.empty(0)
    x = x - x.mean(axis=0)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    in_tree = np.zeros(n, dtype=bool)
    in_tree[0] = True
    best = d2[0].copy()
    best[0] = np.inf
    parent = np.zeros(n, dtype=np.intp)
    a = np.empty(n - 1, dtype=np.intp)
    b = np.empty(n - 1, dtype=np.intp)
    for k in range(n - 1):
        j = int(np.argmin(best))
        a[k], b[k] = parent[j], j
        in_tree[j] = True
        best[j] = np.inf
        row = d2[j]
        closer = (row < best) & ~in_tree
        best[closer] = row[closer]
        parent[closer] = j
    return np.sort(np.linalg.norm(x[a] - x[b], axis=1))


def ripser_h0_deaths(points: np.ndarray) -> np.ndarray:
    """Sorted finite H0 deaths (m,) of the Vietoris-Rips filtration of ``points`` (n, d), by ripser.

    ripser computes distances in single precision, so deaths carry a relative error of about 1e-7."""
    from ripser import ripser
    from scipy.spatial.distance import pdist, squareform

    x = np.asarray(points, dtype=np.float64)
    if len(x) < 2:
        return np.empty(0)
    # The distance matrix, not the points: ripser would mistake a square (n = d) cloud for one.
    diagram = ripser(squareform(pdist(x)), maxdim=0, distance_matrix=True)["dgms"][0]
    deaths = diagram[np.isfinite(diagram[:, 1]), 1]
    return np.sort(deaths.astype(np.float64))


def h0_deaths(points: np.ndarray, method: Method = "auto") -> np.ndarray:
    """Sorted finite H0 deaths of ``points`` (n, d); every bar is born at 0.

    ``method``: "ripser" (the reference), "mst" (:func:`minimum_spanning_tree_lengths`, the same
    numbers in double precision), or "auto" = "mst", measured faster at every size in
    ``benchmarks/topology.py``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "ripser":
        return ripser_h0_deaths(points)
    return minimum_spanning_tree_lengths(points)


def persistent_entropy(lifetimes: np.ndarray) -> float | None:
    """H = -sum_k p_k ln p_k with p_k = l_k / L over lifetimes l_k > 0 (shape (m,)); nats.

    Bars of zero length are left out (they carry no persistence); None when none remain."""
    l_ = np.asarray(lifetimes, dtype=np.float64)
    l_ = l_[l_ > 0]
    if len(l_) == 0:
        return None
    p = l_ / l_.sum()
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: one bar gives 0, not -0


def summarize_bars(lifetimes: np.ndarray, mean_neuron_norm: float | None, n_points: int) -> TopologySummary:
    """Definition 8's summary of finite H0 lifetimes (m,) of a cloud of ``n_points`` points (module doc).

    Zero-length bars are dropped before counting m. None for what is undefined: everything but the
    counts when m = 0; the normalized entropy when m = 1 (ln 1 = 0); the ITMO ratio when L = 1."""
    l_ = np.asarray(lifetimes, dtype=np.float64)
    l_ = l_[l_ > 0]
    m = int(len(l_))
    if m == 0:
        return TopologySummary(n_points, 0, None, None, None, None, None, mean_neuron_norm, None)
    total = float(l_.sum())
    h = persistent_entropy(l_)
    normalized = h / math.log(m) if m > 1 else None
    log_total = math.log(total)
    itmo = h / log_total if log_total != 0 else None
    mean = total / m
    scaled = mean / mean_neuron_norm if mean_neuron_norm else None
    return TopologySummary(n_points, m, total, h, normalized, itmo, mean, mean_neuron_norm, scaled)


def layer_topology(weight: np.ndarray, bias: np.ndarray | None = None,
                   method: Method = "auto") -> tuple[TopologySummary, NeuronCloud, np.ndarray]:
    """The neuron cloud of one layer (weight (q, d), optional bias (q,)), its sorted H0 deaths (m,) and
    their summary."""
    cloud = neuron_point_cloud(weight, bias)
    deaths = h0_deaths(cloud.points, method)
    norm = float(np.linalg.norm(cloud.points, axis=1).mean()) if cloud.n_points else None
    return summarize_bars(deaths, norm, cloud.n_points), cloud, deaths
