"""The verdict rule and the verdict rows every claim-testing stage writes.

A stage that speaks to a claim writes ``analysis_<stage>_verdicts`` (:data:`VERDICT_COLUMNS`) through
:func:`write_verdicts`. Each row states the claim, the test, the effect (a number with a sign the
claim predicts), its 95% confidence interval, n and the unit n counts, and a verdict from :func:`decide`:

- ``supported``: the interval excludes the null value on the side the claim predicts (either side for a
  claim of a relation whose sign the paper does not state, ``predicted = "nonzero"``);
- ``not supported``: the interval excludes it on the other side, or lies wholly inside the
  ``negligible`` band around the null (a precisely measured absence of the effect);
- ``inconclusive``: otherwise (the interval covers the null), or too little data to estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import duckdb
import numpy as np
import polars as pl

from analyses.stats.estimate import Estimate

Direction = Literal["positive", "negative", "nonzero"]
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

VERDICT_COLUMNS: list[tuple[str, str]] = [
    ("stage", "VARCHAR"), ("claim_id", "VARCHAR"), ("source", "VARCHAR"), ("claim", "VARCHAR"),
    ("test", "VARCHAR"), ("effect_name", "VARCHAR"), ("predicted", "VARCHAR"), ("effect", "DOUBLE"),
    ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("null_value", "DOUBLE"), ("n", "INTEGER"),
    ("n_unit", "VARCHAR"), ("p_value", "DOUBLE"), ("verdict", "VARCHAR"), ("detail", "VARCHAR"),
]


@dataclass(frozen=True)
class Verdict:
    """One tested claim. ``predicted`` is the sign of ``effect - null_value`` the claim predicts, or
    "nonzero" when it predicts an effect of unstated sign."""

    claim_id: str
    source: str
    claim: str
    test: str
    effect_name: str
    predicted: Direction
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_unit: str
    p_value: float | None = None
    null_value: float = 0.0
    negligible: float = 0.0
    detail: str = ""

    @classmethod
    def of(cls, estimate: Estimate, claim_id: str, source: str, claim: str, test: str, effect_name: str,
           predicted: Direction, *, with_p: bool = True, **kw) -> Verdict:
        """The verdict on ``estimate``: its value, interval, n and unit (and p, unless ``with_p`` is false)."""
        if with_p and "p_value" not in kw:
            kw["p_value"] = estimate.p
        return cls(claim_id, source, claim, test, effect_name, predicted, estimate.value, estimate.low,
                   estimate.high, estimate.n, estimate.unit, **kw)

    @property
    def verdict(self) -> str:
        return decide(self.ci_low, self.ci_high, self.predicted, self.null_value, self.negligible)

    def row(self, stage: str) -> dict:
        d = asdict(self)
        d.pop("negligible")
        return {"stage": stage, **{k: _clean(v) for k, v in d.items()}, "verdict": self.verdict}


def _clean(v):
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def decide(ci_low: float | None, ci_high: float | None, predicted: Direction, null: float = 0.0,
           negligible: float = 0.0) -> str:
    """The verdict for an effect whose confidence interval is [ci_low, ci_high] (see module doc)."""
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return INCONCLUSIVE
    if negligible > 0 and null - negligible < ci_low and ci_high < null + negligible:
        return NOT_SUPPORTED
    above, below = ci_low > null, ci_high < null
    if (above and predicted in ("positive", "nonzero")) or (below and predicted in ("negative", "nonzero")):
        return SUPPORTED
    if above or below:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def write_verdicts(con: duckdb.DuckDBPyConnection, stage: str, verdicts: Sequence[Verdict]) -> None:
    """(Re)write ``analysis_<stage>_verdicts``."""
    from analyses.tables import polars_schema, write_declared

    frame = pl.DataFrame([v.row(stage) for v in verdicts], schema=polars_schema(VERDICT_COLUMNS))
    write_declared(con, f"analysis_{stage}_verdicts", VERDICT_COLUMNS, frame)

