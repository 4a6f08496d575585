"""Does the top-pressure layer of a run coincide with its slowest-improving layer more often than
chance?"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analyses.pressure.rank_correlation import MIN_LAYERS, SEED
from analyses.stats import N_BOOTSTRAP, Estimate, bootstrap_mean_interval


@dataclass(frozen=True)
class Coincidence:
    """The result of :func:`coincidence`: ``rate`` and ``chance`` (means over runs), ``effect`` = rate -
    chance with its bootstrap-over-runs interval (NaN with fewer than 3 runs; n = runs), ``hits`` {run: 0/1},
    ``chances`` {run: 1/(its layers)}."""

    rate: float
    chance: float
    effect: Estimate
    hits: dict[str, int]
    chances: dict[str, float] = field(default_factory=dict)


def coincidence(runs, pressure, improvement, min_layers: int = MIN_LAYERS, n_boot: int = N_BOOTSTRAP,
                seed: int = SEED) -> Coincidence:
    """Per run (``runs``, ``pressure``, ``improvement``: (n,), one entry per layer; layers with both values
    finite, at least ``min_layers``): ``hit`` = 1 when the argmax of ``pressure`` is the argmin of
    ``improvement``, ``chance`` = 1/(its layers); the effect is the mean over runs of hit - chance, its
    interval a percentile bootstrap over runs (``n_boot`` resamples, seeded ``seed``)."""
    runs, p, imp = np.asarray(runs), np.asarray(pressure, float), np.asarray(improvement, float)
    ok = np.isfinite(p) & np.isfinite(imp)
    hits, chance = {}, {}
    for r in dict.fromkeys(runs[ok].tolist()):
        m = ok & (runs == r)
        if m.sum() >= min_layers:
            hits[r] = int(np.argmax(p[m]) == np.argmin(imp[m]))
            chance[r] = 1.0 / m.sum()
    n = len(hits)
    if n == 0:
        return Coincidence(math.nan, math.nan, Estimate.missing(n, "runs"), hits)
    h, c = np.array(list(hits.values()), float), np.array(list(chance.values()))
    low = high = math.nan
    if n >= 3 and n_boot > 0:
        low, high = bootstrap_mean_interval(h - c, n_boot, np.random.default_rng(seed))
    return Coincidence(float(h.mean()), float(c.mean()), Estimate(float((h - c).mean()), low, high, n, "runs"), hits,
                       chance)
