"""How fast a run's loss-Hessian spectra change: the scale-free distance of two spectra and the rate of
change per e-fold of optimizer steps between consecutive spectral snapshots."""

from __future__ import annotations

import math

import numpy as np

#: Common top part compared when a spectrum is incomplete (the engine's Lanczos top-k).
PARTIAL_TOP_K = 8
#: Floor of the rate before the logarithm (a rate of 1e-6 per e-fold is "no change").
RATE_FLOOR = 1e-6


def spectral_distance(a: np.ndarray, b: np.ndarray, complete: bool = True) -> float:
    """Scale-free distance of two spectra: ||b[:m] - a[:m]|| / (||a[:m]|| + ||b[:m]||), both sorted
    descending; m = common length when ``complete`` else min(len a, len b, PARTIAL_TOP_K).

    a: (p,), b: (q,). Returns a value in [0, 1] (0 when both parts are zero), NaN when m = 0 or a value
    is not finite.
    """
    a = np.sort(np.asarray(a, float))[::-1]
    b = np.sort(np.asarray(b, float))[::-1]
    m = min(len(a), len(b)) if complete else min(len(a), len(b), PARTIAL_TOP_K)
    if m == 0:
        return math.nan
    a, b = a[:m], b[:m]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    den = float(np.linalg.norm(a) + np.linalg.norm(b))
    return 0.0 if den == 0 else float(np.linalg.norm(b - a) / den)


def change_rates(steps: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """rate_k = distance_k / (ln(steps[k+1] + 1) - ln(steps[k] + 1)).

    steps: (n,) increasing; distances: (n - 1,). Returns (n - 1,)."""
    steps = np.asarray(steps, float)
    span = np.diff(np.log1p(steps))
    return np.asarray(distances, float) / span


def log_rates(rates: np.ndarray) -> np.ndarray:
    """x_k = ln(max(rate_k, RATE_FLOOR)): the series that is segmented (multiplicative changes and noise
    become additive). (n,) -> (n,)."""
    return np.log(np.maximum(np.asarray(rates, float), RATE_FLOOR))
