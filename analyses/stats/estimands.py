"""What a claim estimates, and how the rows of one data set give it with its sampling variance.

A claim hands over its rows (:class:`analyses.stats.claims.ClaimData`): one per unit (a run, a twin
pair, a sweep) or several per run (layer snapshots), each with its ``run_id`` and ``dataset``. An
:class:`Estimand` turns row indices into numbers:

- :meth:`Estimand.value`: the estimate on any rows (all of them, or all but one data set or study),
  on its natural scale;
- :meth:`Estimand.per_dataset`: for each data set's rows, the estimate on the *pooling scale* with its
  within-data-set sampling variance (the runs as the units) and the degrees of freedom of that
  data set's own interval. :mod:`analyses.stats.meta` pools them across data sets.

The kinds:

- :class:`Mean`: the mean of one value per unit (a per-run ρ, a paired difference); within a data
  set var = s~^2 / m with s~^2 its variance moderated towards the pooled one
  (:func:`moderated_variances`).
- :class:`Correlation`: Pearson (or Spearman) r of x and y within the data set, optionally partial
  on controls and within strata inside it (architectures), pooled on Fisher's z. One row per run:
  var z = 1 / (n - g - 2 - c) for n rows in g strata with c controls (Spearman: times 1 + r^2 / 2,
  Bonett and Wright 2000); a data set with n - g - 2 - c < 2 is left out. Several rows per run
  (layer snapshots): var z by the delete-one-run jackknife, moderated as the mean's is.
- :class:`Jackknifed`: any statistic of the data set's rows, its variance by the delete-one-run
  jackknife, (m - 1) / m sum (theta_(-r) - theta_(.))^2 (on Fisher's z for a correlation-like
  statistic), moderated towards the pooled one as the mean's is.
- :class:`Concordance`: the share of units whose (discrete) value has the predicted sign, for
  per-run statistics that take a few values (a within-run ρ over two layers is +-1): a mean of them
  has a zero-width interval whenever the runs agree. Wilson interval on the effective sample size.
- :class:`Resampled`: a statistic that refits a model (a cross-validation) on the rows drawn, with a
  bootstrap of the whole procedure within data sets.

The last two are not pooled data set by data set: :meth:`Estimand.infer` gives their interval.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analyses.stats.correlation import within_partial_r
from analyses.stats.estimate import CONFIDENCE
from analyses.stats.intervals import design_effect, wilson_bounds
from analyses.stats.meta import EQUIVALENCE_CONFIDENCE, Pooled, t_interval
from analyses.stats.standardize import rank_within

#: Fewest runs in a data set for a jackknife variance.
MIN_JACKKNIFE_RUNS = 3
#: |r| is clipped here before Fisher's z (a correlation of exactly +-1 has an infinite z).
R_CLIP = 0.999999

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Within:
    """One data set's estimate on the pooling scale, its sampling variance (NaN: not estimable), the
    degrees of freedom of its own interval (inf: normal) and the units it rests on."""

    value: float
    variance: float
    df: float
    units: int


@dataclass(frozen=True)
class DataSetRows:
    """The rows of one data set: their indices into the claim's rows, and the run of each."""

    name: str
    idx: np.ndarray
    runs: np.ndarray


class Estimand(ABC):
    """See the module doc. ``scale`` names the pooling scale; ``description`` says what is estimated."""

    scale: str = "identity"
    description: str = ""
    #: True for an estimand whose interval :meth:`infer` gives (not pooled per data set).
    own_inference: bool = False
    #: The range of the estimate on its natural scale (a mean of correlations stays in [-1, 1], an R^2 is at
    #: most 1): the interval's ends are clipped to it. None: unbounded.
    bounds: tuple[float, float] | None = None

    @abstractmethod
    def value(self, idx: np.ndarray) -> float:
        """The estimate on rows ``idx`` (natural scale); NaN when undefined."""

    @abstractmethod
    def per_dataset(self, groups: Sequence[DataSetRows]) -> list[Within]:
        """One :class:`Within` per data set of ``groups``."""

    def infer(self, groups: Sequence[DataSetRows], null: float) -> Pooled | None:
        """The interval of an estimand that is not pooled data set by data set (a share with its Wilson
        interval, a bootstrap of a whole cross-validation); None (the default): pool per-data-set estimates."""
        return None

    def to_pooling(self, v: float) -> float:
        return _fisher_z(v) if self.scale == "fisher_z" else v

    def to_natural(self, v: float) -> float:
        out = math.tanh(v) if self.scale == "fisher_z" and math.isfinite(v) else v
        if self.bounds is None or not math.isfinite(out):
            return out
        return min(max(out, self.bounds[0]), self.bounds[1])


