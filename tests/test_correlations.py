"""Correlations stage: within-data-set Pearson r against scipy, BH against statsmodels, and the stage on a
synthetic database with planted run-level effects (supported) and reversed ones (not supported)."""

from __future__ import annotations

import duckdb
import matplotlib
import numpy as np
import polars as pl
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import correlations  # noqa: E402
from analyses import features as feat  # noqa: E402
from analyses.verdicts import pearson_ci  # noqa: E402


def test_one_group_is_plain_pearson() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    r, lo, hi, p, n, k = correlations.within_group_pearson(x, y)
    ref = stats.pearsonr(x, y)
    assert r == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)
    _, lo_ref, hi_ref, _, _ = pearson_ci(x, y)
    assert (lo, hi) == pytest.approx((lo_ref, hi_ref), abs=1e-9)
    assert (n, k) == (40, 1)


def test_within_group_r_removes_data_set_offsets() -> None:
    """Inside each data set y falls with x, but data sets with larger x have larger y: the pooled r is
    positive, the within-data-set r negative and equal to the size-weighted mean of per-group r."""
    rng = np.random.default_rng(1)
    xs, ys, gs = [], [], []
    for g, (size, offset) in enumerate([(30, 0.0), (20, 5.0), (25, 10.0)]):
        x = rng.normal(size=size)
        xs.append(x + offset)
        ys.append(-0.7 * x + 0.5 * rng.normal(size=size) + offset)
        gs.append(np.full(size, g))
    x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
    assert stats.pearsonr(x, y).statistic > 0.8
    r, lo, hi, p, n, k = correlations.within_group_pearson(x, y, g)
    per = [stats.pearsonr(x[g == i], y[g == i]).statistic for i in range(3)]
    sizes = [30, 20, 25]
    assert r == pytest.approx(np.dot(per, sizes) / sum(sizes), abs=1e-12)
    assert r < -0.5 and hi < 0 and p < 1e-6 and (n, k) == (75, 3)


def test_degenerate_inputs_give_nan() -> None:
    r, lo, hi, p, n, k = correlations.within_group_pearson(np.ones(10), np.arange(10.0))
    assert np.isnan([r, lo, hi, p]).all() and n == 10
    r, *_ = correlations.within_group_pearson(np.arange(4.0), np.arange(4.0), np.array([0, 0, 1, 1]))
    assert np.isnan(r)  # n - k - 2 = 0
    assert np.isnan(correlations.within_group_pearson(np.array([]), np.array([]))[0])


def test_bh_matches_statsmodels_and_keeps_nan() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    adj = correlations.bh_adjust(p)
    ref = multipletests(p[~np.isnan(p)], method="fdr_bh")[1]
    np.testing.assert_allclose(adj[~np.isnan(p)], ref)
    assert np.isnan(adj[1])


def _synthetic_db(sign: float, n_per: int = 9, snaps: int = 4, seed: int = 0) -> duckdb.DuckDBPyConnection:
    """analysis_features(+_layer) and phases: 2 tasks x 3 data sets x n_per runs x snaps snapshots.

    Run-level latent a drives weight_rank_ratio, the stable-rank ratio, local_effective_rank_ratio and
    loss_relative_std; gap_loss = sign * a + noise; primary_metric = -sign * adjacent_similarity + noise
    (so sign = -1 plants every claim's predicted direction). Data sets get large offsets in both."""
    rng = np.random.default_rng(seed)
    rows, layer_rows, phase_rows = [], [], []
    names = [f.name for f in feat.FEATURES]
    for task, datasets in (("classification", ("c1", "c2", "c3")), ("regression", ("r1", "r2", "r3"))):
        for d_i, ds in enumerate(datasets):
            for k in range(n_per):
                run_id = f"{ds}-{k}"
                a, b = rng.normal(), rng.normal()
                for s in range(snaps):
                    step = 10 * s
                    row = {n: rng.normal() for n in names}
                    row.update(run_id=run_id, step=step, snapshot_index=s, dataset=ds, task=task,
                               architecture=f"arch{k % 3}")
                    row["weight_rank_ratio"] = 0.5 + 0.1 * a + 0.02 * rng.normal() + 0.2 * d_i
                    row["local_effective_rank_ratio"] = 0.3 + 0.1 * a + 0.02 * rng.normal()
                    row["loss_relative_std"] = 2 + a + 0.2 * rng.normal() + 3 * d_i
                    row["loss_std"] = 1 + 0.5 * a + 0.1 * rng.normal() + 2 * d_i
                    row["adjacent_similarity"] = 0.5 + 0.1 * b + 0.02 * rng.normal()
                    for m in feat.ALL_METRICS:
                        row[m] = rng.normal()
                    row["gap_loss"] = sign * a + 0.3 * rng.normal() + 5 * d_i
                    row["primary_metric"] = -sign * b + 0.3 * rng.normal() - 2 * d_i
                    rows.append(row)
                    layer_rows.append({"run_id": run_id, "step": step, "layer_index": 0, "in_features": 10,
                                       "out_features": 10,
                                       "weight_stable_rank": 5 + a + 0.1 * rng.normal() + d_i})
                phase_rows += [{"run_id": run_id, "phase_index": 0, "phase": "fast learning", "start_step": 0,
                                "end_step": 10, "n_snapshots": 2, "mean_rate": 1.0},
                               {"run_id": run_id, "phase_index": 1, "phase": "fine-tuning", "start_step": 20,
                                "end_step": 10 * (snaps - 1), "n_snapshots": snaps - 2, "mean_rate": 0.1}]
    con = duckdb.connect()
    frames = {"analysis_features": pl.DataFrame(rows), "analysis_features_layer": pl.DataFrame(layer_rows),
              "analysis_dynamics_phases": pl.DataFrame(phase_rows)}
    for name, frame in frames.items():
        con.register("tmp_frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM tmp_frame")
        con.unregister("tmp_frame")
    return con


