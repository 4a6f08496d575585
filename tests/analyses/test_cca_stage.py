"""CCA stage on a synthetic database: its tables, a supported verdict for a relation beyond training time,
no support without one, and a tiny database too small for the blocks."""

from __future__ import annotations

import math

import duckdb
import matplotlib
import numpy as np
import polars as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.cca import STAGE  # noqa: E402
from analyses.cca.report import report  # noqa: E402
from analyses.kit import features as feat  # noqa: E402

#: Training lengths (steps) the synthetic runs draw from: training time varies among runs, as in a corpus
#: whose studies vary the train fraction and the batch size.
TOTAL_STEPS = (200, 400, 800, 1600, 3200)


def synthetic_frame(mode: str = "beyond", runs: tuple[int, int] = (30, 15), snapshots: int = 4,
                    seed: int = 0) -> pl.DataFrame:
    """``analysis_features`` rows: a classification task (4 data sets x runs[0] runs) and a regression task
    (2 data sets x runs[1] runs), ``snapshots`` per run at steps 0 .. T_r (T_r drawn from TOTAL_STEPS).
    Every feature and metric is noise, except, with t = ln(1 + step) z-scored over the design's steps:

    - mode "beyond": a run-level factor z, independent of T_r, drives loss_top = z + 0.3 e and the primary
      metric = z + 0.6 t + 0.2 e (training time also helps, so the baseline is not zero);
    - mode "time": training time alone drives both, loss_top = t + 0.5 e and the primary metric = t + 0.5 e;
    - mode "none": nothing.

    loss_top is shifted by 4 per data set (the within-data-set z-score removes it)."""
    rng = np.random.default_rng(seed)
    names = [f.name for f in feat.FEATURES]
    rows = []
    for task, datasets, n_runs in (("classification", ("c1", "c2", "c3", "c4"), runs[0]),
                                   ("regression", ("r1", "r2"), runs[1])):
        primary = feat.PRIMARY_METRIC[task]
        for d_i, ds in enumerate(datasets):
            for k in range(n_runs):
                total = int(rng.choice(TOTAL_STEPS))
                z = rng.normal()
                for s in range(snapshots):
                    step = round(total * s / max(snapshots - 1, 1))
                    t = (math.log1p(step) - 6.0) / 1.5
                    row = {n: rng.normal() for n in names}
                    row.update({m: rng.normal() for m in feat.ALL_METRICS})
                    row.update(run_id=f"{ds}-{k}", step=step, snapshot_index=s, dataset=ds, task=task,
                               architecture="a", weight_rank_ratio=1.0, local_condition=None)
                    feature, metric = {"beyond": (z + 0.3 * rng.normal(), z + 0.6 * t + 0.2 * rng.normal()),
                                       "time": (t + 0.5 * rng.normal(), t + 0.5 * rng.normal()),
                                       "none": (rng.normal(), rng.normal())}[mode]
                    row["loss_top"] = feature + 4 * d_i
                    row[primary] = row["primary_metric"] = metric
                    rows.append(row)
    return pl.DataFrame(rows)


def synthetic_db(mode: str = "beyond", **kw) -> duckdb.DuckDBPyConnection:
    """An in-memory database whose ``analysis_features`` is :func:`synthetic_frame`."""
    con = duckdb.connect()
    con.register("tmp_frame", synthetic_frame(mode, **kw))
    con.execute("CREATE TABLE analysis_features AS SELECT * FROM tmp_frame")
    con.unregister("tmp_frame")
    return con


