"""Synthetic layers for the pressure stage's tests."""

from __future__ import annotations

import numpy as np


def layers(n_runs: int = 30, n_layers: int = 4, sign: float = -1.0, noise: float = 0.1, seed: int = 0):
    """Runs (n,), pressure (n,) and an outcome (n,) that falls (sign -1) or rises with ln pressure."""
    rng = np.random.default_rng(seed)
    runs = np.repeat(np.arange(n_runs), n_layers)
    p = rng.lognormal(0, 1, n_runs * n_layers)
    y = sign * np.log(p) + rng.normal(0, noise, len(p))
    return runs, p, y
