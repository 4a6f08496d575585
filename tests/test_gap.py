"""The generalization-gap regression (grouped CV, OLS, Kendall tau) and the regularizer comparison."""

from __future__ import annotations

import json
import math

import duckdb
import matplotlib
import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import gap_regression as gr  # noqa: E402
from analyses import generalization_gap as gap  # noqa: E402
from analyses import regularizers as reg  # noqa: E402


def _data(n: int = 60, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k))
    groups = np.repeat(np.arange(6), n // 6).astype(str)
    y = X @ rng.standard_normal(k) + 0.3 * rng.standard_normal(n)
    return X, y, groups


def test_ols_fit_matches_least_squares() -> None:
    X, y, _ = _data()
    r2, r2_adj, fitted = gr.ols_fit(X, y)
    ref = LinearRegression().fit(X, y)
    np.testing.assert_allclose(fitted, ref.predict(X), atol=1e-10)
    assert r2 == pytest.approx(ref.score(X, y), abs=1e-12)
    n, k = X.shape
    assert r2_adj == pytest.approx(1 - (1 - r2) * (n - 1) / (n - k - 1), abs=1e-12)


def test_grouped_cv_never_sees_the_held_out_data_set() -> None:
    """Each data set's predictions equal a fit on the other data sets only."""
    X, y, groups = _data()
    oof = gr.grouped_cv_predictions(X, y, groups, folds=6)  # one data set per fold
    for g in np.unique(groups):
        held = groups == g
        ref = LinearRegression().fit(X[~held], y[~held]).predict(X[held])
        np.testing.assert_allclose(oof[held], ref, atol=1e-10)
    assert gr.cv_r2(y, oof) == pytest.approx(1 - ((y - oof) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_a_data_set_offset_cannot_be_learned_across_data_sets() -> None:
    """y = a constant per data set, unrelated to X: in-sample a per-set feature fits it, grouped CV does not."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(5), 10).astype(str)
    offsets = rng.standard_normal(5) * 3
    y = offsets[np.repeat(np.arange(5), 10)]
    X = y[:, None] + 0.01 * rng.standard_normal((50, 1))  # a feature that just names the data set's level
    X_unrelated = rng.standard_normal((50, 1))
    assert gr.ols_fit(X, y)[0] > 0.99
    assert gr.cv_r2(y, gr.grouped_cv_predictions(X_unrelated, y, groups)) < 0.05


def test_transfer_uses_the_fit_stage_and_predicts_the_other() -> None:
    X, y, groups = _data()
    X_other = X + 1.0
    pred = gr.transfer_predictions(X, y, X_other, groups, folds=6)
    for g in np.unique(groups):
        held = groups == g
        np.testing.assert_allclose(pred[held], LinearRegression().fit(X[~held], y[~held]).predict(X_other[held]),
                                   atol=1e-10)


def test_kendall_and_folds_and_resamples() -> None:
    a, b = np.array([1.0, 2, 3, 4, 5, np.nan]), np.array([2.0, 1, 4, 3, 5, 0])
    tau, p = gr.kendall_tau(a, b)
    ref = stats.kendalltau(a[:5], b[:5])
    assert tau == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert math.isnan(gr.kendall_tau(np.ones(5), np.arange(5.0))[0])
    assert gr.n_folds(np.array(["a"] * 5)) == 0 and gr.n_folds(np.array(list("abc"))) == 3
    groups = np.array(list("aaabbc"))
    res = gr.stratified_resamples(groups, 50, seed=0)
    assert res.shape == (50, 6)
    assert all(sorted(groups[r]) == sorted(groups) for r in res)  # every resample keeps each data set's size


def test_too_few_models_is_a_note_not_a_crash() -> None:
    X, y, groups = _data(n=12, k=15)
    cols, oof = gap.fit_row(X[:, :15], y, groups)
    assert cols["r2_cv"] is None and "too few models" in cols["note"] and np.isnan(oof).all()
    cols, _ = gap.fit_row(X[:, :1], y, np.array(["one"] * 12))
    assert cols["r2"] is not None and cols["r2_cv"] is None and "one data set" in cols["note"]


def test_every_feature_has_one_fixed_transform() -> None:
    for family, features, _ in gap.SPECIFICATIONS.values():
        assert family in ("margins", "other", "combined")
        assert all(f in gap.TRANSFORMS for f in features)
    frame = pl.DataFrame({"m_input_q1": [-2.0, 0.0, 3.0], "n_params": [10.0, 100.0, None]})
    X = gap.design(frame, ("m_input_q1", "n_params"))
    np.testing.assert_allclose(X[:, 0], np.sign([-2, 0, 3]) * np.log1p([2, 0, 3]))
    np.testing.assert_allclose(X[:2, 1], np.log([10.0, 100.0]))
    assert np.isnan(X[2, 1])


def test_gap_stage_on_the_tiny_corpus(built_corpus) -> None:
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    try:
        n_class = con.execute("""SELECT count(*) FROM runs WHERE task = 'classification'
                                 AND status = 'complete'""").fetchall()[0][0]
        late = con.execute("SELECT count(*) FROM analysis_gap_models WHERE stage = 'late'").fetchall()[0][0]
        assert late == n_class > 0
        # the stored final gap is train - test accuracy of the run's last checkpoint
        bad = con.execute("""SELECT count(*) FROM analysis_gap_models g JOIN runs r USING (run_id)
                             JOIN checkpoints c ON c.run_id = r.run_id AND c.step = r.final_step
                             WHERE g.stage = 'late' AND abs(g.gap - c.gap_accuracy) > 1e-12""").fetchall()[0][0]
        assert bad == 0
        # every stage of a run is its own snapshot, within the tolerance of its target fraction
        dup = con.execute("""SELECT count(*) FROM (SELECT run_id, step FROM analysis_gap_models
                             GROUP BY ALL HAVING count(*) > 1)""").fetchall()[0][0]
        assert dup == 0
        far = con.execute("""SELECT count(*) FROM analysis_gap_models WHERE stage <> 'late'
                             AND abs(fraction - CASE stage WHEN 'early' THEN 0.2 ELSE 0.5 END) > ?""",
                          [gap.STAGE_TOLERANCE]).fetchall()[0][0]
        assert far == 0  # the tiny runs' only middle snapshot is at 8 % of training: no early or middle stage
        # distance from initialization at every stage, recomputed from the stored weights
        for run_id, step, dist in con.execute("SELECT run_id, step, distance_from_init FROM analysis_gap_models"
                                              ).fetchall():
            w = con.execute("""SELECT w.tensor, w."values", w0."values" FROM weights w
                               JOIN weights w0 ON w0.run_id = w.run_id AND w0.step = 0 AND w0.tensor = w.tensor
                                              AND w0.layer_index = w.layer_index
                               WHERE w.run_id = ? AND w.step = ?""", [run_id, step]).fetchall()
            ref = math.sqrt(sum(float(((np.array(a, np.float64) - np.array(b, np.float64)) ** 2).sum())
                                for t, a, b in w if t in gap.TRAINED_TENSORS))
            assert dist == pytest.approx(ref, rel=1e-9)
        rows = con.execute("""SELECT spec, r2_cv, note, n_models FROM analysis_gap_regression
                              WHERE sample = 'all' AND cv_scheme = 'grouped_by_dataset'""").fetchall()
        assert {r[0] for r in rows} == set(gap.SPECIFICATIONS)
        by_spec = {r[0]: r for r in rows}
        assert by_spec[gap.MAIN][1] is None and "too few" in by_spec[gap.MAIN][2]  # 15 features, ~11 models
        assert by_spec["sharpness"][1] is not None  # one feature: cross-validated over the 3 data sets
        verdicts = con.execute("SELECT claim_id, verdict FROM analysis_verdicts WHERE stage = 'gap'").fetchall()
        assert {c for c, _ in verdicts} == {"gap.margins_predict_gap", "gap.margins_predict_unseen_datasets",
                                            "gap.late_only", "gap.no_transfer"}
        assert all(v == "inconclusive" for _, v in verdicts)
        for name, make in gap.FIGURES.items():
            fig = make(con)
            assert fig.get_suptitle(), name
            plt.close(fig)
        text = " ".join(gap.report(con)["paragraphs"])
        assert "not_classification" in text and "could not be cross-validated" in text
    finally:
        con.close()


# --- regularizers ------------------------------------------------------------------------------------

def test_arm_labels_and_matching_keys() -> None:
    assert reg.arm_label("none", 0.01, 0.05, 1.0) == "none"
    assert reg.arm_label("fisher_sam", 0.01, 0.05, 1.0) == "fisher_sam (rho 0.05, eta 1)"
    assert reg.arm_label("grad_norm", 0.1, 0.05, 1.0) == "grad_norm (lambda 0.1)"
    base = {"dataset": "wine", "seed": 1, "lr": 0.01}
    a = json.dumps({**base, "regularizer": "sam", "rho": 0.05})
    b = json.dumps({**base, "regularizer": "none"})
    assert reg.match_key(a) == reg.match_key(b)
    assert reg.unit_key(a) == reg.unit_key(json.dumps({**base, "seed": 2}))


def test_paired_differences_average_seeds_within_units() -> None:
    frame = pl.DataFrame({
        "arm": ["none", "sam", "none", "sam", "none", "sam"],
        "group": ["w0", "w0", "w1", "w1", "b0", "b0"],
        "unit": ["wine", "wine", "wine", "wine", "bc", "bc"],
        "test_accuracy": [0.8, 0.9, 0.7, 0.7, 0.5, 0.6],
        "hessian_trace": [2.0, 1.0, 4.0, -1.0, 1.0, 1.0],
    })
    d, n, dropped = reg.paired_differences(frame, "sam", "none", "test_accuracy")
    np.testing.assert_allclose(sorted(d), sorted([0.1, 0.05]))  # bc: +0.1; wine: mean(+0.1, 0)
    assert n == 3 and dropped == 0
    d, n, dropped = reg.paired_differences(frame, "sam", "none", "hessian_trace")
    np.testing.assert_allclose(sorted(d), sorted([0.0, math.log(0.5)]))  # the negative trace pair is dropped
    assert n == 2 and dropped == 1


def test_regularizer_stage_on_the_tiny_corpus(built_corpus) -> None:
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    try:
        arms = {a for (a,) in con.execute("SELECT DISTINCT arm FROM analysis_regularizers").fetchall()}
        assert arms == {"none", "sam (rho 0.05)", "fisher_sam (rho 0.05, eta 1)", "hessian_trace (lambda 0.01)"}
        pairs = con.execute("""SELECT arm, baseline, n_pairs, n_units FROM analysis_regularizers_pairs
                               WHERE metric = 'test_accuracy'""").fetchall()
        assert ("sam (rho 0.05)", "none", 1, 1) in pairs
        assert ("fisher_sam (rho 0.05, eta 1)", "sam (rho 0.05)", 1, 1) in pairs
        verdicts = con.execute("""SELECT claim_id, verdict FROM analysis_verdicts
                                  WHERE stage = 'regularizers'""").fetchall()
        ids = {c for c, _ in verdicts}
        assert "regularizers.fisher_sam_beats_sam.fisher_sam_rho_0.05_eta_1.vs.sam_rho_0.05" in ids
        assert "regularizers.worse_than_sam.hessian_trace_lambda_0.01.vs.sam_rho_0.05" in ids
        assert "regularizers.flatten.hessian_trace_lambda_0.01.hessian_trace" in ids
        assert all(v == "inconclusive" for _, v in verdicts)  # one unit: no interval
        fig = reg.comparison_figure(con)
        assert fig.get_suptitle() and sum(len(ax.lines) for ax in fig.axes) > 0
        plt.close(fig)
    finally:
        con.close()


def test_stages_never_share_a_snapshot_and_stay_near_their_target() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE runs (run_id VARCHAR, total_steps INT, task VARCHAR, status VARCHAR)")
    con.execute("CREATE TABLE checkpoints (run_id VARCHAR, step INT, is_spectral BOOLEAN)")
    con.execute("INSERT INTO runs VALUES ('a', 100, 'classification', 'complete'), "
                "('b', 100, 'classification', 'complete'), ('r', 100, 'regression', 'complete')")
    # a: one snapshot between start and end (at 30 %): early takes it, middle has none left within 0.1
    # b: snapshots at 18 %, 52 %: both stages found
    con.execute("INSERT INTO checkpoints VALUES ('a', 0, true), ('a', 30, true), ('a', 100, true), "
                "('b', 0, true), ('b', 18, true), ('b', 52, true), ('b', 100, true), ('r', 100, true)")
    stages = {(r, s): step for r, s, step, _ in gap._stage_steps(con).rows()}
    assert stages == {("a", "late"): 100, ("a", "early"): 30, ("b", "late"): 100, ("b", "early"): 18,
                      ("b", "middle"): 52}
