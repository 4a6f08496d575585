"""The named result of every interval estimator."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Two-sided level of every interval the analyses report.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% interval [low, high], optional two-sided p-value, and the number n of
    independent units it rests on, counted in ``unit`` ("runs", "twins", "layer snapshots").

    ``groups`` is the number of groups the statistic was computed within (data sets, say), when it was;
    ``datasets`` the number of distinct data sets among them; ``df`` the degrees of freedom of a t
    interval (inf: a normal or percentile interval). NaN marks what could not be estimated.
    """

    value: float
    low: float
    high: float
    n: int
    unit: str = "rows"
    p: float = math.nan
    groups: int | None = None
    datasets: int | None = None
    df: float = math.inf

    @classmethod
    def missing(cls, n: int = 0, unit: str = "rows", value: float = math.nan, **kw) -> Estimate:
        """An estimate with no interval (too little data)."""
        return cls(value, math.nan, math.nan, n, unit, **kw)

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)
