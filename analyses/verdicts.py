"""Verdicts on the papers' claims: the shared decision rule, interval estimators, and the stage that
collects every stage's verdict rows into ``analysis_verdicts``.

A stage that speaks to a claim writes ``analysis_<stage>_verdicts`` with :data:`VERDICT_COLUMNS`
through :func:`write_verdicts`. Each row states the claim, the test, the effect (a number with a
sign the claim predicts), its 95% confidence interval, n and the unit n counts, and a verdict from
:func:`decide`:

- ``supported``: the interval excludes the null value on the side the claim predicts (either side for a
  claim of a relation whose sign the paper does not state, ``predicted = "nonzero"``);
- ``not supported``: the interval excludes it on the other side, or lies wholly inside the
  ``negligible`` band around the null (a precisely measured absence of the effect);
- ``inconclusive``: otherwise (the interval covers the null), or too little data to estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import duckdb
import numpy as np
import polars as pl
from scipy import stats

Direction = Literal["positive", "negative", "nonzero"]
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
#: Two-sided level of every interval in ``analysis_verdicts``.
CONFIDENCE = 0.95
#: Bootstrap resamples for cluster-bootstrap intervals.
N_BOOTSTRAP = 2000

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
    table = f"analysis_{stage}_verdicts"
    cols = ", ".join(f'"{c}" {t}' for c, t in VERDICT_COLUMNS)
    con.execute(f"CREATE OR REPLACE TABLE {table} ({cols})")
    if verdicts:
        rows = [v.row(stage) for v in verdicts]
        frame = pl.DataFrame(rows, schema={c: _POLARS[t] for c, t in VERDICT_COLUMNS})  # noqa: F841
        con.execute(f"INSERT INTO {table} SELECT * FROM frame")


_POLARS = {"VARCHAR": pl.Utf8, "DOUBLE": pl.Float64, "INTEGER": pl.Int32}


# --- interval estimators --------------------------------------------------------------------------

def pearson_ci(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, int]:
    """Pearson r with its Fisher-z 95% interval and two-sided p-value over the finite pairs.

    Returns ``(r, lo, hi, p, n)``; NaNs when n < 4 or either variable is constant.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan, math.nan, n
    r, p = stats.pearsonr(x, y)
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), stats.norm.ppf(0.5 + CONFIDENCE / 2) / math.sqrt(n - 3)
    return float(r), float(np.tanh(z - half)), float(np.tanh(z + half)), float(p), n


def cluster_bootstrap(frame: pl.DataFrame, cluster: str, statistic: Callable[[pl.DataFrame], float],
                      n_boot: int = N_BOOTSTRAP, seed: int = 0) -> tuple[float, float, float, int]:
    """A statistic of ``frame`` with a percentile 95% interval from resampling whole clusters.

    Rows of one cluster (one run, say: its checkpoints are not independent) are drawn together, so
    the interval reflects the number of clusters, not rows. Returns ``(estimate, lo, hi, n_clusters)``.
    """
    estimate = float(statistic(frame))
    groups = frame.partition_by(cluster, maintain_order=True)
    k = len(groups)
    if k < 3 or not math.isfinite(estimate):
        return estimate, math.nan, math.nan, k
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, k, size=k)
        value = statistic(pl.concat([groups[i] for i in pick]))
        if math.isfinite(value):
            draws.append(value)
    if len(draws) < n_boot // 2:
        return estimate, math.nan, math.nan, k
    a = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return estimate, float(lo), float(hi), k


def row_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int = N_BOOTSTRAP,
                  seed: int = 0) -> tuple[float, float, float, int]:
    """A statistic of n independent rows with a percentile 95% interval from resampling rows
    (``scipy.stats.bootstrap`` on the row indices, so any number of paired columns resample together).

    ``statistic(idx)`` maps integer row indices of shape (..., n) to values of shape (...,): vectorized
    over leading axes. Resamples where it is NaN (a constant column, say) are left out; with fewer than
    half of them finite, or n < 4, the interval is NaN. Returns ``(estimate, lo, hi, n)``.
    """
    estimate = float(statistic(np.arange(n)))
    if n < 4 or not math.isfinite(estimate):
        return estimate, math.nan, math.nan, n
    res = stats.bootstrap((np.arange(n),), lambda idx, axis=-1: statistic(np.moveaxis(idx, axis, -1)),
                          vectorized=True, n_resamples=n_boot, method="percentile",
                          rng=np.random.default_rng(seed))
    draws = np.asarray(res.bootstrap_distribution, float)
    draws = draws[np.isfinite(draws)]
    if len(draws) < n_boot // 2:
        return estimate, math.nan, math.nan, n
    a = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return estimate, float(lo), float(hi), n


def mean_ci(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean with a t 95% interval over the finite values: ``(mean, lo, hi, n)``."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    n = int(len(v))
    if n < 2:
        return (float(v.mean()) if n else math.nan), math.nan, math.nan, n
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(n))
    if se == 0:
        return m, m, m, n
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * se
    return m, m - half, m + half, n


def mean_t_p(values: np.ndarray) -> float:
    """Two-sided p of the one-sample t test of mean 0 over the finite values; NaN below two or with no spread."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2 or np.ptp(v) == 0:
        return math.nan
    return float(stats.ttest_1samp(v, 0.0).pvalue)


def wilson_ci(k: int, n: int) -> tuple[float, float, float]:
    """Proportion k/n with its Wilson 95% interval."""
    if n == 0:
        return math.nan, math.nan, math.nan
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


# --- the collecting stage -------------------------------------------------------------------------

#: Every stage that writes verdicts; the collecting stage reads their tables.
VERDICT_STAGES = ("dynamics", "correlations", "cca", "umap", "pressure", "diagnostics", "topology", "gap",
                  "regularizers", "propagation")
READS = tuple(f"analysis_{s}_verdicts" for s in VERDICT_STAGES)
WRITES = ("analysis_verdicts",)
TITLE = "Verdicts"


def run(con: duckdb.DuckDBPyConnection) -> None:
    """``analysis_verdicts``: the union of every stage's verdict rows, in stage order."""
    union = " UNION ALL ".join(f"SELECT *, {i} AS stage_order FROM {t}" for i, t in enumerate(READS))
    con.execute(f"CREATE OR REPLACE TABLE analysis_verdicts AS SELECT * EXCLUDE (stage_order) "
                f"FROM ({union}) ORDER BY stage_order, claim_id")


FIGURES: dict = {}
CAPTIONS: dict = {}
