"""Normality stage: W and p equal scipy.stats.shapiro on the same values, a normal sample is judged normal and
an exponential one not, layer positions, the deterministic subsample, and degenerate inputs."""

from __future__ import annotations

import duckdb
import matplotlib
import numpy as np
import polars as pl
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import normality  # noqa: E402
from analyses.kit import features as feat  # noqa: E402

LOG_FEATURE = next(f.name for f in feat.FEATURES if f.log_scale)


def test_normal_is_normal_exponential_is_not() -> None:
    rng = np.random.default_rng(0)
    w, p, n = normality.shapiro_wilk(rng.normal(size=300))
    assert p > 0.05 and w > 0.99 and n == 300
    w, p, _ = normality.shapiro_wilk(rng.exponential(size=300))
    assert p < 1e-6 and w < 0.9


def test_subsample_is_deterministic_and_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=6000)
    x[5] = np.nan
    sample = normality.test_sample(x)
    assert len(sample) == normality.MAX_N
    np.testing.assert_array_equal(sample, normality.test_sample(x))
    w, p, n = normality.shapiro_wilk(x)
    ref = stats.shapiro(sample)
    assert (w, p, n) == (ref.statistic, ref.pvalue, 5999)


def test_degenerate_inputs() -> None:
    assert np.isnan(normality.shapiro_wilk(np.array([1.0, 2.0]))[:2]).all()
    assert np.isnan(normality.shapiro_wilk(np.array([np.nan, 1.0, 2.0, np.nan]))[0])
    assert np.isnan(normality.shapiro_wilk(np.full(10, 3.0))[:2]).all()
    assert normality.shapiro_wilk(np.array([1.0, 2.0, 4.0]))[2] == 3


def _synthetic_db(seed: int = 0) -> tuple[duckdb.DuckDBPyConnection, pl.DataFrame, pl.DataFrame]:
    """40 runs x 5 snapshots of 3-layer networks; weight_norm normal, bias_norm exponential, weight_rank_ratio
    constant, dead_fraction NULL everywhere; the snapshot table holds the layer mean of each transform."""
    rng = np.random.default_rng(seed)
    names = [f.name for f in feat.FEATURES]
    layer_rows = []
    for r in range(40):
        for s in range(5):
            for li in range(3):
                row = {n: float(rng.normal()) for n in names}
                row.update(run_id=f"run{r}", step=s, layer_index=li, n_layers=3, is_output=li == 2,
                           weight_norm=float(np.exp(rng.normal(2.0, 0.1))), bias_norm=float(rng.exponential()),
                           weight_rank_ratio=1.0, dead_fraction=None)
                layer_rows.append(row)
    layers = pl.DataFrame(layer_rows)
    aggs = [pl.col(f.name).map_batches(lambda c: c.sign() * (c.abs() + 1).log()).mean().alias(f.name)
            if f.log_scale else pl.col(f.name).mean() for f in feat.FEATURES]
    snaps = layers.group_by(["run_id", "step"], maintain_order=True).agg(aggs)
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_features_layer AS SELECT * FROM layers")
    con.execute("CREATE TABLE analysis_features AS SELECT * FROM snaps")
    return con, layers, snaps


def test_stage_matches_scipy_and_judges_planted_distributions() -> None:
    con, layers, snaps = _synthetic_db()
    normality.STAGE.execute(con)
    table = con.sql("SELECT * FROM analysis_normality").pl()
    assert table.filter(pl.col("layer").is_null()).height == len(feat.FEATURES)
    assert set(table["layer"].drop_nulls().unique().to_list()) == {"first", "last", "output"}
    # exactly scipy on the same values: pooled (snapshot table) and per position (slog of raw layer values)
    for f in ("weight_norm", "alignment", LOG_FEATURE):
        ref = stats.shapiro(snaps.sort(["run_id", "step"])[f].to_numpy())
        row = table.filter((pl.col("feature") == f) & pl.col("layer").is_null()).row(0, named=True)
        assert (row["w_statistic"], row["p_value"], row["n"]) == (ref.statistic, ref.pvalue, 200)
    log_scale = {x.name: x.log_scale for x in feat.FEATURES}
    for f in ("bias_norm", "alignment"):
        raw = layers.sort(["run_id", "step", "layer_index"]).filter(pl.col("layer_index") == 1)[f].to_numpy()
        ref = stats.shapiro(feat.slog(raw) if log_scale[f] else raw)
        row = table.filter((pl.col("feature") == f) & (pl.col("layer") == "last")).row(0, named=True)
        assert (row["w_statistic"], row["p_value"]) == (ref.statistic, ref.pvalue)
        assert row["transform"] == ("slog" if log_scale[f] else "identity")
    judged = {(r["feature"], r["layer"]): r["normal_at_5pct"] for r in table.iter_rows(named=True)}
    assert judged[("weight_norm", "first")] is True   # log-normal raw: normal after slog(≈ log)
    assert judged[("bias_norm", "first")] is False    # exponential
    const = table.filter((pl.col("feature") == "weight_rank_ratio") & pl.col("layer").is_null()).row(0, named=True)
    assert const["w_statistic"] is None and const["n"] == 200
    assert table.filter((pl.col("feature") == "dead_fraction") & pl.col("layer").is_not_null()).height == 0
    p = table["p_value"].to_numpy()
    ok = np.isfinite(p)
    from statsmodels.stats.multitest import multipletests
    np.testing.assert_allclose(table["p_adjusted"].to_numpy()[ok], multipletests(p[ok], method="fdr_bh")[1])


def test_tiny_database_figure_and_report() -> None:
    con, _, _ = _synthetic_db()
    con.execute("DELETE FROM analysis_features WHERE run_id <> 'run0' OR step > 1")
    con.execute("DELETE FROM analysis_features_layer WHERE run_id <> 'run0' OR step > 1")
    normality.STAGE.execute(con)  # 2 values pooled, 2 per position: nothing testable
    assert con.execute("SELECT count(w_statistic) FROM analysis_normality").fetchall()[0][0] == 0
    for db in (con, _synthetic_db()[0]):
        if db is not con:
            normality.STAGE.execute(db)
        fig = normality.qq_figure(db)
        assert fig.get_suptitle()
        plt.close(fig)
        rep = normality.report(db)
        assert rep["paragraphs"]
        for t in rep["tables"]:
            db.execute(t["sql"]).fetchall()
