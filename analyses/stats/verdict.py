"""The verdict rule and the verdict rows every claim-testing stage writes.

A stage that speaks to a claim writes ``analysis_<stage>_verdicts`` (:data:`VERDICT_COLUMNS`) through
:func:`analyses.kit.tables.write_verdicts`. Each row states the claim, the test, the effect (a number with the sign the
claim predicts) with its 95% and 90% intervals, n and the unit n counts, how the interval was made
(``interval_method``, with tau^2 and I^2 where data sets were pooled), the negligible band and its
units, the confound the estimand holds fixed with the confound's own effect beside it, the stage's
own estimate (``stage_effect``), and the range of the effect with one data set or one study left out.

**The effect is the decisive estimate**: when the stage hands over its rows
(:class:`analyses.stats.claims.ClaimData`) it is the estimand pooled across data sets
(:func:`analyses.stats.claims.assess`); otherwise the stage's own estimate and interval. :func:`decide`
turns it into

- ``supported``: the 95% interval excludes the null on the side the claim predicts (either side for a
  claim of a relation whose sign the paper does not state, ``predicted = "nonzero"``) and the point
  estimate lies outside the ``negligible`` band around the null;
- ``not supported``: the 95% interval excludes the null on the other side, or the 90% interval lies
  inside the band: two one-sided tests at 5% each (TOST) show the effect is negligible;
- ``inconclusive``: otherwise, or too little data to estimate.

A claim of a magnitude (``predicted = "at_least"``, the paper's R^2 = 0.89) is supported when the
interval's lower end reaches the null minus the band and not supported when its upper end stays below
it. ``band_sensitive`` says whether halving or doubling the band would change the call.

**Two rows for a reframed claim**: ``role = "paper"`` is the claim tested as the paper states it
(against chance or no structure), ``role = "sharpened"`` the same claim beyond a confound
(initialization, training time, fit); both carry the paper row's id in ``pair``. ``analysis_verdicts``
reads a pair together (``reading``: "holds as stated, and beyond <confound>", "holds as stated, but
not beyond <confound>", ...).

**Holm**: ``analysis_verdicts`` adjusts, within each paper's family, the p-values of the rows that
are testable (a finite p), distinct (one row per estimate and interval) and confirmatory (not of an
:data:`EXPLORATORY_FAMILIES` paper): ``in_holm``, ``p_holm``, and ``verdict_adjusted`` (a supported
call whose Holm-adjusted p is 0.05 or more is inconclusive). Exploratory rows keep their call in
``verdict_adjusted`` and say so in ``reading``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import polars as pl

from analyses.stats.claims import ClaimData, Inference, assess
from analyses.stats.estimate import CONFIDENCE, Estimate
from analyses.stats.meta import EQUIVALENCE_CONFIDENCE, t_interval

Direction = Literal["positive", "negative", "nonzero", "at_least"]
Role = Literal["paper", "sharpened"]
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
#: Papers whose verdicts are exploratory: outside the Holm families, and marked so in the report.
EXPLORATORY_FAMILIES = {
    "000": "paper 000 is a short abstract that states no testable claim: its verdicts test this project's "
           "reading of it (gradient pressure, the Riemannian metric) and are exploratory",
}
#: The family-wise level of the Holm adjustment.
HOLM_ALPHA = 0.05

VERDICT_COLUMNS: list[tuple[str, str]] = [
    ("stage", "VARCHAR"), ("claim_id", "VARCHAR"), ("source", "VARCHAR"), ("family", "VARCHAR"),
    ("role", "VARCHAR"), ("pair", "VARCHAR"), ("exploratory", "BOOLEAN"),
    ("claim", "VARCHAR"), ("test", "VARCHAR"), ("effect_name", "VARCHAR"), ("predicted", "VARCHAR"),
    ("null_value", "DOUBLE"), ("effect", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"),
    ("ci90_low", "DOUBLE"), ("ci90_high", "DOUBLE"), ("p_value", "DOUBLE"), ("df", "DOUBLE"),
    ("interval_method", "VARCHAR"), ("tau2", "DOUBLE"), ("i2", "DOUBLE"),
    ("n", "INTEGER"), ("n_unit", "VARCHAR"), ("n_datasets", "INTEGER"), ("n_runs", "INTEGER"),
    ("negligible", "DOUBLE"), ("band_units", "VARCHAR"), ("band_sensitive", "BOOLEAN"), ("verdict", "VARCHAR"),
    ("confound", "VARCHAR"), ("baseline_name", "VARCHAR"), ("baseline_effect", "DOUBLE"),
    ("stage_effect", "DOUBLE"), ("stage_low", "DOUBLE"), ("stage_high", "DOUBLE"),
    ("lodo_low", "DOUBLE"), ("lodo_high", "DOUBLE"), ("lodo_worst", "VARCHAR"),
    ("loso_low", "DOUBLE"), ("loso_high", "DOUBLE"), ("loso_worst", "VARCHAR"),
    ("detail", "VARCHAR"),
]
#: What ``analysis_verdicts`` adds to the stages' rows.
COLLECTED_COLUMNS: list[tuple[str, str]] = VERDICT_COLUMNS + [
    ("in_holm", "BOOLEAN"), ("p_holm", "DOUBLE"), ("verdict_adjusted", "VARCHAR"), ("reading", "VARCHAR")]


def family_of(source: str) -> str:
    """The paper a source names: its leading paper number ("001 §5.6" -> "001")."""
    s = source.strip()
    return s[:3] if s[:3].isdigit() else (s.split()[0] if s else "")


@dataclass(frozen=True)
class Verdict:
    """One tested claim (see the module doc). ``predicted`` is the sign of ``effect - null_value`` the
    claim predicts, "nonzero" for an effect of unstated sign, or "at_least" for a magnitude the paper
    reports (``null_value``). ``effect``, ``ci_low``, ``ci_high``, ``p_value`` and ``df`` are the stage's
    own estimate; ``data``, when given, holds the rows and the estimand that decide the call.
    ``negligible`` (> 0) is the band around the null inside which an effect is no effect, in
    ``band_units``; ``role`` and ``pair`` place the row in a paper/sharpened pair."""

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
    band_units: str = ""
    detail: str = ""
    data: ClaimData | None = None
    role: Role = "paper"
    pair: str = ""
    df: float = math.inf

    def __post_init__(self) -> None:
        if not (self.negligible > 0 and self.band_units):
            raise ValueError(f"{self.claim_id}: every verdict declares its negligible band (> 0) and the band's "
                             "units, so that an absent effect can be shown (equivalence)")
        if self.role == "sharpened" and not self.pair:
            raise ValueError(f"{self.claim_id}: a sharpened row names the paper row it sharpens (pair)")

    @classmethod
    def of(cls, estimate: Estimate, claim_id: str, source: str, claim: str, test: str, effect_name: str,
           predicted: Direction, *, with_p: bool = True, **kw) -> Verdict:
        """The verdict on ``estimate``: its value, interval, n, unit and df (and p, unless ``with_p`` is false)."""
        if with_p and "p_value" not in kw:
            kw["p_value"] = estimate.p
        kw.setdefault("df", estimate.df)
        return cls(claim_id, source, claim, test, effect_name, predicted, estimate.value, estimate.low,
                   estimate.high, estimate.n, estimate.unit, **kw)

    @property
    def family(self) -> str:
        return family_of(self.source)

    @property
    def exploratory(self) -> bool:
        return self.family in EXPLORATORY_FAMILIES

    @property
    def verdict(self) -> str:
        """The call on the stage's own estimate; :meth:`row` decides on the pooled one when given."""
        return self.row("")["verdict"]

    @property
    def boundary(self) -> float:
        """The value the p-value is computed at: the null, or for a magnitude the null minus the band."""
        return self.null_value - self.negligible if self.predicted == "at_least" else self.null_value

    def _stage_inference(self) -> Inference:
        """The stage's own estimate as the deciding one (no rows handed over): its interval, with the
        90% interval and p from the t_df (normal for df inf) that the interval implies."""
        est, lo, hi = (_num(self.effect), _num(self.ci_low), _num(self.ci_high))
        lo90 = hi90 = p = math.nan
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo and math.isfinite(est) and lo <= est <= hi:
            # each half shrunk on its own (a Fisher-z or percentile interval is not symmetric), and p from
            # the half on the null's side
            ratio = _quantile(EQUIVALENCE_CONFIDENCE, self.df) / _quantile(CONFIDENCE, self.df)
            lo90, hi90 = est - (est - lo) * ratio, est + (hi - est) * ratio
            p = interval_p(est, lo, hi, self.boundary, self.df)
        if _finite(self.p_value):
            p = float(self.p_value)
        return Inference(est, lo, hi, lo90, hi90, p, self.df, math.nan, math.nan,
                         "the stage's own interval", 0, 0, self.n)

    def row(self, stage: str, inference: Inference | None = None) -> dict:
        """The verdict row (:data:`VERDICT_COLUMNS`), deciding on ``inference`` (the stage's own estimate
        when None)."""
        a = inference or self._stage_inference()
        call = decide(a.low, a.high, self.predicted, self.null_value, self.negligible, a.value, a.low90, a.high90)
        sensitive = any(decide(a.low, a.high, self.predicted, self.null_value, self.negligible * f, a.value,
                               a.low90, a.high90) != call for f in (0.5, 2.0))
        d = asdict(self)
        for k in ("data", "p_value", "effect", "ci_low", "ci_high", "df", "n"):
            d.pop(k)
        data = self.data
        out = {"stage": stage, **d, "family": self.family, "exploratory": self.exploratory,
               "effect": a.value, "ci_low": a.low, "ci_high": a.high, "ci90_low": a.low90, "ci90_high": a.high90,
               "p_value": a.p, "df": a.df, "interval_method": a.method, "tau2": a.tau2, "i2": a.i2,
               "n": a.n_units if inference is not None else self.n,
               "n_datasets": a.n_datasets if inference is not None else None,
               "n_runs": a.n_runs if inference is not None else None,
               "band_sensitive": bool(sensitive), "verdict": call,
               "confound": data.confound if data else "", "baseline_name": data.baseline_name if data else "",
               "baseline_effect": a.baseline, "stage_effect": self.effect, "stage_low": self.ci_low,
               "stage_high": self.ci_high, "lodo_low": a.lodo_low, "lodo_high": a.lodo_high,
               "lodo_worst": a.lodo_worst, "loso_low": a.loso_low, "loso_high": a.loso_high,
               "loso_worst": a.loso_worst,
               "detail": "; ".join(filter(None, [self.detail, *a.notes]))}
        return {k: _clean(v) for k, v in out.items()}