def _verdicts(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, float]]:
    return {c: (v, e) for c, v, e in con.execute(
        "SELECT claim_id, verdict, effect FROM analysis_correlations_verdicts").fetchall()}


def test_stage_tables_and_planted_verdicts() -> None:
    con = _synthetic_db(sign=-1.0)
    correlations.run(con)
    n_feat = len(feat.FEATURES)
    expected = 3 * n_feat * (len(feat.METRICS["classification"]) + len(feat.METRICS["regression"]))
    assert con.execute("SELECT count(*) FROM analysis_correlations").fetchall()[0][0] == expected
    phases = {r[0] for r in con.execute("SELECT DISTINCT phase FROM analysis_correlations").fetchall()}
    assert phases == {"all", "fast learning", "fine-tuning"}
    n, n_runs = con.execute("""SELECT n, n_runs FROM analysis_correlations WHERE task = 'classification'
                               AND phase = 'fine-tuning' AND feature = 'weight_norm' AND metric = 'test_loss'
                               """).fetchall()[0]
    assert (n, n_runs) == (27 * 2, 27)
    # the planted snapshot-level effect is significant after BH, an unrelated pair mostly not
    r, sig = con.execute("""SELECT r, significant FROM analysis_correlations WHERE task = 'classification' AND
                            phase = 'all' AND feature = 'weight_rank_ratio' AND metric = 'gap_loss'""").fetchall()[0]
    assert r < -0.8 and sig
    frac = con.execute("""SELECT avg(significant::INT) FROM analysis_correlations WHERE phase = 'all'
                          AND feature NOT IN ('weight_rank_ratio', 'local_effective_rank_ratio', 'loss_relative_std',
                                              'loss_std', 'adjacent_similarity')
                          AND metric NOT IN ('gap_loss')""").fetchall()[0][0]
    assert frac < 0.1
    fig = correlations.by_phase_figure(con)  # with phases (the other figures are drawn in the tiny test)
    assert len(fig.axes[0].get_xticklabels()) == 3
    plt.close(fig)
    assert any("survive Benjamini-Hochberg" in p for p in correlations.report(con)["paragraphs"])
    verdicts = _verdicts(con)
    assert len(verdicts) == 6
    for claim, (verdict, effect) in verdicts.items():
        assert verdict == "supported", (claim, verdict, effect)
    # the reversed effects are "not supported"
    con = _synthetic_db(sign=1.0)
    correlations.run(con)
    for claim, (verdict, effect) in _verdicts(con).items():
        assert verdict == "not supported", (claim, verdict, effect)


def test_tiny_database_and_figures_do_not_crash() -> None:
    con = _synthetic_db(sign=-1.0, n_per=1, snaps=3)  # 6 runs, one per data set: no run-level r at all
    con.execute("DROP TABLE analysis_dynamics_phases")  # no phases: only 'all'
    correlations.run(con)
    assert con.execute("SELECT DISTINCT phase FROM analysis_correlations").fetchall() == [("all",)]
    # 3 snapshots x 1 run per data set: n = 9, k = 3 gives a (descriptive) snapshot-level r ...
    assert con.execute("SELECT min(n), max(n_runs) FROM analysis_correlations").fetchall()[0] == (9, 3)
    # ... but no run has a within-data-set partner, so every verdict is inconclusive
    assert {v for v, _ in _verdicts(con).values()} == {"inconclusive"}
    for name, make in correlations.FIGURES.items():
        fig = make(con)
        assert fig.get_suptitle(), name
        plt.close(fig)
    rep = correlations.report(con)
    assert rep["paragraphs"]
    for t in rep["tables"]:
        con.execute(t["sql"]).fetchall()
