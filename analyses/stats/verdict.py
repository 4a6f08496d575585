"""The verdict rule and the verdict rows every claim-testing stage writes.

A stage that speaks to a claim writes ``analysis_<stage>_verdicts`` (:data:`VERDICT_COLUMNS`) through
:func:`write_verdicts`. Each row states the claim, the test, the effect (a number with a sign the
claim predicts), the stage's own 95% confidence interval, n and the unit n counts; and, when the stage
hands over the rows behind it (:class:`analyses.stats.claims.ClaimData`), the effect's two-level
interval (data sets, then runs within them), the confound the claim is tested against with the
baseline's effect beside the claim's, the effect beyond the baseline, its bootstrap p, and the range
of the decisive estimate when one data set or one study is left out.

The verdict rests on the **decisive interval**: that of the effect beyond the baseline when there is a
baseline, else the effect's two-level interval, else (no rows handed over) the stage's interval.
:func:`decide` turns it into

- ``supported``: the interval excludes the null value on the side the claim predicts (either side for a
  claim of a relation whose sign the paper does not state, ``predicted = "nonzero"``) and the point
  estimate lies outside the ``negligible`` band around the null;
- ``not supported``: the interval excludes it on the other side, or lies wholly inside the
  negligible band (a precisely measured absence of the effect);
- ``inconclusive``: otherwise (the interval covers the null, or the point estimate is inside the band),
  or too little data to estimate.

A claim of a magnitude (``predicted = "at_least"``, the paper's R^2 = 0.89) is supported when the
interval's lower end reaches the null minus the band and not supported when its upper end stays below
it. ``band_sensitive`` says whether halving or doubling the band would change the call.
``analysis_verdicts`` adds the Holm adjustment within each paper's family (``p_holm``,
``verdict_adjusted``): a supported call whose Holm-adjusted decisive p is 0.05 or more becomes
inconclusive; the unadjusted call stays in ``verdict``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import duckdb
import numpy as np
import polars as pl

from analyses.stats.claims import Assessment, ClaimData, assess, study_membership
from analyses.stats.estimate import Estimate

Direction = Literal["positive", "negative", "nonzero", "at_least"]
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

VERDICT_COLUMNS: list[tuple[str, str]] = [
    ("stage", "VARCHAR"), ("claim_id", "VARCHAR"), ("source", "VARCHAR"), ("claim", "VARCHAR"),
    ("test", "VARCHAR"), ("effect_name", "VARCHAR"), ("predicted", "VARCHAR"), ("effect", "DOUBLE"),
    ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("null_value", "DOUBLE"), ("n", "INTEGER"),
    ("n_unit", "VARCHAR"), ("p_value", "DOUBLE"), ("verdict", "VARCHAR"), ("detail", "VARCHAR"),
    ("family", "VARCHAR"), ("negligible", "DOUBLE"), ("band_sensitive", "BOOLEAN"),
    ("interval_level", "VARCHAR"), ("n_datasets", "INTEGER"), ("n_runs", "INTEGER"),
    ("effect2_low", "DOUBLE"), ("effect2_high", "DOUBLE"),
    ("confound", "VARCHAR"), ("baseline_name", "VARCHAR"), ("baseline_effect", "DOUBLE"),
    ("baseline_low", "DOUBLE"), ("baseline_high", "DOUBLE"),
    ("beyond_name", "VARCHAR"), ("beyond_effect", "DOUBLE"), ("beyond_low", "DOUBLE"), ("beyond_high", "DOUBLE"),
    ("beyond_null", "DOUBLE"), ("p_decisive", "DOUBLE"),
    ("lodo_low", "DOUBLE"), ("lodo_high", "DOUBLE"), ("lodo_worst", "VARCHAR"),
    ("loso_low", "DOUBLE"), ("loso_high", "DOUBLE"), ("loso_worst", "VARCHAR"),
]
#: What ``analysis_verdicts`` adds to the stages' rows.
COLLECTED_COLUMNS: list[tuple[str, str]] = VERDICT_COLUMNS + [("p_holm", "DOUBLE"), ("verdict_adjusted", "VARCHAR")]


@dataclass(frozen=True)
class Verdict:
    """One tested claim. ``predicted`` is the sign of ``effect - null_value`` the claim predicts,
    "nonzero" when it predicts an effect of unstated sign, or "at_least" for a magnitude the paper
    reports (``null_value``). ``data``, when given, holds the rows and statistics from which
    :func:`write_verdicts` computes the two-level interval, the baseline and the leave-one-out ranges."""

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
    data: ClaimData | None = None

    def __post_init__(self) -> None:
        if self.predicted == "at_least" and self.data is not None and self.data.has_baseline:
            raise ValueError(f"{self.claim_id}: a magnitude claim (at_least) takes no baseline; test the "
                             "baseline in a verdict of its own")

    @classmethod
    def of(cls, estimate: Estimate, claim_id: str, source: str, claim: str, test: str, effect_name: str,
           predicted: Direction, *, with_p: bool = True, **kw) -> Verdict:
        """The verdict on ``estimate``: its value, interval, n and unit (and p, unless ``with_p`` is false)."""
        if with_p and "p_value" not in kw:
            kw["p_value"] = estimate.p
        return cls(claim_id, source, claim, test, effect_name, predicted, estimate.value, estimate.low,
                   estimate.high, estimate.n, estimate.unit, **kw)

    @property
    def family(self) -> str:
        """The paper the claim comes from: the source's leading paper number ("001 §5.6" -> "001")."""
        head = self.source.strip()[:3]
        return head if head.isdigit() else self.source.split()[0] if self.source.strip() else ""

    @property
    def verdict(self) -> str:
        """The call on the stage's own interval (no rows handed over); :meth:`row` decides on the
        decisive interval instead."""
        return decide(self.ci_low, self.ci_high, self.predicted, self.null_value, self.negligible, self.effect)

    def row(self, stage: str, assessment: Assessment | None = None) -> dict:
        """The verdict row (:data:`VERDICT_COLUMNS`), deciding on the decisive interval of ``assessment``."""
        d = asdict(self)
        for k in ("negligible", "data"):
            d.pop(k)
        out = {"stage": stage, **{k: _clean(v) for k, v in d.items()}}
        a = assessment
        has_baseline = a is not None and self.data is not None and self.data.has_baseline
        if a is None or not (has_baseline or (_finite(a.decisive_low) and _finite(a.decisive_high))):
            # no rows handed over, or too few runs for a two-level interval: the stage's interval decides
            lo, hi, point, null, level = self.ci_low, self.ci_high, self.effect, self.null_value, "stage interval only"
            p = self.p_value if _finite(self.p_value) else interval_p(self.effect, lo, hi, _boundary(self))
        else:
            lo, hi, point, null, level, p = (a.decisive_low, a.decisive_high, a.decisive, a.decisive_null,
                                             a.level, a.p)
        call = decide(lo, hi, self.predicted, null, self.negligible, point)
        sensitive = self.negligible > 0 and any(
            decide(lo, hi, self.predicted, null, self.negligible * f, point) != call for f in (0.5, 2.0))
        data = self.data
        extra = {
            "verdict": call, "family": self.family, "negligible": float(self.negligible),
            "band_sensitive": bool(sensitive), "interval_level": level, "p_decisive": p,
            "confound": data.confound if data else "", "baseline_name": data.baseline_name if data else "",
            "beyond_name": (data.beyond_name or f"{self.effect_name} minus baseline") if has_baseline else "",
            "lodo_worst": a.lodo_worst if a else "", "loso_worst": a.loso_worst if a else "",
        }
        if a is not None:
            extra |= {
                "n_datasets": a.n_datasets, "n_runs": a.n_runs, "effect2_low": a.effect_low,
                "effect2_high": a.effect_high, "baseline_effect": a.baseline, "baseline_low": a.baseline_low,
                "baseline_high": a.baseline_high, "lodo_low": a.lodo_low, "lodo_high": a.lodo_high,
                "loso_low": a.loso_low, "loso_high": a.loso_high}
        if has_baseline:
            extra |= {"beyond_effect": a.decisive, "beyond_low": a.decisive_low, "beyond_high": a.decisive_high,
                      "beyond_null": a.decisive_null}
        if a and a.notes:
            out["detail"] = "; ".join(filter(None, [out["detail"], *a.notes]))
        out.update({k: _clean(v) for k, v in extra.items()})
        return out


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def _clean(v):
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _boundary(v: Verdict) -> float:
    return v.null_value - v.negligible if v.predicted == "at_least" else v.null_value


