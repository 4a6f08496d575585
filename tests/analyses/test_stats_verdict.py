"""The statistics core: the verdict rule (with equivalence at a 90% interval), the declared band, the
paper/sharpened pairing, Holm over testable distinct confirmatory rows, and the interval estimators every
stage's verdicts use."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import polars as pl
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analyses.kit.tables import write_verdicts
from analyses.stats import (
    Estimate,
    Verdict,
    cluster_bootstrap,
    decide,
    mean_ci,
    pearson_ci,
    row_bootstrap,
    wilson_ci,
)
from analyses.stats.verdict import holm_adjusted, interval_p

BAND = {"negligible": 0.1, "band_units": "r"}


@pytest.mark.parametrize(("lo", "hi", "predicted", "expected"), [
    (0.1, 0.5, "positive", "supported"),
    (-0.5, -0.1, "positive", "not supported"),
    (-0.5, -0.1, "negative", "supported"),
    (0.1, 0.5, "negative", "not supported"),
    (-0.1, 0.5, "positive", "inconclusive"),
    (None, 0.5, "positive", "inconclusive"),
    (float("nan"), 0.5, "positive", "inconclusive"),
])
def test_decide(lo, hi, predicted, expected):
    assert decide(lo, hi, predicted) == expected


def test_decide_against_a_null_and_a_negligible_band():
    assert decide(1.2, 1.5, "positive", null=1.0) == "supported"
    assert decide(0.8, 1.1, "positive", null=1.0) == "inconclusive"
    assert decide(-0.01, 0.02, "positive", negligible=0.05) == "not supported"


def test_equivalence_is_decided_on_the_90_percent_interval():
    # the 95% interval leaves the band, the 90% one does not: two one-sided tests at 5% show equivalence
    assert decide(-0.06, 0.045, "positive", 0.0, 0.05, 0.0, low90=-0.045, high90=0.03) == "not supported"
    assert decide(-0.06, 0.045, "positive", 0.0, 0.05, 0.0) == "inconclusive"  # no 90% interval given
    assert decide(-0.06, 0.045, "positive", 0.0, 0.05, 0.0, low90=-0.055, high90=0.03) == "inconclusive"


def test_point_estimate_inside_the_band_is_not_supported_as_an_effect():
    assert decide(0.02, 0.15, "positive", 0.0, 0.1, point=0.08) == "inconclusive"
    assert decide(0.02, 0.15, "positive", 0.0, 0.1, point=0.12) == "supported"
    assert decide(0.02, 0.09, "positive", 0.0, 0.1, point=0.05) == "not supported"


def test_a_magnitude_claim_needs_its_interval_to_reach_the_magnitude():
    assert decide(0.86, 0.95, "at_least", 0.89, 0.05) == "supported"
    assert decide(0.30, 0.95, "at_least", 0.89, 0.05) == "inconclusive"
    assert decide(0.10, 0.60, "at_least", 0.89, 0.05) == "not supported"


def test_every_verdict_declares_its_band_and_a_sharpened_row_its_pair():
    with pytest.raises(ValueError, match="negligible band"):
        Verdict("x.y", "001", "c", "t", "r", "positive", 0.1, 0.0, 0.2, 10, "runs")
    with pytest.raises(ValueError, match="pair"):
        Verdict("x.y", "001", "c", "t", "r", "positive", 0.1, 0.0, 0.2, 10, "runs", role="sharpened", **BAND)


def test_band_sensitivity_flags_calls_that_a_band_of_half_or_twice_would_change():
    v = Verdict("x.y", "001", "c", "t", "r", "positive", 0.12, 0.05, 0.2, 40, "runs", **BAND)
    assert v.row("s")["verdict"] == "supported" and v.row("s")["band_sensitive"] is True
    w = Verdict("x.y", "001", "c", "t", "r", "positive", 0.5, 0.3, 0.7, 40, "runs", **BAND)
    assert w.row("s")["band_sensitive"] is False


def test_interval_p_inverts_a_t_interval_on_its_degrees_of_freedom():
    se = 0.1
    half = stats.t.ppf(0.975, 2) * se
    assert interval_p(0.25, 0.25 - half, 0.25 + half, 0.0, df=2) == pytest.approx(2 * stats.t.sf(2.5, 2))
    z = 1.959964 * se
    assert interval_p(0.25, 0.25 - z, 0.25 + z, 0.0) == pytest.approx(2 * stats.norm.sf(2.5), rel=1e-4)
    # the small-df interval read with a normal quantile gives another p altogether
    assert interval_p(0.25, 0.25 - half, 0.25 + half, 0.0) > 1.5 * interval_p(0.25, 0.25 - half, 0.25 + half, 0.0, df=2)


def _frame(rows: list[dict]) -> pl.DataFrame:
    base = {"claim_id": "", "family": "001", "role": "paper", "pair": "", "exploratory": False, "effect": 0.3,
            "ci_low": 0.1, "ci_high": 0.5, "null_value": 0.0, "predicted": "positive", "p_value": 0.01,
            "verdict": "supported", "confound": ""}
    return pl.DataFrame([{**base, **r} for r in rows])


def test_holm_runs_over_testable_distinct_confirmatory_rows_of_each_paper():
    frame = _frame([
        {"claim_id": "a", "p_value": 0.01},
        {"claim_id": "b", "p_value": 0.02, "effect": 0.31},
        {"claim_id": "b_dup", "p_value": 0.02, "effect": 0.31},  # the same estimate again: not a new hypothesis
        {"claim_id": "c", "p_value": None, "verdict": "inconclusive"},  # untestable
        {"claim_id": "d", "p_value": 0.04, "effect": 0.2, "verdict": "supported"},
        {"claim_id": "e", "family": "000", "exploratory": True, "p_value": 0.04},
        {"claim_id": "f", "family": "004", "p_value": 0.03},
    ])
    out = holm_adjusted(frame)
    assert out["in_holm"].to_list() == [True, True, False, False, True, False, True]
    ref = multipletests([0.01, 0.02, 0.04], method="holm")[1]
    got = out.filter(pl.col("family") == "001", pl.col("in_holm"))["p_holm"].to_list()
    assert got == pytest.approx(list(ref))
    assert out.filter(pl.col("claim_id") == "d")["verdict_adjusted"].item() == "supported"  # 0.04 * 1
    assert out.filter(pl.col("claim_id") == "f")["p_holm"].item() == pytest.approx(0.03)
    explo = out.filter(pl.col("claim_id") == "e").row(0, named=True)
    assert explo["p_holm"] is None and explo["verdict_adjusted"] == "supported"
    assert explo["reading"].startswith("exploratory")


def test_holm_turns_a_supported_call_inconclusive_above_the_family_level():
    out = holm_adjusted(_frame([{"claim_id": "a", "p_value": 0.03}, {"claim_id": "b", "p_value": 0.04,
                                                                       "effect": 0.2}]))
    assert out["verdict_adjusted"].to_list() == ["inconclusive", "inconclusive"]
    assert out["verdict"].to_list() == ["supported", "supported"]


def test_a_pair_reads_as_holding_but_structural_when_only_the_paper_row_holds():
    out = holm_adjusted(_frame([
        {"claim_id": "bias", "p_value": 0.001},
        {"claim_id": "bias.beyond_init", "role": "sharpened", "pair": "bias", "effect": -0.4, "ci_low": -0.8,
         "ci_high": -0.1, "p_value": 0.01, "verdict": "not supported", "confound": "initialization"},
        {"claim_id": "rank", "p_value": 0.002, "effect": 0.25},
        {"claim_id": "rank.beyond_time", "role": "sharpened", "pair": "rank", "effect": 0.22, "p_value": 0.003,
         "confound": "training time"},
    ]))
    reading = dict(zip(out["claim_id"], out["reading"], strict=True))
    structural = "holds as stated, but not beyond initialization (structural)"
    assert reading["bias"] == reading["bias.beyond_init"] == structural
    assert reading["rank.beyond_time"] == "holds as stated, and beyond training time"


def test_pearson_ci_matches_scipy_and_fisher_z():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    y[3] = np.nan
    est = pearson_ci(x, y)
    r, lo, hi, p, n = est.value, est.low, est.high, est.p, est.n
    ref = stats.pearsonr(x[np.isfinite(y)], y[np.isfinite(y)])
    assert n == 199 and r == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert np.isnan(pearson_ci(np.ones(10), np.arange(10.0)).value)


def test_cluster_bootstrap_counts_clusters_not_rows():
    rng = np.random.default_rng(1)
    # 30 clusters with a shared offset each and 20 rows apiece: the row-level SE would be ~4.5x too small
    offsets = rng.normal(size=30)
    frame = pl.DataFrame({"run": np.repeat(np.arange(30), 20),
                          "v": np.repeat(offsets, 20) + 0.01 * rng.normal(size=600)})
    boot = cluster_bootstrap(frame, "run", lambda f: float(f["v"].mean()), n_boot=500, unit="runs")
    est, lo, hi = boot.value, boot.low, boot.high
    assert (boot.n, boot.unit) == (30, "runs")
    se = offsets.std(ddof=1) / np.sqrt(30)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.3)
    assert lo < est < hi


def test_mean_and_wilson_intervals():
    est = mean_ci(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (est.value, est.n) == (2.0, 3) and (est.low, est.high) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-3)
    assert est.df == 2 and not mean_ci(np.full(4, 0.5)).has_interval  # no zero-width interval
    assert est.p == pytest.approx(stats.ttest_1samp([1.0, 2.0, 3.0], 0.0).pvalue)
    est = wilson_ci(8, 10)
    assert est.value == 0.8 and (est.low, est.high) == pytest.approx((0.4902, 0.9433), abs=1e-3)


def test_write_verdicts_round_trip():
    con = duckdb.connect()
    v = Verdict("c1", "001 §5.5.5", "claim", "test", "r", "positive", 0.4, 0.1, 0.7, 12, "runs", p_value=0.01, **BAND)
    write_verdicts(con, "toy", [v, Verdict("c2", "s", "claim 2", "t", "r", "negative", float("nan"),
                                            None, None, 2, "runs", **BAND)])
    rows = con.execute("SELECT stage, claim_id, effect, verdict FROM analysis_toy_verdicts "
                       "ORDER BY claim_id").fetchall()
    assert rows == [("toy", "c1", 0.4, "supported"), ("toy", "c2", None, "inconclusive")]


def test_nonzero_claims_are_supported_on_either_side_and_refuted_by_a_negligible_interval() -> None:
    assert decide(0.2, 0.5, "nonzero") == decide(-0.5, -0.2, "nonzero") == "supported"
    assert decide(-0.1, 0.3, "nonzero") == "inconclusive"
    assert decide(-0.05, 0.05, "nonzero", negligible=0.1) == "not supported"


def test_row_bootstrap_interval_matches_the_normal_theory_one() -> None:
    x = np.random.default_rng(0).normal(size=400)
    boot = row_bootstrap(lambda idx: x[idx].mean(axis=-1), len(x))
    t = mean_ci(x)
    assert boot.n == 400 and boot.value == t.value
    assert abs(boot.low - t.low) < 0.02 and abs(boot.high - t.high) < 0.02
    assert not row_bootstrap(lambda idx: x[idx].mean(axis=-1), 3).has_interval


def test_a_verdict_of_an_estimate_carries_its_interval_n_unit_and_p() -> None:
    est = Estimate(0.4, 0.1, 0.7, 12, "runs", p=0.01, df=11)
    v = Verdict.of(est, "c1", "001", "claim", "test", "r", "positive", detail="d", **BAND)
    assert (v.effect, v.ci_low, v.ci_high, v.n, v.n_unit, v.p_value, v.df) == (0.4, 0.1, 0.7, 12, "runs", 0.01, 11)
    row = v.row("s")
    assert row["verdict"] == "supported" and row["p_value"] == 0.01 and row["ci90_low"] > 0.1
    assert Verdict.of(est, "c1", "001", "claim", "test", "r", "positive", with_p=False, **BAND).p_value is None
    assert math.isfinite(Verdict.of(est, "c1", "001", "claim", "test", "r", "positive", with_p=False,
                                    **BAND).row("s")["p_value"])


def test_a_paper_row_reads_against_each_of_its_sharpened_rows():
    out = holm_adjusted(_frame([
        {"claim_id": "t", "p_value": 0.001},
        {"claim_id": "t.beyond_time", "role": "sharpened", "pair": "t", "effect": 0.02, "ci_low": -0.05,
         "ci_high": 0.09, "p_value": 0.5, "verdict": "inconclusive", "confound": "training time (the step)"},
        {"claim_id": "t.beyond_scale", "role": "sharpened", "pair": "t", "effect": 0.25, "ci_low": 0.1,
         "ci_high": 0.4, "p_value": 0.002, "confound": "weight scale (ln variance and norm)"},
    ]))
    reading = dict(zip(out["claim_id"], out["reading"], strict=True))
    assert reading["t.beyond_time"] == "holds as stated; beyond training time undecided"
    assert reading["t.beyond_scale"] == "holds as stated, and beyond weight scale"
    assert reading["t"] == "holds as stated; beyond training time undecided; holds as stated, and beyond weight scale"


def test_an_asymmetric_interval_gives_its_90_percent_band_and_p_half_by_half():
    # a Fisher-z interval of r = 0.9: the 90 % band stays inside the 95 % one and below 1, and p reads the
    # half towards the null
    v = Verdict("x.y", "001", "c", "t", "r", "positive", 0.9, 0.5, 0.95, 20, "runs", **BAND)
    row = v.row("s")
    assert 0.5 < row["ci90_low"] < 0.9 < row["ci90_high"] < 0.95
    assert row["p_value"] == pytest.approx(interval_p(0.9, 0.5, 0.95, 0.0))
    assert interval_p(0.9, 0.5, 0.95, 0.0) == pytest.approx(2 * stats.norm.sf(0.9 / (0.4 / 1.959964)), rel=1e-4)
    # an estimate already inside the band is not pushed out of it by the far half
    w = Verdict("x.y", "001", "c", "t", "r", "positive", 0.04, -0.06, 0.09, 200, "runs", **BAND)
    assert w.row("s")["ci90_high"] < 0.1 and w.row("s")["verdict"] == "not supported"


def test_row_bootstrap_with_degenerate_resamples_warns_nothing_and_leaves_them_out() -> None:
    """A correlation is NaN on a resample where a column is constant: scipy's unused interval would warn
    (DegenerateDataWarning, printed during `make report`); the interval leaves those resamples out."""
    import warnings

    rng = np.random.default_rng(3)
    x, y = np.array([0.0, 0.0, 0.0, 1.0, 1.0]), rng.normal(size=5)  # about 9 % of resamples have x constant

    def r(idx):
        a, b = x[idx], y[idx]
        a, b = a - a.mean(axis=-1, keepdims=True), b - b.mean(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boot = row_bootstrap(r, 5, n_boot=400)
    assert -1 <= boot.low <= boot.value <= boot.high <= 1
