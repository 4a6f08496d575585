"""The 2-D UMAP layout of the standardized snapshot vectors (see the stage docstring, "Embedding")."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

#: UMAP n_neighbors = clip(round(sqrt(n)), N_NEIGHBORS_MIN, N_NEIGHBORS_MAX), at most n - 1.
N_NEIGHBORS_MIN, N_NEIGHBORS_MAX = 5, 50
#: UMAP min_dist (umap-learn's default).
MIN_DIST = 0.1
#: Seed of the layout (a fixed random_state also makes umap-learn single-threaded and deterministic).
SEED = 0
#: No embedding below this many snapshots.
MIN_UMAP_SNAPSHOTS = 10


def n_neighbors_for(n: int) -> int:
    """UMAP's n_neighbors for n snapshots: clip(round(sqrt(n)), N_NEIGHBORS_MIN, N_NEIGHBORS_MAX), at
    most n - 1 (and at least 2)."""
    return int(min(max(n - 1, 2), np.clip(round(math.sqrt(n)), N_NEIGHBORS_MIN, N_NEIGHBORS_MAX)))


def embed(z: np.ndarray, seed: int = SEED) -> np.ndarray:
    """2-D UMAP embedding (n, 2) of the standardized snapshot vectors z (n, p); NaN below
    MIN_UMAP_SNAPSHOTS snapshots or without a column."""
    n = z.shape[0]
    if n < MIN_UMAP_SNAPSHOTS or z.shape[1] == 0:
        return np.full((n, 2), np.nan)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "build" / "numba-cache"))
    # the umap-learn library (absolute import: this package is analyses.umap), deferred because
    # importing it costs seconds of numba start-up
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors_for(n), min_dist=MIN_DIST,
                                random_state=seed, n_jobs=1)
            emb = reducer.fit_transform(z)
        except (ValueError, TypeError, np.linalg.LinAlgError):  # spectral init failing on a tiny graph
            reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors_for(n), min_dist=MIN_DIST,
                                random_state=seed, n_jobs=1, init="random")
            emb = reducer.fit_transform(z)
    return np.asarray(emb, dtype=float)
