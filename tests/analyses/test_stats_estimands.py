"""The estimands: each data set's estimate and within variance against brute force (the pooled variance of
a mean, Fisher's z of a (partial, within-strata, Spearman) correlation, the delete-one-run jackknife),
the share with its design effect, and the bootstrap of a refitted statistic."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from analyses.stats import ClaimData, Concordance, Correlation, Jackknifed, Mean, Resampled, pearson
from analyses.stats.claims import _groups, infer
from analyses.stats.estimands import PRIOR_DF
from analyses.stats.intervals import design_effect


def _rows(sizes: list[int], rows_per_run: int = 1) -> pl.DataFrame:
    runs, datasets = [], []
    for j, m in enumerate(sizes):
        for r in range(m):
            runs += [f"d{j}r{r}"] * rows_per_run
            datasets += [f"d{j}"] * rows_per_run
    return pl.DataFrame({"run_id": runs, "dataset": datasets})


def test_mean_moderates_each_data_sets_variance_towards_the_pooled_one() -> None:
    rng = np.random.default_rng(0)
    sizes = [4, 7, 1, 12]
    rows = _rows(sizes)
    v = rng.normal(size=sum(sizes)) * np.repeat([1.0, 2.0, 1.0, 0.5], sizes)
    within = Mean(v).per_dataset(_groups(rows))
    parts = np.split(v, np.cumsum(sizes)[:-1])
    s2 = sum((len(p) - 1) * p.var(ddof=1) for p in parts if len(p) > 1) / sum(len(p) - 1 for p in parts)
    for w, p in zip(within, parts, strict=True):
        assert w.value == pytest.approx(p.mean()) and w.units == len(p)
        own = p.var(ddof=1) if len(p) > 1 else s2  # the one-run data set takes the pooled s^2
        moderated = ((len(p) - 1) * own + PRIOR_DF * s2) / (len(p) - 1 + PRIOR_DF)
        assert w.variance == pytest.approx(moderated / len(p))


def test_correlation_per_data_set_is_fishers_z_with_its_variance() -> None:
    rng = np.random.default_rng(1)
    sizes = [20, 30, 4]
    rows = _rows(sizes)
    x = rng.normal(size=54)
    y = 0.4 * x + rng.normal(size=54)
    t = rng.normal(size=54)
    groups = _groups(rows)
    plain = Correlation(x, y).per_dataset(groups)
    for w, (lo, hi) in zip(plain[:2], [(0, 20), (20, 50)], strict=True):
        assert w.value == pytest.approx(math.atanh(stats.pearsonr(x[lo:hi], y[lo:hi]).statistic))
        assert w.variance == pytest.approx(1 / (hi - lo - 3)) and math.isinf(w.df)
    assert math.isnan(plain[2].value)  # four runs: left out, not weighed
    partial = Correlation(x, y, controls=t).per_dataset(groups)[0]
    rx, ry = (v[:20] - np.polyval(np.polyfit(t[:20], v[:20], 1), t[:20]) for v in (x, y))
    assert partial.value == pytest.approx(math.atanh(pearson(rx, ry))) and partial.variance == pytest.approx(1 / 16)
    strata = np.tile(["a", "b"], 27)
    within = Correlation(x, y, strata=strata, method="spearman").per_dataset(groups)[1]
    r = math.tanh(within.value)
    assert within.variance == pytest.approx((1 + r * r / 2) / (30 - 2 - 2))  # two strata, Bonett-Wright


def test_several_rows_per_run_take_the_delete_one_run_jackknife() -> None:
    rng = np.random.default_rng(2)
    rows = _rows([6, 8], rows_per_run=3)
    run_effect = np.repeat(rng.normal(size=14), 3)
    x = run_effect + rng.normal(size=42)
    y = run_effect + 0.3 * x + rng.normal(size=42)
    groups = _groups(rows)
    got = Correlation(x, y).per_dataset(groups)
    jack = Jackknifed(lambda i: pearson(x[i], y[i]), "fisher_z").per_dataset(groups)
    # brute force for the first data set: leave each of its 6 runs out
    idx = np.arange(18)
    loo = np.array([math.atanh(pearson(x[idx[idx // 3 != r]], y[idx[idx // 3 != r]])) for r in range(6)])
    own = 5 / 6 * ((loo - loo.mean()) ** 2).sum()
    idx2 = np.arange(18, 42)
    loo2 = np.array([math.atanh(pearson(x[idx2[(idx2 - 18) // 3 != r]], y[idx2[(idx2 - 18) // 3 != r]]))
                     for r in range(8)])
    own2 = 7 / 8 * ((loo2 - loo2.mean()) ** 2).sum()
    pooled = (5 * 6 * own + 7 * 8 * own2) / 12  # per-run variance pooled over the data sets
    mod = [(5 * 6 * own + PRIOR_DF * pooled) / (5 + PRIOR_DF), (7 * 8 * own2 + PRIOR_DF * pooled) / (7 + PRIOR_DF)]
    for w in (got, jack):
        assert w[0].value == pytest.approx(math.atanh(pearson(x[:18], y[:18])))
        assert w[0].variance == pytest.approx(mod[0] / 6) and w[1].variance == pytest.approx(mod[1] / 8)
        assert (w[0].units, w[1].units) == (6, 8)


def test_design_effect_and_the_concordance_interval() -> None:
    # ten clusters of 10: alternately all-positive and half-positive: a strong cluster effect
    scores = np.concatenate([np.ones(10) if j % 2 else np.r_[np.ones(5), np.zeros(5)] for j in range(10)])
    clusters = np.repeat(np.arange(10), 10)
    deff, icc = design_effect(scores, clusters)
    means = scores.reshape(10, 10).mean(axis=1)
    msb = 10 * ((means - scores.mean()) ** 2).sum() / 9
    msw = ((scores.reshape(10, 10) - means[:, None]) ** 2).sum() / 90
    assert icc == pytest.approx((msb - msw) / (msb + 9 * msw)) and deff == pytest.approx(1 + 9 * icc)
    # unequal clusters: Kish's size-weighted cluster size sum m^2 / n, not the ANOVA's m0
    uneven = np.r_[np.ones(40), np.zeros(5), np.ones(2), np.zeros(3)]
    d2, icc2 = design_effect(uneven, np.repeat([0, 1, 2], [40, 5, 5]))
    assert icc2 > 0 and d2 == pytest.approx(1 + ((40 ** 2 + 5 ** 2 + 5 ** 2) / 50 - 1) * icc2)
    rows = _rows([10] * 10)
    pooled, _ = infer(ClaimData(rows, Concordance(2 * scores - 1, +1)), 0.5)
    n_eff = 100 / deff
    z = stats.norm.ppf(0.975)
    p = 0.75
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff ** 2)) / (1 + z * z / n_eff)
    assert pooled.value == 0.75 and (pooled.low, pooled.high) == pytest.approx((centre - half, centre + half))
    assert pooled.p == pytest.approx(2 * stats.norm.sf(0.25 / math.sqrt(0.25 / n_eff)))
    agree, _ = infer(ClaimData(_rows([5, 5]), Concordance(np.ones(10), +1)), 0.5)
    assert agree.high == pytest.approx(1.0) and agree.low < 0.75  # runs that all agree: still an interval


def test_the_resampled_statistic_bootstraps_within_data_sets() -> None:
    rng = np.random.default_rng(3)
    rows = _rows([40, 40])
    v = rng.normal(size=80) + np.repeat([0.0, 5.0], 40)
    est = Resampled(lambda i: float(v[i].mean()), 2000, seed=1)
    pooled, _ = infer(ClaimData(rows, est), 0.0)
    # data sets fixed: the spread is the within-data-set one, not the 5-unit gap between them
    se = math.sqrt((v[:40].var(ddof=1) + v[40:].var(ddof=1)) / 40) / 2
    assert pooled.value == pytest.approx(v.mean())
    assert pooled.se == pytest.approx(se, rel=0.1) and pooled.high - pooled.low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert pooled.p == pytest.approx(2 * stats.norm.sf(abs(v.mean()) / pooled.se))