def _fisher_z(r: float) -> float:
    return math.atanh(max(-R_CLIP, min(R_CLIP, r))) if math.isfinite(r) else math.nan


def _finite(v) -> float:
    try:
        out = float(v)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def safe(f: Statistic, idx: np.ndarray) -> float:
    """f(idx) as a float, NaN where it fails on degenerate rows (a constant column, too few rows)."""
    try:
        return _finite(f(idx))
    except (ValueError, ZeroDivisionError, np.linalg.LinAlgError, FloatingPointError, IndexError):
        return math.nan


class Mean(Estimand):
    """The mean of ``values`` (n,), one per unit (see the module doc); ``bounds`` (the range the values
    live in, such as [-1, 1] for correlations) clips the interval's ends, as a mean cannot leave it."""

    description = "mean of one value per unit"

    def __init__(self, values: np.ndarray, bounds: tuple[float, float] | None = None) -> None:
        self.values = np.asarray(values, float)
        self.bounds = bounds

    def value(self, idx: np.ndarray) -> float:
        v = self.values[idx]
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else math.nan

    def per_dataset(self, groups: Sequence[DataSetRows]) -> list[Within]:
        out = []
        for g in groups:
            p = self.values[g.idx][np.isfinite(self.values[g.idx])]
            m = len(p)
            var = float(p.var(ddof=1)) / m if m >= 2 else math.nan  # 0 when its units agree: an estimate
            out.append(Within(float(p.mean()) if m else math.nan, var, float(m - 1), m))
        return moderated_variances(out)


#: Prior degrees of freedom of the moderated within-data-set variance (:func:`moderated_variances`).
PRIOR_DF = 8


def moderated_variances(within: Sequence[Within], prior_df: float = PRIOR_DF) -> list[Within]:
    """``within`` with every data set's variance moderated towards the pooled per-unit variance:
    s~_j^2 = ((m_j - 1) s_j^2 + d0 s^2) / ((m_j - 1) + d0), v_j = s~_j^2 / m_j, with s_j^2 = m_j v_j the
    data set's own per-unit variance, s^2 = sum (m_j - 1) s_j^2 / sum (m_j - 1) the pooled one and
    d0 = ``prior_df`` (a data set with one unit, or none of its own, takes s^2). Each data set's own
    variance from a dozen runs makes a noisy weight (91-93 % coverage in simulation), the pooled one a
    wrong weight where data sets differ in spread (64 % in a corpus of one large noisy data set beside
    small precise ones); the moderated one keeps both near 95 % together with the robust floor of
    :func:`analyses.stats.meta.random_effects`. One data set keeps its own."""
    have = [w for w in within if math.isfinite(w.variance) and w.variance >= 0 and w.units >= 2]
    dof = sum(w.units - 1 for w in have)
    if len(within) < 2 or dof == 0:
        return list(within)
    s2 = sum((w.units - 1) * w.units * w.variance for w in have) / dof
    out = []
    for w in within:
        own = w.units * w.variance if math.isfinite(w.variance) and w.variance >= 0 and w.units >= 2 else s2
        d = max(w.units - 1, 0)
        mod = (d * own + prior_df * s2) / (d + prior_df)
        out.append(Within(w.value, mod / w.units if w.units > 0 and mod > 0 else math.nan, float(dof), w.units))
    return out


def jackknife(statistic: Statistic, idx: np.ndarray, runs: np.ndarray, transform: Callable[[float], float]
              ) -> tuple[float, float, int]:
    """(transform(statistic(idx)), delete-one-run jackknife variance of it, runs) over the runs of
    ``runs`` (the run of each row of ``idx``); NaN variance below :data:`MIN_JACKKNIFE_RUNS` runs or
    where a leave-one-out value is undefined."""
    theta = transform(safe(statistic, idx))
    labels = list(dict.fromkeys(runs.tolist()))
    m = len(labels)
    if not math.isfinite(theta) or m < MIN_JACKKNIFE_RUNS:
        return theta, math.nan, m
    loo = np.array([transform(safe(statistic, idx[runs != r])) for r in labels])
    if not np.isfinite(loo).all():
        return theta, math.nan, m
    return theta, float((m - 1) / m * ((loo - loo.mean()) ** 2).sum()), m


