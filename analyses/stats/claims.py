"""A claim's evidence at the level that replicates it: per-data-set estimates pooled across data sets.

A verdict's stage computes its own estimate (:class:`analyses.stats.Estimate`: a t interval over runs,
a bootstrap over layer snapshots clustered by run), kept on the verdict row as ``stage_effect``. What
decides the call is computed here, from the rows the stage hands over (:class:`ClaimData`): one row per
unit (a run, a twin pair, a sweep), or several per run, each with its ``run_id`` and ``dataset``, and
the :class:`~analyses.stats.estimands.Estimand` that turns rows into numbers.

- **The estimand is nested.** Where a confound could produce the effect (training time, weight scale,
  initialization, the optimizer's own mechanism), the estimand is what the claim's variable adds to it:
  a partial correlation, a rank regression with run fixed effects, a trained-minus-untrained
  difference per run, a held-out fit with the confound inside it minus the fit of the confound alone.
  ``baseline`` (optional) is the confound's own effect, shown beside the claim and never subtracted.
- **Runs of one data set are not independent replicates.** Each data set gives its estimate and
  within-data-set variance (:meth:`Estimand.per_dataset`), and :func:`infer` pools them by a
  random-effects meta-analysis with the Hartung-Knapp-Sidik-Jonkman interval on k - 1 degrees of
  freedom (:mod:`analyses.stats.meta`); the row stores tau^2 and I^2. One data set gives its own
  interval (runs as units), named so. A discrete per-unit statistic (:class:`Concordance`) is the share
  of units with the predicted sign, with a Wilson interval on the effective sample size n / deff
  (Kish's design effect of the data sets).
- **Sensitivity**: the pooled estimate with each data set (and each study, from the ``studies``
  membership: a run can belong to several) left out, as a range and the group whose removal is least
  favourable to the claim.

The coverage of these intervals at the corpora's sizes is checked by simulation
(``tests/analyses/test_stats_calibration.py``, ``benchmarks/calibration.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from analyses.stats.estimands import DataSetRows, Estimand, Statistic, safe
from analyses.stats.meta import Pooled, random_effects, t_interval

#: Fewest data sets for a leave-one-data-set-out range.
MIN_LODO_DATASETS = 3


@dataclass(frozen=True)
class ClaimData:
    """The rows behind a verdict and the estimand that decides it (see the module doc).

    ``rows`` must have columns ``run_id`` and ``dataset``. ``confound`` names what the estimand (or the
    design: paired twins) holds fixed, "" when nothing; ``baseline`` (optional, with ``baseline_name``)
    is the confound's own effect on rows, shown beside the claim."""

    rows: pl.DataFrame
    estimand: Estimand
    confound: str = ""
    baseline: Statistic | None = None
    baseline_name: str = ""

    def __post_init__(self) -> None:
        missing = {"run_id", "dataset"} - set(self.rows.columns)
        if missing:
            raise ValueError(f"ClaimData.rows lacks column(s) {sorted(missing)}")
        if (self.baseline is None) != (self.baseline_name == ""):
            raise ValueError("ClaimData: a baseline needs its baseline_name and vice versa")
        if self.baseline is not None and not self.confound:
            raise ValueError("ClaimData: a baseline needs the confound it measures")


@dataclass(frozen=True)
class Inference:
    """What :func:`assess` found: the pooled estimate (natural scale) with its 95% and 90% intervals,
    the p of the decision boundary, its degrees of freedom, heterogeneity and method; the counts; the
    confound's own effect; the leave-one-data-set-out (``lodo``) and leave-one-study-out (``loso``)
    ranges of the pooled estimate with the group least favourable to the claim; notes."""

    value: float
    low: float
    high: float
    low90: float
    high90: float
    p: float
    df: float
    tau2: float
    i2: float
    method: str
    n_datasets: int
    n_runs: int
    n_units: int
    baseline: float = math.nan
    lodo_low: float = math.nan
    lodo_high: float = math.nan
    lodo_worst: str = ""
    loso_low: float = math.nan
    loso_high: float = math.nan
    loso_worst: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def _groups(rows: pl.DataFrame, keep: np.ndarray | None = None) -> list[DataSetRows]:
    """The claim's rows by data set (first-seen order), optionally only rows where ``keep``."""
    datasets = rows["dataset"].cast(pl.Utf8).to_numpy()
    runs = rows["run_id"].cast(pl.Utf8).to_numpy()
    sel = np.ones(len(datasets), bool) if keep is None else keep
    out = []
    for d in dict.fromkeys(datasets[sel].tolist()):
        idx = np.flatnonzero(sel & (datasets == d))
        out.append(DataSetRows(d, idx, runs[idx]))
    return out


