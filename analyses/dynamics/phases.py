"""Training phases of one run: change points of its log spectral change rate, the segments named by a
pure rule on their mean rates, adjacent segments of one name merged into a phase."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analyses.dynamics.segmentation import change_points, segment_means
from analyses.dynamics.spectral_change import log_rates

#: After the peak, a segment slower than this fraction of the peak rate is "saturation".
SATURATION_FRACTION = 0.25
#: The paper's phases, in order, and the name of an unsegmented run.
PHASES = ("initial", "fast learning", "fine-tuning", "saturation")
SINGLE_PHASE = "single phase"


def name_segments(mean_rates: Sequence[float], saturation_fraction: float = SATURATION_FRACTION) -> list[str]:
    """Names of consecutive segments from their mean rates r_j: the fastest is "fast learning", those
    before it "initial", those after it "saturation" if r_j < fraction · max r else "fine-tuning"; a
    single segment is "single phase"."""
    r = np.asarray(mean_rates, float)
    if len(r) <= 1:
        return [SINGLE_PHASE] * len(r)
    peak = int(np.nanargmax(r))
    names = []
    for j, v in enumerate(r):
        if j < peak:
            names.append("initial")
        elif j == peak:
            names.append("fast learning")
        else:
            names.append("saturation" if v < saturation_fraction * r[peak] else "fine-tuning")
    return names


@dataclass(frozen=True)
class Segmentation:
    """Result for one run: per rate interval (n,) its raw segment and merged phase index, and the
    phases as (name, first interval, last interval)."""

    segment: np.ndarray
    phase: np.ndarray
    phases: list[tuple[str, int, int]]


def segment_rates(rates: np.ndarray, sigma: float | None = None) -> Segmentation:
    """Change points of ln(max(rate, RATE_FLOOR)), segments named by :func:`name_segments` on their
    mean rates, adjacent equal names merged. rates: (n,) finite. Intervals are indexed 0..n-1."""
    r = np.asarray(rates, float)
    n = len(r)
    cps = change_points(log_rates(r), sigma=sigma) if n else []
    bounds = [0, *cps, n]
    segment = np.zeros(n, dtype=int)
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        segment[a:b] = j
    names = name_segments(segment_means(r, cps)) if n else [SINGLE_PHASE]
    phases: list[tuple[str, int, int]] = []
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if phases and phases[-1][0] == names[j]:
            phases[-1] = (names[j], phases[-1][1], b - 1)
        else:
            phases.append((names[j], a, b - 1))
    phase = np.zeros(n, dtype=int)
    for p, (_, a, b) in enumerate(phases):
        phase[a:b + 1] = p
    return Segmentation(segment, phase, phases)
