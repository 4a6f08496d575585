"""The gap stage on the tiny corpus."""

from __future__ import annotations

import math

import duckdb
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.gap import STAGE, models, predictors  # noqa: E402


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
                          [models.STAGE_TOLERANCE]).fetchall()[0][0]
        assert far == 0  # the tiny runs' only middle snapshot is at 8 % of training: no early or middle stage
        # distance from initialization at every stage, recomputed from the stored weights
        for run_id, step, dist in con.execute("SELECT run_id, step, distance_from_init FROM analysis_gap_models"
                                              ).fetchall():
            w = con.execute("""SELECT w.tensor, w.layer_index, w."values", w0."values" FROM weights w
                               JOIN weights w0 ON w0.run_id = w.run_id AND w0.step = 0 AND w0.tensor = w.tensor
                                              AND w0.layer_index = w.layer_index
                               WHERE w.run_id = ? AND w.step = ?""", [run_id, step]).fetchall()
            ref = math.sqrt(sum(float(((np.array(a, np.float64) - np.array(b, np.float64)) ** 2).sum())
                                for t, k, a, b in w if models.is_trained_tensor(t, k)))
            assert dist == pytest.approx(ref, rel=1e-9)
        rows = con.execute("""SELECT spec, r2_cv, note, n_models FROM analysis_gap_regression
                              WHERE sample = 'all' AND cv_scheme = 'grouped_by_dataset'""").fetchall()
        assert {r[0] for r in rows} == set(predictors.SPECIFICATIONS)
        by_spec = {r[0]: r for r in rows}
        main = by_spec[predictors.MAIN]
        assert main[1] is None and "too few" in main[2]  # 15 features, ~11 models
        assert by_spec["sharpness"][1] is not None  # one feature: cross-validated over the 3 data sets
        verdicts = con.execute("SELECT claim_id, verdict FROM analysis_verdicts WHERE stage = 'gap'").fetchall()
        assert {c for c, _ in verdicts} == {
            "gap.margins_predict_gap", "gap.margins_rank_gap", "gap.margins_predict_gap.beyond_datasets",
            "gap.margins_rank_gap.beyond_datasets", "gap.r2_reaches_paper", "gap.margins_predict_unseen_datasets",
            "gap.late_only", "gap.late_only_tau", "gap.no_transfer", "gap.no_transfer_tau"}
        # the Jiang et al. fits: too few models for the 9 log quartiles, so no R^2 and no per-data-set row
        jiang = con.execute("SELECT scope, r2_cv FROM analysis_gap_jiang WHERE predictors <> 'indicators'").fetchall()
        assert jiang and all(scope == "pooled" for scope, _ in jiang)
        assert all(v == "inconclusive" for _, v in verdicts)
        for figure in STAGE.figures:
            fig = figure.draw(con)
            assert fig.get_suptitle(), figure.name
            plt.close(fig)
        text = " ".join(STAGE.report(con)["paragraphs"])
        assert "not_classification" in text and "could not be cross-validated" in text
    finally:
        con.close()