def _pool(estimand: Estimand, groups: Sequence[DataSetRows], null: float) -> tuple[Pooled, list[str]]:
    """The pooled estimate of ``estimand`` over the data sets ``groups`` on its pooling scale, and notes."""
    special = estimand.infer(groups, null)
    if special is not None:
        return special, []
    within = estimand.per_dataset(groups)
    ok = [(g, w) for g, w in zip(groups, within, strict=True) if math.isfinite(w.value)]
    dropped = [f"{g.name} ({w.units})" for g, w in zip(groups, within, strict=True) if not math.isfinite(w.value)]
    notes = [f"data sets left out, too few units for an estimate (units): {', '.join(dropped)}"] if dropped else []
    null_p = estimand.to_pooling(null)
    if not ok:
        return Pooled.missing(0, "no data set with an estimate"), notes
    if len(ok) == 1:
        g, w = ok[0]
        what = estimand.description or "its estimate"
        return t_interval(w.value, math.sqrt(w.variance) if w.variance > 0 else math.nan, w.df, null_p, k=1,
                          method=f"one data set ({g.name}): {what} with its interval over {w.units} units"), notes
    y = np.array([w.value for _, w in ok])
    v = np.array([w.variance for _, w in ok])
    return random_effects(y, v, null_p), notes


def _point(estimand: Estimand, groups: Sequence[DataSetRows], null: float) -> float:
    """The pooled point estimate alone (natural scale): the meta-analytic mean, or for an estimand with its
    own inference the statistic on every row (no resampling)."""
    if estimand.own_inference:
        idx = np.concatenate([g.idx for g in groups]) if groups else np.empty(0, np.int64)
        return estimand.value(idx)
    pooled, _ = _pool(estimand, groups, null)
    return estimand.to_natural(pooled.value)


def infer(data: ClaimData, null: float) -> tuple[Pooled, tuple[str, ...]]:
    """The decisive estimate of ``data``: its estimand pooled across the data sets of its rows (or its own
    inference), with value and intervals on the natural scale and the p of ``null``; and notes."""
    est = data.estimand
    pooled, notes = _pool(est, _groups(data.rows), null)
    f = est.to_natural
    return Pooled(f(pooled.value), pooled.se, pooled.df, f(pooled.low), f(pooled.high), f(pooled.low90),
                  f(pooled.high90), pooled.p, pooled.tau2, pooled.i2, pooled.k, pooled.method), tuple(notes)


def _leave_out(estimand: Estimand, rows: pl.DataFrame, keep: Mapping[str, np.ndarray], null: float,
               favourable: Callable[[float], float]) -> tuple[float, float, str]:
    """Range of the pooled estimate over the row subsets ``keep`` (group -> rows left in, as a boolean
    mask) and the group whose removal gives the value least favourable to the claim."""
    values = {}
    for name, mask in keep.items():
        if mask.any():
            values[name] = _point(estimand, _groups(rows, mask), null)
    finite = {g: v for g, v in values.items() if math.isfinite(v)}
    if not finite:
        return math.nan, math.nan, ""
    worst = min(finite, key=lambda g: favourable(finite[g]))
    return min(finite.values()), max(finite.values()), f"{worst} ({finite[worst]:.3g})"


def assess(data: ClaimData, predicted: str, null_value: float,
           studies: Mapping[str, Sequence[str]] | None = None, boundary: float | None = None) -> Inference:
    """The pooled estimate, intervals and p of ``data`` (see module doc) and its leave-one-out ranges.

    ``predicted`` is the verdict's direction ("positive", "negative", "nonzero", "at_least") and
    ``null_value`` its null; ``boundary`` overrides the value the p-value is computed at (an "at least m"
    claim tests m minus its band). ``studies`` maps run_id to the studies it belongs to."""
    rows, est = data.rows, data.estimand
    groups = _groups(rows)
    runs = rows["run_id"].cast(pl.Utf8).to_numpy()
    n_runs = len(set(runs.tolist()))
    pooled, notes = infer(data, null_value if boundary is None else boundary)
    sign = -1.0 if predicted == "negative" else 1.0

    def favourable(v: float) -> float:
        return abs(v - null_value) if predicted == "nonzero" else sign * (v - null_value)

    lodo = (math.nan, math.nan, "")
    datasets = rows["dataset"].cast(pl.Utf8).to_numpy()
    if len(groups) >= MIN_LODO_DATASETS:
        lodo = _leave_out(est, rows, {g.name: datasets != g.name for g in groups}, null_value, favourable)
    loso = (math.nan, math.nan, "")
    if studies:
        names = sorted({s for r in set(runs.tolist()) for s in studies.get(r, ())})
        if len(names) >= 2:
            keep = {s: np.array([s not in studies.get(r, ()) for r in runs], bool) for s in names}
            loso = _leave_out(est, rows, keep, null_value, favourable)
    base = safe(data.baseline, np.arange(rows.height)) if data.baseline is not None else math.nan
    n_units = rows.height if len(set(runs.tolist())) == rows.height else n_runs
    return Inference(pooled.value, pooled.low, pooled.high, pooled.low90, pooled.high90, pooled.p, pooled.df,
                     pooled.tau2, pooled.i2, pooled.method, len(groups), n_runs, n_units, base, *lodo, *loso,
                     notes=notes)
