"""The report's opening: the corpus in one line and the designated verdicts by paper.

A *designated* verdict is one of the rows each paper's Holm family runs over (``in_holm``: the paper's
testable, distinct, confirmatory rows); its call is ``verdict_adjusted``. Every other row (paper 000's
exploratory ones, rows without a testable design, duplicates of a designated row) stays in the verdict
table, marked as such, and out of the summary.

Each paper's card lists its decided calls (supported, not supported) with their effects and 95 %
intervals, then its inconclusive ones as compact links whose tooltip carries the same numbers; every
entry links to its row in the verdict table, which links to the stage section with the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analyses.kit.presentation import fmt_number
from analyses.stats.verdict import equivalent

#: The five source papers, by the number their verdicts' ``family`` carries.
PAPER_TITLES = {
    "000": "gradient pressure and bottlenecks",
    "001": "local properties through layer Hessians",
    "002": "curvature propagation between blocks",
    "003": "topology of the weights",
    "004": "margins, curvature and the gap",
}
#: The calls in the order a reader scans them, each with the CSS class the page colours it by.
CALLS = {"supported": "supported", "not supported": "not-supported", "inconclusive": "inconclusive"}


@dataclass(frozen=True)
class VerdictEntry:
    """One verdict as the summary and the verdict table show it."""

    claim_id: str
    label: str
    claim: str
    call: str
    role: str
    effect_name: str
    value_text: str
    predicts: str
    stage: str
    designated: bool
    exploratory: bool

    @property
    def anchor(self) -> str:
        """The id of the verdict's row in the verdict table."""
        return f"v-{self.claim_id}"

    @property
    def css(self) -> str:
        return CALLS.get(self.call, "inconclusive")

    @property
    def effect_text(self) -> str:
        """The effect named, with its value and interval, and what the claim predicts of it."""
        return f"{self.effect_name} = {self.value_text}; the claim predicts {self.predicts}"


@dataclass
class PaperSummary:
    """One paper's designated verdicts: decided calls first, then the inconclusive ones."""

    paper: str
    title: str
    decided: list[VerdictEntry] = field(default_factory=list)
    open: list[VerdictEntry] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        entries = self.decided + self.open
        return {call: sum(e.call == call for e in entries) for call in CALLS}


def value_text(v: dict) -> str:
    """The decisive effect and the interval that decided its call: the 95 % one, e.g. ``0.31 [0.12, 0.48]``,
    or, for a claim shown negligible (equivalence), the 90 % one inside the band, e.g. ``-0.02 (90 %
    [-0.05, 0.01] within ±0.1)``."""
    if (v.get("verdict_adjusted") or v.get("verdict")) == "not supported" and equivalent(
            v.get("ci_low"), v.get("ci_high"), v.get("predicted"), v.get("null_value") or 0.0,
            v.get("negligible") or 0.0, v.get("ci90_low"), v.get("ci90_high")):
        low90, high90 = ((v["ci90_low"], v["ci90_high"]) if v.get("ci90_low") is not None
                         and v.get("ci90_high") is not None else (v["ci_low"], v["ci_high"]))
        return (f"{fmt_number(v.get('effect'))} (90 % [{fmt_number(low90)}, {fmt_number(high90)}] within "
                f"±{fmt_number(v.get('negligible'))})")
    interval = (f" [{fmt_number(v['ci_low'])}, {fmt_number(v['ci_high'])}]"
                if v.get("ci_low") is not None and v.get("ci_high") is not None else " (no interval)")
    return f"{fmt_number(v.get('effect'))}{interval}"


def predicts(v: dict) -> str:
    """What the claim predicts of the effect, e.g. ``> 0`` or ``>= 0.89`` or ``!= 0.5``."""
    sign = {"positive": ">", "negative": "<", "nonzero": "≠", "at_least": "≥"}.get(v.get("predicted"), "vs")
    return f"{sign} {fmt_number(v.get('null_value'))}"


def entry(v: dict) -> VerdictEntry:
    """A verdict row of ``analysis_verdicts`` (as a dict) as the page shows it; its label is the claim id
    without the stage's prefix."""
    cid, stage = v["claim_id"], v["stage"]
    label = cid[len(stage) + 1:] if cid.startswith(stage + ".") else cid
    return VerdictEntry(claim_id=cid, label=label.replace("_", " "), claim=v["claim"] or "",
                        call=v.get("verdict_adjusted") or v["verdict"], role=v.get("role") or "",
                        effect_name=v.get("effect_name") or "effect", value_text=value_text(v),
                        predicts=predicts(v), stage=stage,
                        designated=bool(v.get("in_holm")), exploratory=bool(v.get("exploratory")))


def paper_summaries(verdicts: list[dict]) -> list[PaperSummary]:
    """The designated verdicts grouped by paper (in paper order), decided calls first."""
    papers: dict[str, PaperSummary] = {}
    for v in sorted(verdicts, key=lambda v: (v["family"] or "", v["claim_id"])):
        e = entry(v)
        if not e.designated:
            continue
        paper = v["family"] or "?"
        s = papers.setdefault(paper, PaperSummary(paper, PAPER_TITLES.get(paper, f"paper {paper}")))
        (s.open if e.call == "inconclusive" else s.decided).append(e)
    for s in papers.values():
        s.decided.sort(key=lambda e: (e.call != "supported", e.claim_id))
    return [papers[p] for p in sorted(papers)]


def table_order(verdicts: list[dict]) -> list[dict]:
    """The verdict table's rows: designated first (by paper, decided before inconclusive), then the rest."""
    rank = {call: i for i, call in enumerate(CALLS)}
    return sorted(verdicts, key=lambda v: (not v.get("in_holm"), v["family"] or "",
                                           rank.get(v.get("verdict_adjusted") or v["verdict"], 3), v["claim_id"]))


def corpus_line(con) -> str:
    """The corpus in one sentence: runs and their fate, data sets by task, studies, snapshots; and how many
    runs score no better than their data set's trivial predictor (``analysis_overview.beats_baseline``)."""
    runs, diverged, datasets, cls, reg = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE status = 'diverged'), count(DISTINCT dataset),
               count(DISTINCT dataset) FILTER (WHERE task = 'classification'),
               count(DISTINCT dataset) FILTER (WHERE task = 'regression') FROM runs""").fetchone()
    failed = con.execute("SELECT count(*) FROM run_failures").fetchone()[0]
    studies = con.execute("SELECT count(DISTINCT study) FROM studies").fetchone()[0]
    spectral = con.execute("SELECT count(*) FROM checkpoints WHERE is_spectral").fetchone()[0]
    below, judged = con.execute("SELECT count(*) FILTER (WHERE NOT beats_baseline), count(beats_baseline) "
                                "FROM analysis_overview").fetchone()
    fate = ", ".join(f"{n} {what}" for n, what in ((diverged, "diverged"), (failed, "failed")) if n)
    trivial = (f" {below} of the {judged:,} runs with a recorded baseline score no better than their data set's "
               "trivial predictor." if judged else "")
    return (f"{runs:,} trained networks{f' ({fate})' if fate else ''} on {datasets} data sets "
            f"({cls} classification, {reg} regression) in {studies} {'study' if studies == 1 else 'studies'}, "
            f"measured at {spectral:,} spectral snapshots.{trivial}")