class Jackknifed(Estimand):
    """Any ``statistic`` of row indices; per data set its variance by the delete-one-run jackknife
    (``scale="fisher_z"`` for a correlation-like statistic in [-1, 1])."""

    def __init__(self, statistic: Statistic, scale: str = "identity", description: str = "") -> None:
        self.statistic, self.scale, self.description = statistic, scale, description

    def value(self, idx: np.ndarray) -> float:
        return safe(self.statistic, idx)

    def per_dataset(self, groups: Sequence[DataSetRows]) -> list[Within]:
        out = []
        for g in groups:
            theta, var, m = jackknife(self.statistic, g.idx, g.runs, self.to_pooling)
            out.append(Within(theta, var, float(m - 1), m))
        return moderated_variances(out)


class Correlation(Estimand):
    """Within-data-set Pearson (or Spearman) r of x and y (n,), partial on ``controls`` (n, c) and
    within ``strata`` (n,) labels inside each data set (see the module doc)."""

    scale = "fisher_z"

    def __init__(self, x: np.ndarray, y: np.ndarray, controls: np.ndarray | None = None,
                 strata: np.ndarray | None = None, method: str = "pearson") -> None:
        self.x, self.y = np.asarray(x, float), np.asarray(y, float)
        self.c = None if controls is None else np.asarray(controls, float).reshape(len(self.x), -1)
        self.strata = np.zeros(len(self.x), int).astype(str) if strata is None else np.asarray(strata).astype(str)
        self.method = method
        ok = np.isfinite(self.x) & np.isfinite(self.y)
        if self.c is not None:
            ok &= np.isfinite(self.c).all(axis=1)
        self.ok = ok
        self.description = (f"within-data-set {'partial ' if self.c is not None else ''}"
                            f"{'Spearman' if method == 'spearman' else 'Pearson'} r")

    def _r(self, idx: np.ndarray) -> float:
        idx = idx[self.ok[idx]]
        if len(idx) < 4:
            return math.nan
        groups = self.strata[idx]
        x, y = self.x[idx], self.y[idx]
        c = None if self.c is None else self.c[idx]
        if self.method == "spearman":
            x, y = rank_within(x, groups), rank_within(y, groups)
            c = None if c is None else np.column_stack([rank_within(col, groups) for col in c.T])
        return within_partial_r(x, y, groups, c)

    def value(self, idx: np.ndarray) -> float:
        """The correlation over rows ``idx`` of one data set (within its strata)."""
        return self._r(np.asarray(idx))

    def per_dataset(self, groups: Sequence[DataSetRows]) -> list[Within]:
        n_controls = 0 if self.c is None else self.c.shape[1]
        kept = []
        for g in groups:
            idx, runs = g.idx[self.ok[g.idx]], g.runs[self.ok[g.idx]]
            strata, counts = np.unique(self.strata[idx], return_counts=True)
            multi = set(strata[counts >= 2].tolist())
            keep = np.array([s in multi for s in self.strata[idx]], bool)
            kept.append((idx[keep], runs[keep], len(multi)))
        if any(len(set(runs.tolist())) < len(runs) for _, runs, _ in kept):
            # several rows per run: rows are not independent, the variance comes from leaving runs out
            out = []
            for idx, runs, _ in kept:
                theta, var, m = jackknife(self._r, idx, runs, _fisher_z)
                out.append(Within(theta, var, float(m - 1), m))
            return moderated_variances(out)
        out = []
        for idx, _, k in kept:
            n, r = len(idx), self._r(idx)
            dof = n - k - 2 - n_controls
            if dof < 2 or not math.isfinite(r):  # r of a handful of runs: left out, not weighed
                out.append(Within(math.nan, math.nan, math.nan, n))
                continue
            var = (1 + r * r / 2 if self.method == "spearman" else 1.0) / dof
            out.append(Within(_fisher_z(r), var, math.inf, n))
        return out


