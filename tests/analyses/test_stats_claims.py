"""The claim assessment of the statistics core: a nested estimand pooled across data sets, the baseline
shown and never subtracted, one data set's own interval, leave-one-group-out ranges, and the verdict row
it decides."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from analyses.kit.tables import study_membership, write_verdicts
from analyses.stats import ClaimData, Correlation, Estimate, Mean, Verdict, assess, pearson
from analyses.stats.claims import infer


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


def _claim(frame: pl.DataFrame, sharpened: bool = True) -> ClaimData:
    x, y, t = (frame[c].to_numpy() for c in ("x", "y", "t"))
    if not sharpened:
        return ClaimData(frame.select("run_id", "dataset"), Correlation(x, y))
    return ClaimData(frame.select("run_id", "dataset"), Correlation(x, y, controls=t), confound="training time",
                     baseline=lambda i: pearson(t[i], y[i]), baseline_name="r(t, y)")


def _membership(frame: pl.DataFrame) -> dict[str, tuple[str, ...]]:
    return {r: (s,) for r, s in frame.select("run_id", "study").iter_rows()}


def _verdict(claim_id: str = "c.x", **kw) -> Verdict:
    kw.setdefault("negligible", 0.1)
    kw.setdefault("band_units", "r")
    return Verdict(claim_id, "001 §5", "claim", "test", "r", "positive", 0.5, 0.2, 0.7, 24, "runs", **kw)


def test_a_claim_driven_by_its_confound_holds_as_stated_but_not_beyond_it():
    frame = _runs(6, 12, seed=1, beyond=0.0)
    paper = assess(_claim(frame, sharpened=False), "positive", 0.0, _membership(frame))
    sharp = assess(_claim(frame), "positive", 0.0, _membership(frame))
    assert paper.low > 0.3  # x and y move together, through t
    assert sharp.low < 0 < sharp.high and abs(sharp.value) < 0.15
    assert sharp.baseline == pytest.approx(pearson(frame["t"].to_numpy(), frame["y"].to_numpy()))
    assert sharp.n_datasets == 6 and sharp.n_runs == 72 and "HKSJ t_5" in sharp.method
    row = _verdict(data=_claim(frame)).row("s", sharp)
    assert row["verdict"] != "supported" and row["confound"] == "training time"
    assert row["stage_effect"] == 0.5 and row["effect"] == pytest.approx(sharp.value)


def test_a_claim_true_beyond_its_confound_is_supported():
    frame = _runs(6, 12, seed=2, beyond=1.0)
    a = assess(_claim(frame), "positive", 0.0, _membership(frame))
    row = _verdict(data=_claim(frame)).row("s", a)
    assert a.low > 0.1 and row["verdict"] == "supported" and row["p_value"] < 0.01
    assert row["tau2"] is not None and row["i2"] is not None and row["ci90_low"] > row["ci_low"]


def test_the_pooled_value_is_the_random_effects_mean_of_the_data_sets():
    frame = _runs(5, 10, seed=3, beyond=0.5)
    data = _claim(frame, sharpened=False)
    pooled, _ = infer(data, 0.0)
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    z = np.array([np.arctanh(pearson(x[i:i + 10], y[i:i + 10])) for i in range(0, 50, 10)])
    from analyses.stats.meta import random_effects

    assert pooled.value == pytest.approx(np.tanh(random_effects(z, np.full(5, 1 / 7)).value))


def test_leave_one_out_ranges_name_the_least_favourable_group():
    frame = _runs(5, 10, seed=4, beyond=1.0)
    flipped = frame.with_columns(
        pl.when(pl.col("dataset") == "d0").then(-pl.col("y")).otherwise(pl.col("y")).alias("y"))
    data = _claim(flipped, sharpened=False)
    a = assess(data, "positive", 0.0, _membership(flipped))
    brute = {}
    for d in [f"d{j}" for j in range(5)]:
        kept = flipped.filter(pl.col("dataset") != d)
        brute[d] = infer(_claim(kept, sharpened=False), 0.0)[0].value
    assert (a.lodo_low, a.lodo_high) == pytest.approx((min(brute.values()), max(brute.values())))
    worst = min(brute, key=brute.get)
    assert a.lodo_worst.startswith(worst) and worst != "d0"  # removing d0 helps the claim
    brute_s = {s: infer(_claim(flipped.filter(pl.col("study") != s), sharpened=False), 0.0)[0].value
               for s in ("a", "b")}
    assert (a.loso_low, a.loso_high) == pytest.approx((min(brute_s.values()), max(brute_s.values())))


def test_one_data_set_gives_its_own_interval_and_says_so():
    frame = pl.DataFrame({"run_id": [f"r{i}" for i in range(8)], "dataset": ["x"] * 8})
    d = np.array([0.1, 0.3, 0.2, 0.4, 0.0, 0.2, 0.3, 0.1])
    a = assess(ClaimData(frame, Mean(d)), "positive", 0.0)
    ref = Estimate(d.mean(), *(d.mean() + np.array([-1, 1]) * 2.3646 * d.std(ddof=1) / np.sqrt(8)), 8)
    assert (a.low, a.high) == pytest.approx((ref.low, ref.high), abs=1e-3)
    assert a.method.startswith("one data set (x)") and a.df == 7


def test_data_sets_too_small_for_an_estimate_are_left_out_and_named():
    frame = _runs(4, 10, seed=5, beyond=1.0).vstack(_runs(1, 3, seed=6, beyond=1.0).with_columns(
        pl.lit("tiny").alias("dataset"), (pl.col("run_id") + "t").alias("run_id")))
    a = assess(_claim(frame), "positive", 0.0)
    assert a.n_datasets == 5 and any("tiny (3)" in n for n in a.notes)


def test_write_verdicts_assesses_rows_with_the_corpus_study_membership():
    con = duckdb.connect()
    frame = _runs(4, 14, seed=5, beyond=1.0)
    con.execute("CREATE TABLE studies AS SELECT 'c' AS corpus, study, run_id FROM frame")
    assert study_membership(con)["d0r1"] == ("a",)
    write_verdicts(con, "demo", [_verdict("demo.x", data=_claim(frame)), _verdict("demo.y")])
    rows = con.sql("SELECT * FROM analysis_demo_verdicts ORDER BY claim_id").pl().to_dicts()
    assert "random effects" in rows[0]["interval_method"] and rows[0]["loso_worst"]
    assert rows[0]["n_runs"] == 56 and rows[0]["family"] == "001" and rows[0]["n_datasets"] == 4
    assert rows[1]["interval_method"] == "the stage's own interval" and rows[1]["n_runs"] is None


def test_claim_data_refuses_rows_without_run_and_data_set_or_a_baseline_without_its_confound():
    with pytest.raises(ValueError, match="run_id"):
        ClaimData(pl.DataFrame({"dataset": ["a"]}), Mean(np.zeros(1)))
    with pytest.raises(ValueError, match="confound"):
        ClaimData(pl.DataFrame({"run_id": ["r"], "dataset": ["a"]}), Mean(np.zeros(1)), baseline=lambda i: 0.0,
                  baseline_name="b")


def test_within_partial_r_is_the_point_value_of_within_group_r():
    from analyses.stats import within_group_r, within_partial_r

    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(4), 15)
    c = rng.normal(size=(60, 2)) + g[:, None]
    x = c[:, 0] + rng.normal(size=60) + 3 * g
    y = x + c[:, 1] + rng.normal(size=60)
    assert within_partial_r(x, y, g) == pytest.approx(within_group_r(x, y, g).value, abs=1e-12)
    assert within_partial_r(x, y, g, c) == pytest.approx(within_group_r(x, y, g, c).value, abs=1e-12)
