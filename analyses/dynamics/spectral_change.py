"""How fast a run's loss-Hessian spectra change: the scale-free (shape) distance of two spectra, the
scale-relative distance it replaced, and the rate of change per e-fold of optimizer steps between
consecutive spectral snapshots."""

from __future__ import annotations

import math

import numpy as np

#: Common top part compared when a spectrum is incomplete (the engine's Lanczos top-k).
PARTIAL_TOP_K = 8
#: Floor of the rate before the logarithm (a rate of 1e-6 per e-fold is "no change").
RATE_FLOOR = 1e-6


def _common_top(a: np.ndarray, b: np.ndarray, complete: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Both spectra sorted descending and cut to their common part m (the common length when
    ``complete``, else min(len a, len b, PARTIAL_TOP_K)); None when m = 0 or a value is not finite."""
    a = np.sort(np.asarray(a, float))[::-1]
    b = np.sort(np.asarray(b, float))[::-1]
    m = min(len(a), len(b)) if complete else min(len(a), len(b), PARTIAL_TOP_K)
    if m == 0:
        return None
    a, b = a[:m], b[:m]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    return a, b


def shape_distance(a: np.ndarray, b: np.ndarray, complete: bool = True) -> float:
    """Scale-free distance of two spectra: each divided by its own scale, then compared,

        d = ||a[:m] / max|a[:m]| - b[:m] / max|b[:m]| ||_2 / (2 sqrt(m)),

    both sorted descending, m as in :func:`_common_top` (a zero part stays zero). Every entry of a
    normalized spectrum lies in [-1, 1], so d is in [0, 1] (an RMS difference per eigenvalue, halved);
    d(c·a, c'·b) = d(a, b) for any c, c' > 0: a spectrum that only grows or shrinks has d = 0. This is
    the distance of the change rate, since spectra shrink over training and a scale-relative distance
    (:func:`spectral_distance`) counts the shrinkage as change.

    a: (p,), b: (q,). Returns NaN when m = 0 or a value is not finite.
    """
    part = _common_top(a, b, complete)
    if part is None:
        return math.nan
    a, b = part
    sa, sb = float(np.abs(a).max()), float(np.abs(b).max())
    a = a / sa if sa > 0 else a
    b = b / sb if sb > 0 else b
    return float(np.linalg.norm(a - b) / (2 * math.sqrt(len(a))))


def spectral_distance(a: np.ndarray, b: np.ndarray, complete: bool = True) -> float:
    """Scale-relative distance of two spectra: ||b[:m] - a[:m]|| / (||a[:m]|| + ||b[:m]||), both sorted
    descending; m = common length when ``complete`` else min(len a, len b, PARTIAL_TOP_K).

    a: (p,), b: (q,). Returns a value in [0, 1] (0 when both parts are zero), NaN when m = 0 or a value
    is not finite. Not scale-free: a spectrum multiplied by c moves by |c - 1| / (c + 1), so a spectrum
    that only shrinks counts as changing; stored for comparison (``relative_distance``), not segmented.
    """
    part = _common_top(a, b, complete)
    if part is None:
        return math.nan
    a, b = part
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
