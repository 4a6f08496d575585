"""The claim assessment of the statistics core: the two-level bootstrap, the baseline, the decisive
quantity, leave-one-group-out ranges, the bootstrap p, the verdict rule's band and magnitude cases,
and the Holm adjustment of the collected verdicts."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analyses.stats import ClaimData, Estimate, Verdict, assess, decide, pearson, two_level_resamples, write_verdicts
from analyses.stats.claims import bootstrap_p, study_membership
from analyses.stats.verdict import holm_adjusted, interval_p


def _runs(n_datasets: int, n_runs: int, seed: int, beyond: float) -> pl.DataFrame:
    """One row per run: training time t drives x and y; ``beyond`` adds a share of x to y that t
    does not explain."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_datasets):
        for r in range(n_runs):
            t = rng.uniform(0, 2)
            x = t + rng.normal(0, 0.3)
            y = t + beyond * (x - t) + rng.normal(0, 0.3)
            rows.append({"run_id": f"d{d}r{r}", "dataset": f"d{d}", "t": t, "x": x, "y": y,
                         "study": "a" if r % 2 else "b"})
    return pl.DataFrame(rows)


def _partial(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> float:
    design = np.c_[np.ones_like(t), t]
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return pearson(rx, ry)


def _claim(frame: pl.DataFrame) -> ClaimData:
    x, y, t = (frame[c].to_numpy() for c in ("x", "y", "t"))
    return ClaimData(frame.select("run_id", "dataset"), lambda i: pearson(x[i], y[i]), confound="training time",
                     baseline=lambda i: pearson(t[i], y[i]), baseline_name="r(t, y)",
                     beyond=lambda i: _partial(x[i], y[i], t[i]), beyond_name="partial r given t")


def _membership(frame: pl.DataFrame) -> dict[str, tuple[str, ...]]:
    return {r: (s,) for r, s in frame.select("run_id", "study").iter_rows()}


def test_two_level_resamples_draw_data_sets_then_whole_runs():
    # 4 data sets with 1, 2, 3, 4 runs of 2 rows each
    run_dataset = np.array(["a", "b", "b", "c", "c", "c", "d", "d", "d", "d"], dtype=object)
    run_rows = [np.array([2 * i, 2 * i + 1]) for i in range(10)]
    draws, level = two_level_resamples(run_dataset, run_rows, 500, seed=3)
    assert level == "data sets, then runs within them"
    seen_sizes = set()
    for idx in draws:
        assert len(idx) % 2 == 0 and np.all(idx[1::2] == idx[::2] + 1)  # runs drawn whole
        runs = idx[::2] // 2
        seen_sizes.add(len(runs))
    # the number of runs varies with which data sets are drawn: the outer level is random
    assert len(seen_sizes) > 3
    fixed, level = two_level_resamples(run_dataset, run_rows, 200, seed=3, fixed_datasets=True)
    assert level == "runs within fixed data sets"
    for idx in fixed:  # every data set keeps its run count
        ds = run_dataset[idx[::2] // 2]
        assert [int((ds == d).sum()) for d in "abcd"] == [1, 2, 3, 4]


def test_two_level_interval_is_wider_than_the_run_level_one_when_data_sets_differ():
    # the effect differs between data sets: runs within one data set agree, data sets do not
    rng = np.random.default_rng(0)
    rows = [{"run_id": f"{d}-{r}", "dataset": str(d), "v": mu + rng.normal(0, 0.05)}
            for d, mu in enumerate(rng.normal(0.3, 0.3, 6)) for r in range(10)]
    frame = pl.DataFrame(rows)
    v = frame["v"].to_numpy()
    a = assess(ClaimData(frame, lambda i: float(v[i].mean())), "positive", 0.0, n_boot=800)
    naive = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=v.std(ddof=1) / np.sqrt(len(v)))
    assert a.level == "data sets, then runs within them" and a.n_datasets == 6 and a.n_runs == 60
    assert (a.effect_high - a.effect_low) > 2.5 * (naive[1] - naive[0])
    # with fewer than MIN_DATASETS data sets they stay fixed
    two = frame.filter(pl.col("dataset").is_in(["0", "1"]))
    v2 = two["v"].to_numpy()
    assert assess(ClaimData(two, lambda i: float(v2[i].mean())), "positive", 0.0).level == \
        "runs within fixed data sets"


def test_a_claim_true_only_through_its_confound_is_not_supported():
    confounded = _runs(6, 12, seed=1, beyond=0.0)
    data = _claim(confounded)
    a = assess(data, "positive", 0.0, _membership(confounded))
    # the claim's effect alone looks strong, the baseline is as strong, nothing is left beyond it
    assert a.effect_low > 0.2 and a.baseline_low > 0.2
    assert a.decisive_low < 0 < a.decisive_high
    v = Verdict.of(Estimate(a.effect, a.effect_low, a.effect_high, a.n_runs, "runs"), "c.x", "001 §5", "claim",
                   "test", "r", "positive", negligible=0.1, data=data)
    row = v.row("s", a)
    assert v.verdict == "supported"  # the stage's own interval alone would have said so
    assert row["verdict"] == "inconclusive" and row["beyond_name"] == "partial r given t"
    assert row["confound"] == "training time" and row["baseline_effect"] == pytest.approx(a.baseline)


def test_a_claim_true_beyond_its_confound_is_supported():
    frame = _runs(6, 12, seed=2, beyond=1.0)
    data = _claim(frame)
    a = assess(data, "positive", 0.0, _membership(frame))
    assert a.decisive_low > 0.1
    row = Verdict.of(Estimate(a.effect, a.effect_low, a.effect_high, a.n_runs, "runs"), "c.x", "001 §5", "claim",
                     "test", "r", "positive", negligible=0.1, data=data).row("s", a)
    assert row["verdict"] == "supported" and row["p_decisive"] < 0.01


def test_difference_from_baseline_is_the_default_decisive_quantity():
    frame = _runs(4, 8, seed=3, beyond=0.5)
    x, y, t = (frame[c].to_numpy() for c in ("x", "y", "t"))
    data = ClaimData(frame, lambda i: pearson(x[i], y[i]), confound="training time",
                     baseline=lambda i: pearson(t[i], y[i]), baseline_name="r(t, y)")
    a = assess(data, "positive", 0.0)
    assert a.decisive == pytest.approx(pearson(x, y) - pearson(t, y))


def test_leave_one_out_ranges_name_the_least_favourable_group():
    frame = _runs(5, 10, seed=4, beyond=1.0)
    # one data set reverses the relation: leaving it out helps, keeping it hurts; removing any other
    # data set keeps it in, so the least favourable removal is not d0
    flipped = frame.with_columns(
        pl.when(pl.col("dataset") == "d0").then(-pl.col("y")).otherwise(pl.col("y")).alias("y"))
    y, x = flipped["y"].to_numpy(), flipped["x"].to_numpy()
    data = ClaimData(flipped, lambda i: pearson(x[i], y[i]))
    a = assess(data, "positive", 0.0, _membership(flipped))
    ds = flipped["dataset"].to_numpy()
    brute = {d: pearson(x[ds != d], y[ds != d]) for d in np.unique(ds)}
    assert a.lodo_low == pytest.approx(min(brute.values())) and a.lodo_high == pytest.approx(max(brute.values()))
    worst = min(brute, key=brute.get)
    assert a.lodo_worst.startswith(worst) and worst != "d0"
    st = flipped["study"].to_numpy()
    brute_s = {s: pearson(x[st != s], y[st != s]) for s in ("a", "b")}
    assert (a.loso_low, a.loso_high) == pytest.approx((min(brute_s.values()), max(brute_s.values())))


def test_bootstrap_p_counts_the_smaller_tail_twice():
    draws = np.r_[np.full(90, 1.0), np.full(10, -1.0)]
    assert bootstrap_p(draws, 0.0) == pytest.approx((2 * 10 + 1) / 101)
    assert bootstrap_p(np.full(100, 2.0), 0.0) == pytest.approx(1 / 101)
    assert np.isnan(bootstrap_p(np.r_[np.full(60, np.nan), np.ones(40)], 0.0))  # under half finite


def test_interval_p_inverts_a_normal_interval():
    se = 0.1
    est, lo, hi = 0.25, 0.25 - 1.959964 * se, 0.25 + 1.959964 * se
    assert interval_p(est, lo, hi, 0.0) == pytest.approx(2 * stats.norm.sf(2.5), rel=1e-4)


def test_point_estimate_inside_the_band_is_not_supported_as_an_effect():
    # interval clear of the null, but the point estimate is negligible
    assert decide(0.02, 0.15, "positive", 0.0, 0.1, point=0.08) == "inconclusive"
    assert decide(0.02, 0.15, "positive", 0.0, 0.1, point=0.12) == "supported"
    assert decide(0.02, 0.09, "positive", 0.0, 0.1, point=0.05) == "not supported"


def test_a_magnitude_claim_needs_its_interval_to_reach_the_magnitude():
    assert decide(0.86, 0.95, "at_least", 0.89, 0.05) == "supported"
    assert decide(0.30, 0.95, "at_least", 0.89, 0.05) == "inconclusive"
    assert decide(0.10, 0.60, "at_least", 0.89, 0.05) == "not supported"
    with pytest.raises(ValueError, match="magnitude"):
        frame = _runs(3, 4, 0, 0.0)
        Verdict("g.x", "004", "c", "t", "r2", "at_least", 0.5, 0.4, 0.6, 10, "models", null_value=0.89,
                data=_claim(frame))


def test_band_sensitivity_flags_calls_that_a_band_of_half_or_twice_would_change():
    v = Verdict("x.y", "001", "c", "t", "r", "positive", 0.12, 0.05, 0.2, 40, "runs", negligible=0.1)
    assert v.row("s")["verdict"] == "supported" and v.row("s")["band_sensitive"] is True
    w = Verdict("x.y", "001", "c", "t", "r", "positive", 0.5, 0.3, 0.7, 40, "runs", negligible=0.1)
    assert w.row("s")["band_sensitive"] is False


def test_holm_adjustment_is_per_family_and_only_weakens_supported_calls():
    frame = pl.DataFrame({
        "family": ["001", "001", "001", "004", "004"],
        "p_decisive": [0.01, 0.02, 0.04, 0.03, None],
        "verdict": ["supported", "supported", "not supported", "supported", "inconclusive"],
    })
    out = holm_adjusted(frame)
    ref = multipletests([0.01, 0.02, 0.04], method="holm")[1]
    assert out["p_holm"].to_list()[:3] == pytest.approx(list(ref))
    assert out["p_holm"].to_list()[3:] == pytest.approx(list(multipletests([0.03, 1.0], method="holm")[1]))
    assert out["verdict_adjusted"].to_list() == ["supported", "supported", "not supported", "inconclusive",
                                                  "inconclusive"]


def test_write_verdicts_assesses_rows_with_the_corpus_study_membership():
    con = duckdb.connect()
    frame = _runs(4, 6, seed=5, beyond=1.0)
    con.execute("CREATE TABLE studies AS SELECT 'c' AS corpus, study, run_id FROM frame")
    assert study_membership(con)["d0r1"] == ("a",)
    data = _claim(frame)
    write_verdicts(con, "demo", [
        Verdict("demo.x", "001 §5", "c", "t", "r", "positive", 0.5, 0.2, 0.7, 24, "runs", negligible=0.1, data=data),
        Verdict("demo.y", "004", "c", "t", "r", "positive", 0.5, 0.2, 0.7, 24, "runs", negligible=0.1)])
    rows = con.sql("SELECT * FROM analysis_demo_verdicts ORDER BY claim_id").pl().to_dicts()
    assert rows[0]["interval_level"] == "data sets, then runs within them" and rows[0]["loso_worst"]
    assert rows[0]["n_runs"] == 24 and rows[0]["family"] == "001"
    assert rows[1]["interval_level"] == "stage interval only" and rows[1]["n_runs"] is None
    assert rows[1]["p_decisive"] == pytest.approx(interval_p(0.5, 0.2, 0.7, 0.0))


def test_claim_data_refuses_rows_without_run_and_data_set():
    with pytest.raises(ValueError, match="run_id"):
        ClaimData(pl.DataFrame({"dataset": ["a"]}), lambda i: 0.0)
    with pytest.raises(ValueError, match="confound"):
        ClaimData(pl.DataFrame({"run_id": ["r"], "dataset": ["a"]}), lambda i: 0.0, baseline=lambda i: 0.0,
                  baseline_name="b")


def test_too_few_units_leave_the_decision_to_the_stage_interval():
    # 4 paired units in 2 data sets: a percentile bootstrap would be far too narrow
    frame = pl.DataFrame({"run_id": ["a", "b", "c", "d"], "dataset": ["x", "x", "y", "y"],
                          "d": [0.0, 0.06, 0.0, 0.06]})
    d = frame["d"].to_numpy()
    data = ClaimData(frame, lambda i: float(d[i].mean()), confound="twins (paired within cells, by design)")
    a = assess(data, "positive", 0.0)
    assert np.isnan(a.effect_low) and a.notes
    est = Estimate(0.03, -0.03, 0.09, 4, "units")
    row = Verdict.of(est, "p.x", "002", "c", "t", "d", "positive", data=data).row("s", a)
    assert row["interval_level"] == "stage interval only" and row["verdict"] == "inconclusive"
    assert row["confound"].startswith("twins")


def test_the_decisive_p_is_taken_at_the_baseline_difference_null_not_the_effects():
    # effect null 0.5 (a rate), decisive = effect - baseline with null 0
    con = duckdb.connect()
    frame = _runs(4, 6, seed=6, beyond=1.0)
    x, y, t = (frame[c].to_numpy() for c in ("x", "y", "t"))
    data = ClaimData(frame.select("run_id", "dataset"), lambda i: pearson(x[i], y[i]) + 0.5,
                     confound="training time", baseline=lambda i: pearson(x[i], y[i]) + 0.5,
                     baseline_name="same")
    write_verdicts(con, "demo", [Verdict("demo.x", "001", "c", "t", "r", "positive", 0.9, 0.8, 1.0, 24, "runs",
                                         null_value=0.5, data=data)])
    p = con.execute("SELECT p_decisive FROM analysis_demo_verdicts").fetchall()[0][0]
    assert p == pytest.approx(1.0)  # decisive is exactly 0 in every resample: no evidence at its null 0


def test_within_partial_r_is_the_point_value_of_within_group_r():
    from analyses.stats import within_group_r, within_partial_r

    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(4), 15)
    c = rng.normal(size=(60, 2)) + g[:, None]
    x = c[:, 0] + rng.normal(size=60) + 3 * g
    y = x + c[:, 1] + rng.normal(size=60)
    assert within_partial_r(x, y, g) == pytest.approx(within_group_r(x, y, g).value, abs=1e-12)
    assert within_partial_r(x, y, g, c) == pytest.approx(within_group_r(x, y, g, c).value, abs=1e-12)
