"""A claim's evidence at the right level: two-level bootstrap, baseline, leave-one-group-out.

A verdict's own interval (:class:`analyses.stats.Estimate`) is whatever its stage computed: a t
interval over runs, a bootstrap over layer snapshots clustered by run, a Fisher-z interval over folds.
Two things it does not show are what decides whether a paper's claim holds in a corpus built from a
few data sets and studies:

- **the level of replication**: runs of one data set share its difficulty and scale, so the unit
  that replicates a finding is the data set first and the run within it second;
- **the confound**: training time, data-set identity, initialization or twin runs can produce the
  same effect with nothing of the claim's mechanism in it.

:class:`ClaimData` hands the machinery what it needs to recompute a verdict's statistics on any
subset of its rows: one row per observation unit (a run, a layer snapshot, a held-out prediction)
with its ``run_id`` and ``dataset``, and pure functions of row indices:

- ``statistic(idx)``: the claim's effect as stated, on rows ``idx`` (an integer array, rows may repeat);
- ``baseline(idx)``: the same effect produced by the confound alone (ln step alone predicting the
  metrics, the step-0 snapshot, data-set means), on the same scale;
- ``beyond(idx)``: the claim's effect beyond the confound (a partial correlation, trained minus
  untrained). When it is not given and ``baseline`` is, it is ``statistic - baseline``.

:func:`assess` computes, on the same resamples:

- the **two-level bootstrap** (:func:`two_level_resamples`): draw the k data sets with replacement,
  then within each drawn data set its runs with replacement, each run with all its rows. With fewer
  than :data:`MIN_DATASETS` data sets the data sets are held fixed and only runs are drawn (the
  ``interval_level`` says which). A statistic that must weight runs equally, whatever their depth,
  takes one row per run;
- the **decisive** quantity, which the verdict rests on: ``beyond`` when there is a baseline, the
  effect itself otherwise; its two-level interval and a two-sided bootstrap p-value of its decision
  boundary (:func:`bootstrap_p`), which the Holm adjustment in ``analysis_verdicts`` reads;
- **leave-one-out sensitivity**: the decisive point estimate with each data set (and each study, from
  the ``studies`` membership: a run can belong to several) left out, as a range and the group whose
  removal is least favourable to the claim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from analyses.stats.bootstrap import percentile_interval

#: Fewest data sets for the outer level of the two-level bootstrap; below it the data sets stay fixed.
MIN_DATASETS = 3
#: Fewest runs (units) for a two-level interval. A percentile bootstrap over a handful of units is too
#: narrow (4 paired units in 2 data sets gave an interval half as wide as their t interval): below
#: this the stage's own interval (a t interval over so few units) decides.
MIN_RUNS = 8
#: Bootstrap resamples of the two-level intervals (fewer than N_BOOTSTRAP: every resample recomputes
#: up to three statistics, and the interval ends move by under 0.01 between 1000 and 2000 draws on the
#: default corpus).
N_TWO_LEVEL = 1000

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class ClaimData:
    """The rows and statistics from which a verdict can be recomputed on resamples (see module doc).

    ``rows`` must have columns ``run_id`` and ``dataset``; every other column is the statistics' own.
    ``confound`` names what the baseline controls ("training time", "data-set identity",
    "initialization", "twins", or several joined by " + "), or, with no baseline, what the design
    itself controls (paired twins); "" when the claim is tested against no confound.
    ``beyond_null`` is the value of ``beyond`` under no effect beyond the confound (0 for a difference
    or a partial correlation).
    """

    rows: pl.DataFrame
    statistic: Statistic
    confound: str = ""
    baseline: Statistic | None = None
    baseline_name: str = ""
    beyond: Statistic | None = None
    beyond_name: str = ""
    beyond_null: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        missing = {"run_id", "dataset"} - set(self.rows.columns)
        if missing:
            raise ValueError(f"ClaimData.rows lacks column(s) {sorted(missing)}")
        if (self.baseline is None) != (self.baseline_name == "") and self.beyond is None:
            raise ValueError("ClaimData: a baseline needs its baseline_name and vice versa")
        if (self.baseline is not None or self.beyond is not None) and not self.confound:
            raise ValueError("ClaimData: a baseline or beyond statistic needs the confound it controls")

    @property
    def has_baseline(self) -> bool:
        return self.baseline is not None or self.beyond is not None

    def decisive(self, idx: np.ndarray) -> float:
        """The quantity the verdict rests on, on rows ``idx``: ``beyond`` (or effect - baseline) when
        there is a baseline, else the effect."""
        if self.beyond is not None:
            return float(self.beyond(idx))
        if self.baseline is not None:
            return float(self.statistic(idx)) - float(self.baseline(idx))
        return float(self.statistic(idx))


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` found: point estimates and two-level intervals of the effect, the
    baseline and the decisive quantity, the bootstrap p of the decisive quantity, the counts, and
    the leave-one-data-set-out (``lodo``) and leave-one-study-out (``loso``) ranges of the decisive
    point estimate with the group least favourable to the claim."""

    effect: float
    effect_low: float
    effect_high: float
    baseline: float = math.nan
    baseline_low: float = math.nan
    baseline_high: float = math.nan
    decisive: float = math.nan
    decisive_low: float = math.nan
    decisive_high: float = math.nan
    decisive_null: float = 0.0
    p: float = math.nan
    level: str = ""
    n_datasets: int = 0
    n_runs: int = 0
    lodo_low: float = math.nan
    lodo_high: float = math.nan
    lodo_worst: str = ""
    loso_low: float = math.nan
    loso_high: float = math.nan
    loso_worst: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def _run_index(rows: pl.DataFrame) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(dataset of each run (R,), row indices of each run, run id of each run (R,)), runs in first-seen order."""
    run_ids = rows["run_id"].cast(pl.Utf8).to_numpy()
    datasets = rows["dataset"].cast(pl.Utf8).to_numpy()
    order, first = np.unique(run_ids, return_index=True)
    order = order[np.argsort(first)]
    members = {r: [] for r in order}
    for i, r in enumerate(run_ids):
        members[r].append(i)
    run_rows = [np.asarray(members[r], np.int64) for r in order]
    run_dataset = np.array([datasets[m[0]] for m in run_rows], dtype=object)
    return run_dataset, run_rows, np.asarray(order, dtype=object)


def two_level_resamples(run_dataset: np.ndarray, run_rows: Sequence[np.ndarray], n_boot: int, seed: int = 0,
                        fixed_datasets: bool | None = None) -> tuple[list[np.ndarray], str]:
    """``n_boot`` row-index arrays of a two-level bootstrap and the level's name.

    run_dataset (R,): each run's data set; run_rows: each run's row indices. Each resample draws the k
    data sets with replacement (unless ``fixed_datasets``, the default below :data:`MIN_DATASETS`),
    then within each drawn data set as many runs as it has, with replacement, and takes all rows of
    every drawn run."""
    datasets = list(dict.fromkeys(run_dataset))
    runs_of = {d: np.flatnonzero(run_dataset == d) for d in datasets}
    if fixed_datasets is None:
        fixed_datasets = len(datasets) < MIN_DATASETS
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        picked = datasets if fixed_datasets else [datasets[i] for i in rng.integers(0, len(datasets), len(datasets))]
        parts = []
        for d in picked:
            runs = runs_of[d]
            parts.extend(run_rows[r] for r in runs[rng.integers(0, len(runs), len(runs))])
        out.append(np.concatenate(parts) if parts else np.empty(0, np.int64))
    level = "runs within fixed data sets" if fixed_datasets else "data sets, then runs within them"
    return out, level


def bootstrap_p(draws: np.ndarray, boundary: float) -> float:
    """Two-sided bootstrap p of ``boundary``: 2 min(#{d <= b}, #{d >= b}) + 1 over (m + 1) finite draws
    (m,), capped at 1; the +1 keeps p > 0 with a finite number of draws. NaN when under half are finite."""
    d = np.asarray(draws, float)
    finite = d[np.isfinite(d)]
    if len(finite) == 0 or 2 * len(finite) < len(d):
        return math.nan
    tail = min(np.sum(finite <= boundary), np.sum(finite >= boundary))
    return float(min(1.0, (2 * tail + 1) / (len(finite) + 1)))


def _safe(f: Statistic, idx: np.ndarray) -> float:
    try:
        v = float(f(idx))
    except (ValueError, ZeroDivisionError, np.linalg.LinAlgError, FloatingPointError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _leave_out(data: ClaimData, keep: Mapping[str, np.ndarray], favourable: Callable[[float], float]
               ) -> tuple[float, float, str]:
    """Range of the decisive point estimate over the subsets ``keep`` (group -> row indices left in)
    and the group whose removal gives the value least favourable to the claim (``favourable``: larger
    is better for the claim)."""
    values = {g: _safe(data.decisive, idx) for g, idx in keep.items() if len(idx)}
    finite = {g: v for g, v in values.items() if math.isfinite(v)}
    if not finite:
        return math.nan, math.nan, ""
    worst = min(finite, key=lambda g: favourable(finite[g]))
    return min(finite.values()), max(finite.values()), f"{worst} ({finite[worst]:.3g})"


def assess(data: ClaimData, predicted: str, null_value: float, studies: Mapping[str, Sequence[str]] | None = None,
           n_boot: int = N_TWO_LEVEL, boundary: float | None = None) -> Assessment:
    """The two-level intervals, decisive p and leave-one-out ranges of ``data`` (see module doc).

    ``predicted`` is the verdict's direction ("positive", "negative", "nonzero", "at_least") and
    ``null_value`` its null; the decisive quantity's null is ``data.beyond_null`` when there is a
    baseline, else ``null_value``. ``boundary`` overrides the value the bootstrap p is computed at
    (an "at least m" claim tests m minus its band). ``studies`` maps run_id to the studies it
    belongs to (runs absent from it belong to none)."""
    rows = data.rows
    run_dataset, run_rows, run_ids = _run_index(rows)
    n_runs, n_datasets = len(run_rows), len(set(run_dataset))
    everything = np.arange(rows.height)
    effect = _safe(data.statistic, everything)
    base = _safe(data.baseline, everything) if data.baseline is not None else math.nan
    dec_null = data.beyond_null if data.has_baseline else null_value
    decisive = _safe(data.decisive, everything)
    sign = -1.0 if predicted == "negative" else 1.0

    def favourable(v: float) -> float:
        return abs(v - dec_null) if predicted == "nonzero" else sign * (v - dec_null)

    lodo = (math.nan, math.nan, "")
    if n_datasets >= MIN_DATASETS:
        ds_of_row = rows["dataset"].cast(pl.Utf8).to_numpy()
        lodo = _leave_out(data, {d: np.flatnonzero(ds_of_row != d) for d in dict.fromkeys(run_dataset)}, favourable)
    loso = (math.nan, math.nan, "")
    if studies:
        row_runs = rows["run_id"].cast(pl.Utf8).to_numpy()
        names = sorted({s for r in run_ids for s in studies.get(r, ())})
        if len(names) >= 2:
            member = {s: {r for r in run_ids if s in studies.get(r, ())} for s in names}
            loso = _leave_out(data, {s: np.flatnonzero(~np.isin(row_runs, list(member[s]))) for s in names},
                              favourable)
    if n_runs < MIN_RUNS:
        note = f"only {n_runs} runs (units): no two-level interval, the stage's interval decides"
        return Assessment(effect, math.nan, math.nan, base, decisive=decisive, decisive_null=dec_null,
                          n_datasets=n_datasets, n_runs=n_runs, lodo_low=lodo[0], lodo_high=lodo[1],
                          lodo_worst=lodo[2], loso_low=loso[0], loso_high=loso[1], loso_worst=loso[2],
                          notes=(note,))
    resamples, level = two_level_resamples(run_dataset, run_rows, n_boot, data.seed)
    eff_draws = np.array([_safe(data.statistic, i) for i in resamples])
    base_draws = (np.array([_safe(data.baseline, i) for i in resamples]) if data.baseline is not None
                  else np.full(n_boot, math.nan))
    if data.beyond is not None:
        dec_draws = np.array([_safe(data.beyond, i) for i in resamples])
    elif data.baseline is not None:
        dec_draws = eff_draws - base_draws
    else:
        dec_draws = eff_draws
    e_lo, e_hi = percentile_interval(eff_draws)
    b_lo, b_hi = percentile_interval(base_draws) if data.baseline is not None else (math.nan, math.nan)
    d_lo, d_hi = percentile_interval(dec_draws)
    p = bootstrap_p(dec_draws, dec_null if boundary is None else boundary)
    return Assessment(effect, e_lo, e_hi, base, b_lo, b_hi, decisive, d_lo, d_hi, dec_null, p, level,
                      n_datasets, n_runs, *lodo, *loso)


def rows_of(idx: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """``columns`` (each (n, ...)) taken at rows ``idx``: the usual first line of a statistic."""
    return tuple(c[idx] for c in columns)


def study_membership(con) -> dict[str, tuple[str, ...]]:
    """run_id -> the studies it belongs to, from the corpus table ``studies`` (empty without it)."""
    known = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'studies'").fetchall()[0][0]
    if not known:
        return {}
    pairs = con.execute("SELECT run_id, study FROM studies ORDER BY study").fetchall()
    out: dict[str, list[str]] = {}
    for run_id, study in pairs:
        out.setdefault(run_id, []).append(study)
    return {r: tuple(s) for r, s in out.items()}