def _num(v) -> float:
    return float(v) if _finite(v) else math.nan


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def _clean(v):
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _quantile(level: float, df: float) -> float:
    """The two-sided ``level`` quantile of the normal (df inf) or t_df distribution."""
    from scipy import stats

    return float(stats.norm.ppf(0.5 + level / 2) if not math.isfinite(df) else stats.t.ppf(0.5 + level / 2, df))


def interval_p(estimate: float | None, low: float | None, high: float | None, null: float,
               df: float = math.inf) -> float:
    """Two-sided p of ``null`` from a 95% interval on ``df`` degrees of freedom (normal for inf; Altman
    and Bland 2011), read from the half of the interval on the null's side (a Fisher-z or percentile
    interval is not symmetric): se = half / t_df, t = |estimate - null| / se. For stages that give no
    p-value; NaN without a finite interval of positive width around the estimate."""
    if not (_finite(estimate) and _finite(low) and _finite(high)) or not low <= estimate <= high or high <= low:
        return math.nan
    half = (estimate - low) if null <= estimate else (high - estimate)
    if half <= 0:
        return math.nan
    return t_interval(float(estimate), half / _quantile(CONFIDENCE, df), df, null).p


def decide(ci_low: float | None, ci_high: float | None, predicted: Direction, null: float = 0.0,
           negligible: float = 0.0, point: float | None = None, low90: float | None = None,
           high90: float | None = None) -> str:
    """The verdict for an effect (point estimate ``point``) whose 95% interval is [ci_low, ci_high] and
    90% interval [low90, high90] (the 95% one where not given); see the module doc."""
    if not (_finite(ci_low) and _finite(ci_high)) or not ci_high > ci_low:
        return INCONCLUSIVE  # never a decision on a zero-width interval
    if predicted == "at_least":
        if ci_high < null - negligible:
            return NOT_SUPPORTED
        return SUPPORTED if ci_low >= null - negligible else INCONCLUSIVE
    if equivalent(ci_low, ci_high, predicted, null, negligible, low90, high90):
        return NOT_SUPPORTED
    above, below = ci_low > null, ci_high < null
    if (above and predicted in ("positive", "nonzero")) or (below and predicted in ("negative", "nonzero")):
        if negligible > 0 and _finite(point) and abs(point - null) < negligible:
            return INCONCLUSIVE
        return SUPPORTED
    if above or below:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def equivalent(ci_low: float | None, ci_high: float | None, predicted: Direction, null: float = 0.0,
               negligible: float = 0.0, low90: float | None = None, high90: float | None = None) -> bool:
    """Whether the effect is shown negligible (equivalence, two one-sided tests at 5 %): its 90% interval
    (the 95% one where not given) lies inside the band null ± negligible; never for ``at_least`` claims."""
    if predicted == "at_least" or not negligible > 0:
        return False
    eq_low, eq_high = (low90, high90) if _finite(low90) and _finite(high90) else (ci_low, ci_high)
    return _finite(eq_low) and _finite(eq_high) and null - negligible < eq_low and eq_high < null + negligible