def test_stage_tables_and_verdicts() -> None:
    con = synthetic_db()
    STAGE.execute(con)
    # the descriptive CCA is the verdict's: each run's last snapshot, quality metrics only
    cca = con.execute("SELECT task, component, canonical_correlation, p_value, n, n_runs FROM analysis_cca "
                      "WHERE component = 1 ORDER BY task").fetchall()
    assert [(t, n, r) for t, _, _, _, n, r in cca] == [("classification", 120, 120), ("regression", 30, 30)]
    assert all(rho > 0.8 and p < 1e-4 for _, _, rho, p, _, _ in cca)
    held = con.execute("SELECT task, x_block, grouped_by, count(*) FROM analysis_cca_heldout "
                       "GROUP BY ALL ORDER BY task, x_block").fetchall()
    assert held == [("classification", "ln_step", "dataset", 4), ("classification", "spectral", "dataset", 4),
                    ("regression", "ln_step", "run", 5), ("regression", "spectral", "run", 5)]
    top = con.execute("""SELECT block, variable, loading FROM analysis_cca_loadings WHERE task = 'classification'
                         AND component = 1 ORDER BY abs(loading) DESC LIMIT 2""").fetchall()
    assert {(b, v) for b, v, _ in top} == {("X", "loss_top"), ("Y", "test_accuracy")}
    assert all(v > 0.8 for _, _, v in top)  # oriented so the metric variate rises with accuracy
    ys = {r[0] for r in con.execute("SELECT variable FROM analysis_cca_loadings WHERE block = 'Y'").fetchall()}
    assert ys.isdisjoint({"train_loss", "test_loss", "gap_loss", "test_rmse"})  # no loss-defined metric
    xs = {r[0] for r in con.execute("SELECT variable FROM analysis_cca_loadings WHERE block = 'X'").fetchall()}
    assert "weight_rank_ratio" not in xs  # constant, and not in X_FEATURES anyway
    n_scores = con.execute("SELECT count(*), count(heldout_u1), count(time_u1) FROM analysis_cca_scores").fetchall()[0]
    assert n_scores == (150, 150, 150)
    designs = con.execute("SELECT task, design, n, is_verdict, time_partialled, time_r FROM analysis_cca_designs "
                          "ORDER BY ALL").fetchall()
    assert len(designs) == 8 and [d[2] for d in designs if d[3]] == [120, 30]
    assert all((d[5] is None) == d[4] for d in designs)  # the partialled design has no ln-step baseline
    rows = {r["claim_id"]: r for r in con.sql("SELECT * FROM analysis_cca_verdicts").pl().to_dicts()}
    c, nested = rows["cca.classification"], rows["cca.classification.beyond_time"]
    assert c["role"] == "paper" and nested["role"] == "sharpened" and nested["pair"] == "cca.classification"
    assert nested["confound"].startswith("training time") and 0.1 < nested["baseline_effect"] < 0.5
    assert "random effects" in c["interval_method"] and c["n_datasets"] == 4
    assert c["effect"] > 0.7 and nested["effect"] > 0.2
    # the stage's own effect is the correlation of the stored out-of-fold variates over every row
    u, v = (np.array(x) for x in zip(*con.execute("SELECT heldout_u1, heldout_v1 FROM analysis_cca_scores "
                                                  "WHERE task = 'classification'").fetchall(), strict=True))
    assert math.isclose(c["stage_effect"], float(np.corrcoef(u, v)[0, 1]), abs_tol=1e-12)
    # regression has 2 data sets: folds group by run only, so it is not decided (DESIGN: by run and data set)
    assert {k: r["verdict"] for k, r in rows.items()} == {
        "cca.classification": "supported", "cca.classification.beyond_time": "supported",
        "cca.regression": "inconclusive", "cca.regression.beyond_time": "inconclusive"}
    assert rows["cca.regression"]["interval_method"] == "the stage's own interval"


def test_no_relation_is_not_supported() -> None:
    """Independent blocks: the held-out first canonical correlation is small and not supported."""
    con = synthetic_db("none", runs=(40, 10), snapshots=2)
    STAGE.execute(con)
    for effect, verdict in con.execute("SELECT effect, verdict FROM analysis_cca_verdicts "
                                       "WHERE claim_id LIKE 'cca.classification%'").fetchall():
        assert abs(effect) < 0.25 and verdict != "supported"


def test_tiny_database_figures_and_report() -> None:
    con = synthetic_db(runs=(3, 3))
    STAGE.execute(con)  # 3 last snapshots per data set: too few for the blocks
    rows = con.execute("SELECT task, component, canonical_correlation FROM analysis_cca ORDER BY task").fetchall()
    assert rows == [("classification", None, None), ("regression", None, None)]
    assert {v for (v,) in con.execute("SELECT verdict FROM analysis_cca_verdicts").fetchall()} == {"inconclusive"}
    for db in (con, synthetic_db()):
        if db is not con:
            STAGE.execute(db)
        for figure in STAGE.figures:
            fig = figure.draw(db)
            assert fig.get_suptitle(), figure.name
            plt.close(fig)
        rep = report(db)
        assert rep["paragraphs"]
        for t in rep["tables"]:
            db.execute(t["sql"]).fetchall()
