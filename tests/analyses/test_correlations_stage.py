"""Correlations stage on a synthetic database with planted run-level effects (supported) and reversed
ones (not supported), and on a tiny one (no phases, no run-level r)."""

from __future__ import annotations

import duckdb
import matplotlib
import numpy as np
import polars as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.correlations import STAGE  # noqa: E402
from analyses.correlations.figures import by_phase_figure  # noqa: E402
from analyses.correlations.report import report  # noqa: E402
from analyses.kit import features as feat  # noqa: E402


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
    STAGE.execute(con)
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
    fig = by_phase_figure(con)  # with phases (the other figures are drawn in the tiny test)
    assert len(fig.axes[0].get_xticklabels()) == 3
    plt.close(fig)
    assert any("survive Benjamini-Hochberg" in p for p in report(con)["paragraphs"])
    verdicts = _verdicts(con)
    assert len(verdicts) == 16  # the paper's test and the sharpened one (beyond ln steps) per claim
    planted = {c: v for c, v in verdicts.items() if "flatness" not in c}
    assert len(planted) == 12
    for claim, (verdict, effect) in planted.items():
        assert verdict == "supported", (claim, verdict, effect)
    # nothing planted in the curvature's size: the flatness claims find nothing
    assert {v for c, (v, _) in verdicts.items() if "flatness" in c} <= {"inconclusive", "not supported"}
    # the reversed effects are "not supported"
    con = _synthetic_db(sign=1.0)
    STAGE.execute(con)
    for claim, (verdict, effect) in _verdicts(con).items():
        if "flatness" not in claim:
            assert verdict == "not supported", (claim, verdict, effect)


def test_tiny_database_and_figures_do_not_crash() -> None:
    con = _synthetic_db(sign=-1.0, n_per=1, snaps=3)  # 6 runs, one per data set: no run-level r at all
    con.execute("DROP TABLE analysis_dynamics_phases")  # no phases: only 'all'
    STAGE.execute(con)
    assert con.execute("SELECT DISTINCT phase FROM analysis_correlations").fetchall() == [("all",)]
    # 3 snapshots x 1 run per data set: n = 9, k = 3 gives a (descriptive) snapshot-level r ...
    assert con.execute("SELECT min(n), max(n_runs) FROM analysis_correlations").fetchall()[0] == (9, 3)
    # ... but no run has a within-data-set partner, so every verdict is inconclusive
    assert {v for v, _ in _verdicts(con).values()} == {"inconclusive"}
    for figure in STAGE.figures:
        fig = figure.draw(con)
        assert fig.get_suptitle(), figure.name
        plt.close(fig)
    rep = report(con)
    assert rep["paragraphs"]
    for t in rep["tables"]:
        con.execute(t["sql"]).fetchall()
