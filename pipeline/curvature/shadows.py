"""Geometric shadows: block pairs joined by a computational path whose curvature coupling fades.

Coupling decays with distance along any chain, so a pair is judged against its peers: the relative
coupling of a path pair (i, j) at path length l is

    r_ij = kappa_ij / median{kappa_kl : k < l, path length l},

over the pairs of the same map. A pair is a *shadow* when r_ij < SHADOW_RATIO in every map of a
window of checkpoints (a one-off dip is noise, not a shadow). A pair whose length group holds no
other pair has r = 1 and is never a shadow. A block is *collapsed* when every length-1 pair it
belongs to is a shadow: curvature stops at the block itself, which calls for widening or an
adapter rather than a skip around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A pair couples less than this fraction of the median coupling of pairs at its path length.
SHADOW_RATIO = 0.5
#: Spectral snapshots a shadow must persist over.
SHADOW_WINDOW = 3


def relative_coupling(kappa: np.ndarray, pair_lengths: np.ndarray) -> np.ndarray:
    """(B, B) r_ij = kappa_ij / median kappa of the pairs at the same path length; NaN on the
    diagonal and for pairs with no path."""
    out = np.full(kappa.shape, np.nan)
    iu = np.triu_indices(kappa.shape[0], k=1)
    for length in np.unique(pair_lengths[iu]):
        if length <= 0:
            continue
        mask = np.zeros(kappa.shape, bool)
        mask[iu] = pair_lengths[iu] == length
        values = kappa[mask]
        median = np.nanmedian(values) if np.isfinite(values).any() else np.nan
        if median > 0:
            out[mask] = kappa[mask] / median
    lower = np.tril_indices(kappa.shape[0], k=-1)
    out[lower] = out.T[lower]
    return out


@dataclass(frozen=True)
class Shadow:
    block_i: int
    block_j: int
    path_length: int
    #: largest and mean relative coupling over the window
    max_relative: float
    mean_relative: float


def find_shadows(kappas: list[np.ndarray], pair_lengths: np.ndarray | list[np.ndarray],
                 ratio: float = SHADOW_RATIO) -> list[Shadow]:
    """Pairs i < j with a path whose relative coupling is below ``ratio`` in every map of ``kappas``
    (the window, oldest first), weakest first. ``pair_lengths`` is one matrix for every map, or one
    per map (a gated edge added inside the window shortens paths: each map is judged against the
    pairs at the same length in its own graph); the reported length is the last map's."""
    lengths = list(pair_lengths) if isinstance(pair_lengths, list) else [pair_lengths] * len(kappas)
    rel = np.stack([relative_coupling(k, n) for k, n in zip(kappas, lengths, strict=True)])
    last = lengths[-1]
    out = []
    for i, j in zip(*np.triu_indices(last.shape[0], k=1), strict=True):
        r = rel[:, i, j]
        if all(n[i, j] > 0 for n in lengths) and np.isfinite(r).all() and (r < ratio).all():
            out.append(Shadow(int(i), int(j), int(last[i, j]), float(r.max()), float(r.mean())))
    return sorted(out, key=lambda s: (s.max_relative, s.block_i, s.block_j))


def collapsed_blocks(shadows: list[Shadow], pair_lengths: np.ndarray) -> list[int]:
    """Blocks all of whose length-1 pairs are shadows."""
    short = {(s.block_i, s.block_j) for s in shadows if s.path_length == 1}
    out = []
    for b in range(pair_lengths.shape[0]):
        pairs = [(min(b, o), max(b, o)) for o in range(pair_lengths.shape[0]) if o != b and pair_lengths[b, o] == 1]
        if pairs and all(p in short for p in pairs):
            out.append(b)
    return out