def holm_adjusted(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (verdict rows) with ``in_holm``, ``p_holm`` and ``verdict_adjusted``: Holm's step-down
    adjustment (statsmodels ``multipletests(method="holm")``) of ``p_value`` within each ``family`` over
    the rows that are testable (finite p), confirmatory (not exploratory) and distinct (the first of rows
    with the same effect, interval, null and direction enters; its copies share its ``p_holm``). A
    supported call with p_holm >= :data:`HOLM_ALPHA` (or none: an untestable confirmatory row) is
    inconclusive in ``verdict_adjusted``; exploratory rows keep their call."""
    from statsmodels.stats.multitest import multipletests

    p = frame["p_value"].cast(pl.Float64).fill_null(math.nan).to_numpy().astype(float)
    fam = frame["family"].fill_null("").to_numpy()
    exploratory = frame["exploratory"].fill_null(False).to_numpy().astype(bool)
    key = frame.select(pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("") for c in
                                      ("family", "effect", "ci_low", "ci_high", "null_value", "predicted")],
                                     separator="|")).to_series().to_numpy()
    seen: set[str] = set()
    in_holm = np.zeros(len(p), bool)
    for i in range(len(p)):
        if np.isfinite(p[i]) and not exploratory[i] and key[i] not in seen:
            in_holm[i] = True
            seen.add(key[i])
    adj = np.full(len(p), np.nan)
    for f in np.unique(fam):
        sel = (fam == f) & in_holm
        if sel.any():
            adj[sel] = multipletests(p[sel], method="holm")[1]
    # a duplicate row shares the adjusted p of the row that entered the family for it
    first = {key[i]: adj[i] for i in range(len(p)) if in_holm[i]}
    adj = np.array([adj[i] if in_holm[i] else first.get(key[i], np.nan) for i in range(len(p))], float)
    tested = np.isfinite(adj)
    verdict = frame["verdict"].to_numpy()
    adjusted = np.where(tested & (verdict == SUPPORTED) & ~(adj < HOLM_ALPHA), INCONCLUSIVE, verdict)
    adjusted = np.where(~tested & (verdict == SUPPORTED) & ~exploratory, INCONCLUSIVE, adjusted)
    out = frame.with_columns(in_holm=pl.Series(in_holm), p_holm=pl.Series(adj).fill_nan(None),
                             verdict_adjusted=pl.Series(adjusted.astype(str)))
    return out.with_columns(reading=pl.Series(readings(out)))


def _short(confound: str) -> str:
    """A confound's name without its explanation: "weight scale (ln weight variance ...)" -> "weight scale"."""
    return confound.split(" (")[0].split(":")[0].strip() or "its confound"


def pair_reading(paper: str, sharpened: str, confound: str) -> str:
    """How a paper row's call and one sharpened row's call read together."""
    beyond = _short(confound)
    if paper == SUPPORTED and sharpened == SUPPORTED:
        return f"holds as stated, and beyond {beyond}"
    if paper == SUPPORTED and sharpened == NOT_SUPPORTED:
        return f"holds as stated, but not beyond {beyond} (structural)"
    if paper == SUPPORTED:
        return f"holds as stated; beyond {beyond} undecided"
    if paper == NOT_SUPPORTED:
        return "does not hold as stated"
    if sharpened == SUPPORTED:
        return f"undecided as stated, but holds beyond {beyond}"
    return "undecided as stated"


def readings(frame: pl.DataFrame) -> list[str]:
    """One sentence per row reading a paper/sharpened pair together (module doc): a sharpened row against
    its paper row, a paper row against each of its sharpened rows; exploratory rows say so."""
    rows = list(frame.iter_rows(named=True))
    paper = {r["claim_id"]: r for r in rows if r["role"] == "paper"}
    sharpened: dict[str, list[dict]] = {}
    for r in rows:
        if r["role"] == "sharpened":
            sharpened.setdefault(r["pair"], []).append(r)
    out = []
    for r in rows:
        if r["exploratory"]:
            out.append(f"exploratory, outside Holm: paper {r['family']} states no testable claim")
        elif r["role"] == "sharpened" and r["pair"] in paper:
            out.append(pair_reading(paper[r["pair"]]["verdict_adjusted"], r["verdict_adjusted"], r["confound"]))
        elif r["role"] == "paper" and r["claim_id"] in sharpened:
            out.append("; ".join(dict.fromkeys(pair_reading(r["verdict_adjusted"], s["verdict_adjusted"],
                                                            s["confound"]) for s in sharpened[r["claim_id"]])))
        else:
            out.append("")
    return out


def verdict_rows(stage: str, verdicts: Sequence[Verdict],
                 studies: Mapping[str, tuple[str, ...]]) -> list[dict]:
    """The rows of ``analysis_<stage>_verdicts`` (:data:`VERDICT_COLUMNS`), each verdict that hands over
    its rows assessed (:func:`analyses.stats.claims.assess`) with ``studies`` (run_id -> its studies)."""
    return [v.row(stage, assess(v.data, v.predicted, v.null_value, studies, boundary=v.boundary)
                  if v.data is not None else None) for v in verdicts]
