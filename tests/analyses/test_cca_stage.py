"""CCA stage on a synthetic database: a supported verdict for a transferable relation, not supported for
none, and a tiny database too small for the blocks."""

from __future__ import annotations

import duckdb
import matplotlib
import numpy as np
import polars as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import features as feat  # noqa: E402
from analyses.cca import STAGE  # noqa: E402
from analyses.cca.report import report  # noqa: E402
from analyses.cca.stage import run  # noqa: E402
from analyses.cca.verdicts import NEGLIGIBLE_R  # noqa: E402


def _synthetic_db(planted: bool = True, runs: tuple[int, int] = (6, 5), seed: int = 0) -> duckdb.DuckDBPyConnection:
    """analysis_features with a classification task (4 data sets x runs[0] runs x 10 snapshots) and a
    regression task (2 data sets x runs[1] runs x 10 snapshots). When ``planted``, a shared factor drives
    loss_top and test_accuracy / test_r2; otherwise every column is independent noise."""
    rng = np.random.default_rng(seed)
    names = [f.name for f in feat.FEATURES]
    rows = []
    sign = 1.0 if planted else 0.0
    for task, datasets, n_runs in (("classification", ("c1", "c2", "c3", "c4"), runs[0]),
                                   ("regression", ("r1", "r2"), runs[1])):
        for d_i, ds in enumerate(datasets):
            for k in range(n_runs):
                for s in range(10):
                    z = rng.normal()
                    row = {n: rng.normal() for n in names}
                    row.update({m: rng.normal() for m in feat.ALL_METRICS})
                    row.update(run_id=f"{ds}-{k}", step=s, snapshot_index=s, dataset=ds, task=task,
                               architecture="a", weight_rank_ratio=1.0, local_condition=None)
                    row["loss_top"] = z + 0.3 * rng.normal() + 4 * d_i
                    row["test_accuracy" if task == "classification" else "test_r2"] = sign * z + 0.3 * rng.normal()
                    row["primary_metric"] = row["test_accuracy" if task == "classification" else "test_r2"]
                    rows.append(row)
    con = duckdb.connect()
    con.register("tmp_frame", pl.DataFrame(rows))
    con.execute("CREATE TABLE analysis_features AS SELECT * FROM tmp_frame")
    con.unregister("tmp_frame")
    return con


def test_stage_tables_and_verdicts() -> None:
    con = _synthetic_db()
    run(con)
    cca = con.execute("SELECT task, component, canonical_correlation, p_value, n, n_runs FROM analysis_cca "
                      "WHERE component = 1 ORDER BY task").fetchall()
    assert [(t, n, r) for t, _, _, _, n, r in cca] == [("classification", 240, 24), ("regression", 100, 10)]
    assert all(rho > 0.9 and p < 1e-6 for _, _, rho, p, _, _ in cca)
    held = con.execute("SELECT task, grouped_by, count(*), min(heldout_correlation) FROM analysis_cca_heldout "
                       "GROUP BY ALL ORDER BY task").fetchall()
    assert held[0][:3] == ("classification", "dataset", 4) and held[1][:3] == ("regression", "run", 5)
    assert min(h[3] for h in held) > 0.8
    top = con.execute("""SELECT block, variable, loading FROM analysis_cca_loadings WHERE task = 'classification'
                         AND component = 1 ORDER BY abs(loading) DESC LIMIT 2""").fetchall()
    assert {(b, v) for b, v, _ in top} == {("X", "loss_top"), ("Y", "test_accuracy")}
    assert all(v > 0.9 for _, _, v in top)  # oriented so the metric variate rises with accuracy
    xs = {r[0] for r in con.execute("SELECT variable FROM analysis_cca_loadings WHERE block = 'X'").fetchall()}
    assert "weight_rank_ratio" not in xs  # constant, and not in X_FEATURES anyway
    n_scores = con.execute("SELECT count(*), count(heldout_u1) FROM analysis_cca_scores").fetchall()[0]
    assert n_scores == (340, 340)
    verdicts = dict(con.execute("SELECT claim_id, verdict FROM analysis_cca_verdicts").fetchall())
    # regression has 2 data sets: folds group by run only, so no interval (DESIGN: by run and data set)
    assert verdicts == {"cca.classification": "supported", "cca.regression": "inconclusive"}

def test_no_relation_is_not_supported() -> None:
    """Independent blocks: the held-out first canonical correlation sits inside the negligible band
    (|r| < NEGLIGIBLE_R) with its whole interval, which decides "not supported". (A consistently
    *reversed* held-out relation cannot be planted: every fold's training fit orients the pair.)"""
    con = _synthetic_db(planted=False, runs=(100, 2))
    run(con)
    effect, lo, hi, verdict = con.execute("SELECT effect, ci_low, ci_high, verdict FROM analysis_cca_verdicts "
                                          "WHERE claim_id = 'cca.classification'").fetchall()[0]
    assert -NEGLIGIBLE_R < lo < effect < hi < NEGLIGIBLE_R
    assert verdict == "not supported"


def test_tiny_database_figures_and_report() -> None:
    con = _synthetic_db()
    con.execute("DELETE FROM analysis_features WHERE step >= 3 OR run_id NOT LIKE '%-0' AND run_id NOT LIKE '%-1'")
    run(con)  # 6 snapshots per data set: too few for the blocks
    rows = con.execute("SELECT task, component, canonical_correlation FROM analysis_cca ORDER BY task").fetchall()
    assert rows == [("classification", None, None), ("regression", None, None)]
    assert {v for (v,) in con.execute("SELECT verdict FROM analysis_cca_verdicts").fetchall()} == {"inconclusive"}
    for db in (con, _synthetic_db()):
        if db is not con:
            run(db)
        for figure in STAGE.figures:
            fig = figure.draw(db)
            assert fig.get_suptitle(), figure.name
            plt.close(fig)
        rep = report(db)
        assert rep["paragraphs"]
        for t in rep["tables"]:
            db.execute(t["sql"]).fetchall()