def interval_p(estimate: float | None, low: float | None, high: float | None, null: float) -> float:
    """Two-sided p of ``null`` from a 95% interval, by the normal approximation (Altman and Bland 2011):
    se = (high - low) / (2 z), z = |estimate - null| / se. For verdicts whose stage gives no p-value;
    NaN without a finite interval of positive width."""
    if not (_finite(estimate) and _finite(low) and _finite(high)) or high <= low:
        return math.nan
    from scipy import stats

    z975 = float(stats.norm.ppf(0.975))
    se = (high - low) / (2 * z975)
    return float(2 * stats.norm.sf(abs(estimate - null) / se))


def decide(ci_low: float | None, ci_high: float | None, predicted: Direction, null: float = 0.0,
           negligible: float = 0.0, point: float | None = None) -> str:
    """The verdict for an effect (point estimate ``point``, when given) whose confidence interval is
    [ci_low, ci_high] (see module doc)."""
    if not (_finite(ci_low) and _finite(ci_high)):
        return INCONCLUSIVE
    if predicted == "at_least":
        if ci_high < null - negligible:
            return NOT_SUPPORTED
        return SUPPORTED if ci_low >= null - negligible else INCONCLUSIVE
    if negligible > 0 and null - negligible < ci_low and ci_high < null + negligible:
        return NOT_SUPPORTED
    above, below = ci_low > null, ci_high < null
    if (above and predicted in ("positive", "nonzero")) or (below and predicted in ("negative", "nonzero")):
        if negligible > 0 and _finite(point) and abs(point - null) < negligible:
            return INCONCLUSIVE
        return SUPPORTED
    if above or below:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def holm_adjusted(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (verdict rows) with ``p_holm``, Holm's step-down adjustment of ``p_decisive`` within
    each ``family`` (statsmodels ``multipletests(method="holm")``; a missing p counts as 1, so it
    neither passes nor loosens the others), and ``verdict_adjusted``: ``verdict``, except that a
    supported call with p_holm >= 0.05 is inconclusive."""
    from statsmodels.stats.multitest import multipletests

    p = frame["p_decisive"].fill_null(1.0).fill_nan(1.0).to_numpy().astype(float)
    fam = frame["family"].fill_null("").to_numpy()
    adj = np.ones_like(p)
    for f in np.unique(fam):
        sel = fam == f
        adj[sel] = multipletests(p[sel], method="holm")[1]
    verdict = frame["verdict"].to_numpy()
    adjusted = np.where((verdict == SUPPORTED) & (adj >= 0.05), INCONCLUSIVE, verdict)
    return frame.with_columns(p_holm=pl.Series(adj), verdict_adjusted=pl.Series(adjusted.astype(str)))


def write_verdicts(con: duckdb.DuckDBPyConnection, stage: str, verdicts: Sequence[Verdict]) -> None:
    """(Re)write ``analysis_<stage>_verdicts``, assessing every verdict that hands over its rows
    (:func:`analyses.stats.claims.assess`, with the corpus's study membership)."""
    from analyses.tables import polars_schema, write_declared

    studies = study_membership(con)
    rows = []
    for v in verdicts:
        # the bootstrap p is that of the decisive quantity's own null, except for a magnitude claim
        boundary = _boundary(v) if v.predicted == "at_least" else None
        a = assess(v.data, v.predicted, v.null_value, studies, boundary=boundary) if v.data is not None else None
        rows.append(v.row(stage, a))
    frame = pl.DataFrame(rows, schema=polars_schema(VERDICT_COLUMNS))
    write_declared(con, f"analysis_{stage}_verdicts", VERDICT_COLUMNS, frame)