class Concordance(Estimand):
    """The share of units whose value has the ``sign`` (+1 or -1) the claim predicts (ties at 0 count
    half), for per-unit statistics that take a few discrete values; its interval is Wilson's on the
    effective sample size n / deff, deff Kish's design effect of the data sets
    (:func:`analyses.stats.intervals.design_effect`), and its p that of the normal approximation on that
    size against the verdict's null (one half, or a chance rate)."""

    description = "share of units with the predicted sign"
    own_inference = True

    def __init__(self, values: np.ndarray, sign: int) -> None:
        self.values, self.sign = np.asarray(values, float), sign

    def scores(self, idx: np.ndarray) -> np.ndarray:
        v = self.values[idx]
        v = v[np.isfinite(v)]
        return np.where(self.sign * v > 0, 1.0, np.where(v == 0, 0.5, 0.0))

    def value(self, idx: np.ndarray) -> float:
        s = self.scores(idx)
        return float(s.mean()) if len(s) else math.nan

    def per_dataset(self, groups: Sequence[DataSetRows]) -> list[Within]:
        return [Within(self.value(g.idx), math.nan, math.nan, len(self.scores(g.idx))) for g in groups]

    def infer(self, groups: Sequence[DataSetRows], null: float) -> Pooled:
        scores = [self.scores(g.idx) for g in groups]
        s = np.concatenate(scores) if scores else np.empty(0)
        n = len(s)
        if n == 0:
            return Pooled.missing(0, "sign concordance")
        clusters = np.concatenate([[g.name] * len(sc) for g, sc in zip(groups, scores, strict=True)])
        deff, icc = design_effect(s, clusters)
        n_eff = n / deff
        share = float(s.mean())
        lo, hi = wilson_bounds(share, n_eff, CONFIDENCE)
        lo90, hi90 = wilson_bounds(share, n_eff, EQUIVALENCE_CONFIDENCE)
        se0 = math.sqrt(null * (1 - null) / n_eff) if 0 < null < 1 else math.nan
        p = float(2 * stats.norm.sf(abs(share - null) / se0)) if se0 > 0 else math.nan
        method = (f"share with the predicted sign, Wilson interval on the effective n = {n} / {deff:.2f} (design "
                  f"effect of {sum(len(sc) > 0 for sc in scores)} data sets, ICC {icc:.2f})")
        k = sum(len(sc) > 0 for sc in scores)
        return Pooled(share, math.nan, math.inf, lo, hi, lo90, hi90, p, math.nan, math.nan, k, method)


class Resampled(Estimand):
    """A statistic that refits a model on the rows it is given (a cross-validation), with ``n_boot``
    resamples of the rows within each data set (the data sets fixed: the claim is about these data sets,
    or one of them). The interval is the normal one, value +- z sd(draws) (its ends clipped to ``bounds``,
    the range of the statistic: an R^2 is at most 1), and p that of
    (value - null) / sd(draws): a percentile interval would inherit the downward shift of a score refitted
    on a resample (about 63 % of its models are distinct, so its fits are weaker), and a percentile p
    would need far more draws than the refits afford to resolve a Holm threshold."""

    own_inference = True

    def __init__(self, statistic: Statistic, n_boot: int, seed: int = 0, description: str = "",
                 bounds: tuple[float, float] | None = None) -> None:
        self.statistic, self.n_boot, self.seed, self.description = statistic, n_boot, seed, description
        self.bounds = bounds

    def value(self, idx: np.ndarray) -> float:
        return safe(self.statistic, idx)

    def per_dataset(self, groups: Sequence[DataSetRows]) -> list[Within]:
        return [Within(self.value(g.idx), math.nan, math.nan, len(g.idx)) for g in groups]

    def infer(self, groups: Sequence[DataSetRows], null: float) -> Pooled:
        idx = np.sort(np.concatenate([g.idx for g in groups])) if groups else np.empty(0, np.int64)
        value = self.value(idx)
        k = len(groups)
        method = (f"bootstrap of the whole cross-validation ({self.n_boot} draws of the models within each of {k} "
                  "data sets, folds refitted), normal interval on the bootstrap SE")
        if not math.isfinite(value) or len(idx) < 4:
            return Pooled.missing(k, method, value)
        rng = np.random.default_rng(self.seed)
        draws = np.array([safe(self.statistic, np.concatenate([g.idx[rng.integers(0, len(g.idx), len(g.idx))]
                                                              for g in groups])) for _ in range(self.n_boot)])
        finite = draws[np.isfinite(draws)]
        if 2 * len(finite) < len(draws) or np.ptp(finite) == 0:
            return Pooled.missing(k, method, value)
        return t_interval(value, float(finite.std(ddof=1)), math.inf, null, k=k, method=method)
