"""Random-effects meta-analysis of per-data-set estimates: the interval every pooled verdict uses.

A claim is replicated by data sets first: runs of one data set share its difficulty and scale. Each
data set j gives an estimate y_j with a within-data-set sampling variance v_j (runs as the units), and

    y_j = mu + u_j + e_j,    u_j ~ N(0, tau^2) (between data sets),    e_j ~ N(0, v_j).

- tau^2 by Paule-Mandel (statsmodels ``combine_effects(method_re="iterated")``: the generalized-Q
  moment estimator, truncated at 0, recommended with REML by Veroniki et al. 2016; statsmodels'
  DerSimonian-Laird option is not truncated at 0 and can weigh data sets negatively); weights
  w_j = 1 / (v_j + tau^2); mu = sum w_j y_j / sum w_j.
- The interval is Hartung-Knapp-Sidik-Jonkman: var(mu) = sum w_j (y_j - mu)^2 / ((k - 1) sum w_j),
  mu +- t_{k-1} sqrt(var), floored at the robust (sandwich) variance
  k / (k - 1) sum w_j^2 (y_j - mu)^2 / (sum w_j)^2, which holds whatever the weights (Sidik and Jonkman
  2006): HKSJ is exact only when the weights are the true inverse variances, and estimated
  within-data-set variances misweigh (a large noisy data set beside small precise ones). Below
  :data:`KH_MODIFICATION_BELOW` data sets the Knapp-Hartung modification also keeps it no narrower than
  the plain random-effects variance 1 / sum w_j (Röver, Knapp and Friede 2015: with 2-4 studies that
  agree by chance the unmodified interval can be far too narrow).
- The p-value is that of t = (mu - null) / sqrt(var) on k - 1 degrees of freedom, two-sided.
- Heterogeneity: tau^2, and I^2 = max(0, (Q - (k - 1)) / Q) with Cochran's Q (NULL for Q = 0).

Where no within-data-set variance can be estimated (a data set of one unit), the data sets are
weighted equally: y_j's mean with the t interval over them on k - 1 degrees of freedom (what HKSJ gives
with equal weights; tau^2 and I^2 are then not separable from the within variance and stay NULL).

The interval's coverage at the data-set counts the corpora have is shown by simulation in
``tests/analyses/test_stats_calibration.py`` and ``benchmarks/calibration.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analyses.stats.estimate import CONFIDENCE

#: Below this many data sets the HKSJ variance is floored at the plain random-effects variance.
KH_MODIFICATION_BELOW = 5
#: The level of the equivalence (TOST) interval: a 90% interval inside the band is a 5% equivalence test.
EQUIVALENCE_CONFIDENCE = 0.90


@dataclass(frozen=True)
class Pooled:
    """A pooled estimate on the pooling scale: value, its standard error and degrees of freedom (the
    interval is value +- t_df se; ``df`` inf for a normal interval), the 95% and 90% intervals, the
    two-sided p of ``null``, and the heterogeneity (tau^2, I^2; NaN where not estimable) over k data sets."""

    value: float
    se: float
    df: float
    low: float
    high: float
    low90: float
    high90: float
    p: float
    tau2: float
    i2: float
    k: int
    method: str

    @classmethod
    def missing(cls, k: int = 0, method: str = "", value: float = math.nan) -> Pooled:
        nan = math.nan
        return cls(value, nan, nan, nan, nan, nan, nan, nan, nan, nan, k, method)


def t_interval(value: float, se: float, df: float, null: float = 0.0, *, k: int = 1, tau2: float = math.nan,
               i2: float = math.nan, method: str = "") -> Pooled:
    """value +- t_df se at :data:`CONFIDENCE` and :data:`EQUIVALENCE_CONFIDENCE` (normal for df inf), and
    the two-sided p of ``null``. A zero (to rounding: 1e-12 of the value's scale) or non-finite se gives
    no interval: an estimate whose spread cannot be told is not decided on a zero-width interval."""
    if not (math.isfinite(value) and math.isfinite(se) and se > 1e-12 * max(1.0, abs(value)) and df > 0):
        return Pooled(value, se, df, math.nan, math.nan, math.nan, math.nan, math.nan, tau2, i2, k, method)
    dist = stats.norm if math.isinf(df) else stats.t(df)
    q95, q90 = dist.ppf(0.5 + CONFIDENCE / 2), dist.ppf(0.5 + EQUIVALENCE_CONFIDENCE / 2)
    p = float(2 * dist.sf(abs(value - null) / se))
    return Pooled(value, se, df, value - q95 * se, value + q95 * se, value - q90 * se, value + q90 * se, p,
                  tau2, i2, k, method)


def random_effects(y: np.ndarray, v: np.ndarray, null: float = 0.0) -> Pooled:
    """The random-effects pool (module doc) of estimates y (k,) with within variances v (k,).

    Entries where y is not finite are left out. Where any v is missing or not positive, every data set
    weighs equally (the t interval over the k estimates). k = 1 gives no pool (see
    :func:`analyses.stats.claims.infer`, which falls back to the one data set's own interval)."""
    y, v = np.asarray(y, float), np.asarray(v, float)
    ok = np.isfinite(y)
    y, v = y[ok], v[ok]
    k = int(len(y))
    if k < 2:
        return Pooled.missing(k, "random effects (needs 2 data sets)")
    if not (np.isfinite(v).all() and (v > 0).all()):
        sd = float(np.std(y, ddof=1))
        return t_interval(float(y.mean()), sd / math.sqrt(k), k - 1, null, k=k,
                          method=f"equal-weight mean of {k} data-set estimates, t_{k - 1}")
    from statsmodels.stats.meta_analysis import combine_effects

    with np.errstate(divide="ignore", invalid="ignore"):  # statsmodels' own I^2 divides by Q = 0
        res = combine_effects(y, v, method_re="iterated", use_t=True)
    mu, w = float(res.mean_effect_re), 1.0 / (v + float(res.tau2))
    robust = k / (k - 1) * float((w * w * (y - mu) ** 2).sum()) / float(w.sum()) ** 2
    var = max(float(res.var_hksj_re), robust)
    method = f"random effects (Paule-Mandel tau^2), HKSJ t_{k - 1}"
    if k < KH_MODIFICATION_BELOW:
        var = max(var, float(res.var_eff_w_re))
        method += ", Knapp-Hartung modified (k < 5)"
    q = float(res.q)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else math.nan
    return t_interval(mu, math.sqrt(var), k - 1, null, k=k, tau2=float(res.tau2), i2=i2, method=method)
