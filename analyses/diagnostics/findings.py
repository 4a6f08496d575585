"""A finding: one row of ``findings``, and the threshold conditions that produce it.

A condition on one column has a warning and a critical threshold (:class:`Threshold`, the critical one
further from healthy values); a rule of several conditions gives a finding when every condition holds,
``critical`` when every one reaches its critical threshold and ``warning`` otherwise. ``info`` marks a
comparison, not a fault.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

INFO, WARNING, CRITICAL = "info", "warning", "critical"
_LEVELS = {1: WARNING, 2: CRITICAL}

@dataclass(frozen=True)
class Threshold:
    """A condition on one column: it holds at ``warning`` and is critical at ``critical``.

    ``above``: holds when value >= threshold; otherwise when value < threshold. NULL/NaN never holds.
    """

    quantity: str
    warning: float
    critical: float
    above: bool

    def level(self, value: float | None) -> int:
        """0 (does not hold), 1 (warning) or 2 (critical)."""
        if value is None or not math.isfinite(value):
            return 0
        if self.above:
            return 2 if value >= self.critical else 1 if value >= self.warning else 0
        return 2 if value < self.critical else 1 if value < self.warning else 0

    def text(self) -> str:
        op = ">=" if self.above else "<"
        return f"{self.quantity} {op} {self.warning:g} (critical {op} {self.critical:g})"

    def evidence(self) -> dict[str, float]:
        return {f"{self.quantity}_threshold": self.warning, f"{self.quantity}_critical_threshold": self.critical}


#: The finding rows before they are written: evidence as (key, value) entries, a MAP in the table.
FINDING_SCHEMA = {
    "run_id": pl.Utf8, "step": pl.Int32, "layer_index": pl.Int32, "rule": pl.Utf8, "severity": pl.Utf8,
    "message": pl.Utf8, "evidence": pl.List(pl.Struct({"key": pl.Utf8, "value": pl.Float64})),
}


def finding_row(r: dict, rule: str, level: int | str, message: str, evidence: dict[str, float | None],
                layer: bool = True) -> dict:
    """One finding of ``rule`` on row r (run_id, step, layer_index; ``layer=False``: a run-level finding,
    layer_index NULL) at ``level`` (1, 2 or a severity name); non-finite evidence values become NULL."""
    def clean(v):
        return None if v is None or not math.isfinite(float(v)) else float(v)
    return {"run_id": r["run_id"], "step": r.get("step"), "layer_index": r.get("layer_index") if layer else None,
            "rule": rule, "severity": _LEVELS.get(level, level) if isinstance(level, int) else level,
            "message": message, "evidence": [{"key": k, "value": clean(v)} for k, v in evidence.items()]}


def findings_frame(rows: list[dict]) -> pl.DataFrame:
    """Finding rows (:func:`finding_row`) as a frame of :data:`FINDING_SCHEMA`, empty ones included."""
    return pl.DataFrame(rows, schema=FINDING_SCHEMA)


def threshold_rule(frame: pl.DataFrame, rule: str, conditions: list[Threshold], eligible: pl.Expr | None,
                   message: Callable[[dict], str], extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """Findings on the rows of ``frame`` (those where ``eligible`` holds) where every condition holds;
    severity = the weakest condition's level. The evidence holds each condition's value and thresholds
    and the ``extra`` columns."""
    sub = frame if eligible is None else frame.filter(eligible.fill_null(False))
    rows = []
    for r in sub.iter_rows(named=True):
        level = min(c.level(r.get(c.quantity)) for c in conditions)
        if level == 0:
            continue
        evidence = {c.quantity: r.get(c.quantity) for c in conditions} | {k: r.get(k) for k in extra}
        for c in conditions:
            evidence |= c.evidence()
        rows.append(finding_row(r, rule, level, message(r), evidence))
    return findings_frame(rows)


def percent(x: float | None) -> str:
    """A fraction as a whole percentage for a message ("n/a" for NULL)."""
    return "n/a" if x is None else f"{100 * x:.0f}%"

