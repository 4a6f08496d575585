"""Exact leave-one-group-out k-nearest neighbours: the neighbours of a point are taken only outside
its own group (a run, or a data set), so checkpoints of one run never vote for each other."""

from __future__ import annotations

import numpy as np


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances (n, n) between the rows of x (n, p), from ||a||² + ||b||² - 2 a·b (clipped at
    0, diagonal exactly 0)."""
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def group_neighbours(d: np.ndarray, cv_groups: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each point's k nearest points outside its own cv group, nearest first.

    ``d`` (n, n) distances. Where fewer than k points lie outside the group the row is padded with -1.
    """
    n = d.shape[0]
    masked = np.where(cv_groups[:, None] == cv_groups[None, :], np.inf, d)
    k_eff = min(k, n)
    order = np.argsort(masked, axis=1, kind="stable")[:, :k_eff]
    valid = np.isfinite(np.take_along_axis(masked, order, axis=1))
    order = np.where(valid, order, -1)
    if k_eff < k:
        order = np.hstack([order, -np.ones((n, k - k_eff), dtype=int)])
    return order


def knn_vote(neighbours: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority vote of the neighbours' labels (n,), ties to the class met first (the nearest).

    ``neighbours`` (n, k) from :func:`group_neighbours`, ``labels`` (n,) integer classes below
    ``n_classes``; rows without any neighbour predict -1.
    """
    n, k = neighbours.shape
    valid = neighbours >= 0
    lab = np.where(valid, labels[np.maximum(neighbours, 0)], n_classes)  # n_classes = "none"
    counts = np.zeros((n, n_classes + 1), dtype=int)
    np.add.at(counts, (np.repeat(np.arange(n), k), lab.ravel()), 1)
    counts = counts[:, :n_classes]
    first = np.full((n, n_classes + 1), k, dtype=int)
    for j in range(k - 1, -1, -1):
        first[np.arange(n), lab[:, j]] = j
    first = first[:, :n_classes]
    best = counts.max(axis=1) if n_classes else np.zeros(n, dtype=int)
    # among the classes with the top count, the one whose first neighbour is nearest
    score = np.where(counts == best[:, None], first, k + 1)
    pred = score.argmin(axis=1) if n_classes else np.full(n, -1)
    return np.where(best > 0, pred, -1)
