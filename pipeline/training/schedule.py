"""Checkpoint schedules: dense early, sparse late.

Metric checkpoints at steps round(T * (k / (K - 1))^2), k = 0..K-1 (T = total optimizer steps):
quadratic spacing puts a quarter of the checkpoints in the first 6 % of training, where the
paper's fast-learning phase is. Duplicates from rounding are dropped, so a short run has fewer.
Spectral snapshots are S of those checkpoints chosen by the same rule over checkpoint positions,
always including the first (step 0, the initialization) and the last.
"""

from __future__ import annotations

import numpy as np


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Mini-batches per epoch; a final batch of a single row is dropped (batch norm needs two)."""
    full, rest = divmod(n_train, batch_size)
    return max(1, full + (1 if rest >= 2 else 0))


def metric_steps(total_steps: int, n_checkpoints: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n_checkpoints) ** 2
    return np.unique(np.round(t * total_steps).astype(np.int64))


def spectral_steps(metric: np.ndarray, n_snapshots: int) -> np.ndarray:
    if n_snapshots >= len(metric):
        return metric.copy()
    if n_snapshots == 1:
        return metric[-1:].copy()
    positions = np.unique(np.round(np.linspace(0.0, 1.0, n_snapshots) ** 2 * (len(metric) - 1)).astype(np.int64))
    return metric[positions]
