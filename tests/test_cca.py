"""CCA stage: recovers a planted canonical correlation of 0.9 (against a brute-force eigenproblem), the Wilks
test separates planted from independent blocks, held-out folds keep the training sign, and the stage on a
synthetic database gives a supported verdict for a transferable relation and not supported for none."""

from __future__ import annotations

import duckdb
import matplotlib
import numpy as np
import polars as pl
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import canonical  # noqa: E402
from analyses import features as feat  # noqa: E402

RHO = 0.9


def _planted(n: int, rho: float, seed: int, p: int = 5, q: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """x (n, p), y (n, q) whose population first canonical correlation is rho, the others 0: one shared
    factor z, x1 = z + s e1, y1 = z + s e2 with 1 / (1 + s²) = rho, the rest noise, each block then
    mixed by a random invertible matrix (canonical correlations are invariant to it)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    s = np.sqrt(1 / rho - 1)
    x = rng.normal(size=(n, p))
    y = rng.normal(size=(n, q))
    x[:, 0] = z + s * rng.normal(size=n)
    y[:, 0] = z + s * rng.normal(size=n)
    return x @ rng.normal(size=(p, p)), y @ rng.normal(size=(q, q))


def _brute_force_cancorr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sqrt of the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx, descending."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    ev = np.sort(np.linalg.eigvals(m).real)[::-1][: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(ev, 0, None))


def test_recovers_planted_canonical_correlation() -> None:
    x, y = _planted(2000, RHO, seed=0)
    fit = canonical.fit_cca(x, y)
    assert abs(fit.cancorr[0] - RHO) < 0.05
    np.testing.assert_allclose(fit.cancorr, _brute_force_cancorr(x, y), atol=1e-10)
    assert fit.p_value[0] < 1e-10 and fit.p_value[1] > 0.01
    # the variates have unit variance and correlate at rho_1; loadings are correlations with them
    assert np.corrcoef(fit.x_scores[:, 0], fit.y_scores[:, 0])[0, 1] == pytest.approx(fit.cancorr[0], abs=1e-10)
    assert fit.x_scores[:, 0].std(ddof=1) == pytest.approx(1.0, abs=1e-10)
    assert fit.x_loadings[2, 0] == pytest.approx(np.corrcoef(x[:, 2], fit.x_scores[:, 0])[0, 1], abs=1e-10)


def test_wilks_does_not_reject_independent_blocks() -> None:
    rng = np.random.default_rng(3)
    fit = canonical.fit_cca(rng.normal(size=(2000, 5)), rng.normal(size=(2000, 4)))
    assert fit.p_value[0] > 0.05
    assert fit.cancorr[0] < 0.1


def test_heldout_recovers_planted_correlation_with_training_sign() -> None:
    x, y = _planted(2000, RHO, seed=1)
    groups = np.repeat(np.arange(5), 400)
    folds = canonical.heldout_first_correlations(x, y, groups, n_splits=5)
    r = np.array([f["heldout_correlation"] for f in folds])
    assert len(folds) == 5 and np.all(np.abs(r - RHO) < 0.05)
    assert sorted(np.concatenate([f["test_index"] for f in folds]).tolist()) == list(range(2000))
    # a held-out group whose relation is reversed scores negative: the sign comes from the training fit
    y2 = y.copy()
    y2[groups == 4] *= -1
    folds = canonical.heldout_first_correlations(x, y2, groups, n_splits=5)
    reversed_fold = next(f for f in folds if set(groups[f["test_index"]]) == {4})
    assert reversed_fold["heldout_correlation"] < -0.8


def test_select_columns_drops_constant_and_collinear() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    block = np.column_stack([a, np.ones(100), b, a - b, rng.normal(size=100)])
    assert canonical.select_columns(block, list("abcde")) == [0, 2, 4]


def test_fisher_mean_ci() -> None:
    effect, lo, hi, p, k = canonical.fisher_mean_ci(np.array([0.5, 0.6, np.nan, 0.7]))
    assert k == 3 and lo < effect < hi < 1 and p < 0.05
    assert effect == pytest.approx(np.tanh(np.arctanh([0.5, 0.6, 0.7]).mean()))
    assert np.isnan(canonical.fisher_mean_ci(np.array([0.5]))[1])


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
    frame = pl.DataFrame(rows)  # noqa: F841
    con.execute("CREATE TABLE analysis_features AS SELECT * FROM frame")
    return con


def test_stage_tables_and_verdicts() -> None:
    con = _synthetic_db()
    canonical.run(con)
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
    canonical.run(con)
    effect, lo, hi, verdict = con.execute("SELECT effect, ci_low, ci_high, verdict FROM analysis_cca_verdicts "
                                          "WHERE claim_id = 'cca.classification'").fetchall()[0]
    assert -canonical.NEGLIGIBLE_R < lo < effect < hi < canonical.NEGLIGIBLE_R
    assert verdict == "not supported"


def test_tiny_database_figures_and_report() -> None:
    con = _synthetic_db()
    con.execute("DELETE FROM analysis_features WHERE step >= 3 OR run_id NOT LIKE '%-0' AND run_id NOT LIKE '%-1'")
    canonical.run(con)  # 6 snapshots per data set: too few for the blocks
    rows = con.execute("SELECT task, component, canonical_correlation FROM analysis_cca ORDER BY task").fetchall()
    assert rows == [("classification", None, None), ("regression", None, None)]
    assert {v for (v,) in con.execute("SELECT verdict FROM analysis_cca_verdicts").fetchall()} == {"inconclusive"}
    for db in (con, _synthetic_db()):
        if db is not con:
            canonical.run(db)
        for name, make in canonical.FIGURES.items():
            fig = make(db)
            assert fig.get_suptitle(), name
            plt.close(fig)
        rep = canonical.report(db)
        assert rep["paragraphs"]
        for t in rep["tables"]:
            db.execute(t["sql"]).fetchall()
