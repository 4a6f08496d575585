"""Persistent homology of neuron weight clouds and the topology stage.

References: the known-answer barcode of the issue, persim's persistent entropy, ripser's H0 diagram,
and scipy's minimum spanning tree on the full distance matrix (an independent brute force).
"""

from __future__ import annotations

import math

import duckdb
import matplotlib
import numpy as np
import polars as pl
import pytest
from persim.persistent_entropy import persistent_entropy as persim_entropy
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import persistent_homology as ph  # noqa: E402
from analyses import topology  # noqa: E402


def _scipy_mst(points: np.ndarray) -> np.ndarray:
    """Brute-force reference: scipy's MST of the full distance matrix (distinct points: no zero edge)."""
    return np.sort(minimum_spanning_tree(squareform(pdist(points))).data)


# --- the numbers ----------------------------------------------------------------------------------

def test_known_answer_barcode() -> None:
    s = ph.summarize_bars(np.array([1.0, 1.0, 2.0]), mean_neuron_norm=2.0, n_points=4)
    assert s.n_bars == 3 and s.total_lifetime == 4.0
    assert s.entropy == pytest.approx(1.03972, abs=5e-6)
    assert s.normalized_entropy == pytest.approx(0.946395, abs=5e-7)
    assert s.normalized_entropy_log_total == pytest.approx(1.0397207708 / math.log(4), rel=1e-10)
    assert s.mean_lifetime == pytest.approx(4 / 3) and s.mean_lifetime_scaled == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_normalized_entropy_equals_persim(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(20 + 10 * seed, 6))
    deaths = ph.h0_deaths(points, "ripser")
    diagram = np.column_stack([np.zeros_like(deaths), deaths])
    s = ph.summarize_bars(deaths, 1.0, len(points))
    assert abs(s.normalized_entropy - persim_entropy(diagram, normalize=True)[0]) < 1e-12
    assert abs(s.entropy - persim_entropy(diagram)[0]) < 1e-12


@pytest.mark.parametrize("shape", [(2, 3), (17, 4), (64, 64), (40, 300), (300, 8)])
def test_h0_deaths_equal_the_minimum_spanning_tree(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    points = rng.normal(size=shape)
    reference = _scipy_mst(points)
    np.testing.assert_allclose(ph.h0_deaths(points, "ripser"), reference, rtol=1e-6)
    np.testing.assert_allclose(ph.h0_deaths(points, "mst"), reference, rtol=1e-12)


def test_clustered_points_far_from_the_origin() -> None:
    """Tight clusters at a large offset: the case where ||x||^2 + ||y||^2 - 2xy loses digits."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(5, 10)) * 3 + 1e3
    points = np.vstack([c + 1e-4 * rng.normal(size=(12, 10)) for c in centres])
    reference = _scipy_mst(points)
    np.testing.assert_allclose(ph.h0_deaths(points, "mst"), reference, rtol=1e-6)
    np.testing.assert_allclose(ph.h0_deaths(points, "ripser"), reference, rtol=1e-3)  # float32 distances


def test_duplicate_and_dead_neurons() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(6, 4))
    weight = np.vstack([base, base[[1, 1, 4]], np.zeros((2, 4))])  # 3 duplicate rows, 2 dead rows
    summary, cloud, deaths = ph.layer_topology(weight)
    assert (cloud.n_neurons, cloud.n_dead, cloud.n_duplicates, cloud.n_points) == (11, 2, 3, 6)
    assert summary.n_bars == 5 and (deaths > 0).all()
    clean, _, _ = ph.layer_topology(base)
    assert summary == clean
    # a duplicate that differs in the bias is not a duplicate once the bias is appended
    bias = np.arange(11.0)
    bias[9:] = 0.0
    _, with_bias, _ = ph.layer_topology(weight, bias)
    assert (with_bias.n_dead, with_bias.n_duplicates, with_bias.n_points) == (2, 0, 9)


@pytest.mark.parametrize("rows", [0, 1])
def test_fewer_than_two_points_have_no_bars(rows: int) -> None:
    weight = np.vstack([np.ones((rows, 3)), np.zeros((2, 3))])
    s, cloud, deaths = ph.layer_topology(weight)
    assert cloud.n_points == rows and len(deaths) == 0 and s.n_bars == 0
    assert s.entropy is None and s.normalized_entropy is None and s.mean_lifetime is None
    assert s.normalized_entropy_log_total is None and s.mean_lifetime_scaled is None


def test_one_bar_and_unit_total_lifetime() -> None:
    s = ph.summarize_bars(np.array([2.5]), 1.0, 2)
    assert s.entropy == 0.0 and s.normalized_entropy is None and s.normalized_entropy_log_total == 0.0
    s = ph.summarize_bars(np.array([0.25, 0.75]), 1.0, 3)  # L = 1: ln L = 0
    assert s.normalized_entropy_log_total is None and s.normalized_entropy == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2))


def test_zero_length_bars_are_left_out() -> None:
    assert ph.summarize_bars(np.array([0.0, 1.0, 1.0]), 1.0, 4) == ph.summarize_bars(np.array([1.0, 1.0]), 1.0, 4)
    assert ph.persistent_entropy(np.zeros(3)) is None


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="matrix"):
        ph.neuron_point_cloud(np.ones(4))
    with pytest.raises(ValueError, match="bias has 2 entries for 3 neurons"):
        ph.neuron_point_cloud(np.ones((3, 2)), np.ones(2))
    with pytest.raises(ValueError, match="non-finite"):
        ph.neuron_point_cloud(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="method"):
        ph.h0_deaths(np.ones((3, 2)), "kruskal")


# --- the statistics -------------------------------------------------------------------------------

def test_one_group_r_matches_scipy_and_covers_the_truth() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200) * math.sqrt(0.75)  # true r = 0.5
    one = np.zeros(200)
    r, lo, hi, p, n, k, _ = topology.within_group_r(x, y, one)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12) and (n, k) == (200, 1) and p < 1e-6
    assert p == pytest.approx(stats.pearsonr(x, y).pvalue, rel=1e-6)
    assert lo < 0.5 < hi and hi - lo < 0.3
    rs, *_ = topology.within_group_r(x, y, one, method="spearman")
    assert rs == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_partial_correlation_separates_topology_from_variance() -> None:
    """A metric that is a function of variance correlates with accuracy but has no partial r; one that
    carries its own signal keeps it."""
    rng = np.random.default_rng(1)
    n = 300
    one = np.zeros(n)
    variance = rng.normal(size=n)
    norm = variance + 0.3 * rng.normal(size=n)
    signal = rng.normal(size=n)
    accuracy = variance + signal + 0.5 * rng.normal(size=n)
    proxy = 2 * variance + 0.05 * rng.normal(size=n)
    informative = signal + 0.2 * rng.normal(size=n)
    controls = np.column_stack([variance, norm])
    r, *_ = topology.within_group_r(proxy, accuracy, one)
    pr, plo, phi, *_ = topology.within_group_r(proxy, accuracy, one, controls)
    assert r > 0.5 and plo < 0 < phi and abs(pr) < 0.15
    pr, plo, _, p, *_ = topology.within_group_r(informative, accuracy, one, controls)
    assert pr > 0.7 and plo > 0.6 and p < 1e-10


def test_within_group_r_degenerate_inputs() -> None:
    r, lo, hi, p, n, _, _ = topology.within_group_r(np.ones(10), np.arange(10.0), np.zeros(10))
    assert math.isnan(r) and math.isnan(lo) and n == 10
    r, _, _, _, n, _, _ = topology.within_group_r(np.array([1.0, 2.0, np.nan]), np.array([1.0, 3.0, 2.0]),
                                                  np.zeros(3))
    assert math.isnan(r) and n == 2


def test_within_run_spearman_and_partial() -> None:
    """Metric and accuracy that both follow a drift (as the weights' scale grows with training time)
    correlate strongly; controlling for the drift leaves little, and nothing at all when the metric
    is a monotone function of it."""
    rng = np.random.default_rng(2)
    steps = np.arange(60.0)
    drift = np.log1p(steps)
    accuracy = 1 - np.exp(-steps / 10) + 0.02 * rng.normal(size=60)
    metric = drift + 0.3 * rng.normal(size=60)
    assert topology.within_run_spearman(metric, accuracy) > 0.6
    partial = topology.within_run_spearman(metric, accuracy, np.column_stack([drift, drift ** 2]))
    assert partial is not None and abs(partial) < 0.35
    assert topology.within_run_spearman(2 * drift, accuracy, drift[:, None]) == 0.0
    assert topology.within_run_spearman(metric, 1 - 1 / (1 + drift), drift[:, None]) is None
    assert topology.within_run_spearman(np.ones(60), accuracy) is None
    assert topology.within_run_spearman(metric[:2], accuracy[:2]) is None


def test_sweeps_need_three_fractions() -> None:
    frame = pl.DataFrame({
        "sweep": ["a"] * 5 + ["b"] * 2 + ["c"] * 3,
        "dataset": ["d1"] * 5 + ["d2"] * 2 + ["d3"] * 3,
        "train_fraction": [0.05, 0.1, 0.25, 0.5, 1.0, 0.5, 1.0, 0.1, 0.5, 1.0],
        "final": [0.9, 0.8, 0.85, 0.6, 0.5, 1.0, 2.0, 1.0, 2.0, 3.0]})
    out = topology.sweep_spearman(frame).sort("sweep")
    assert out["sweep"].to_list() == ["a", "c"]
    assert out["spearman"].to_list() == pytest.approx([-0.9, 1.0])


def test_metric_change() -> None:
    assert topology.metric_change(0.5, 0.7, "normalized_entropy") == pytest.approx(0.2)
    assert topology.metric_change(1.0, math.e, "mean_lifetime") == pytest.approx(1.0)
    assert topology.metric_change(None, 1.0, "entropy") is None
    assert topology.metric_change(0.0, 1.0, "mean_lifetime") is None


# --- the stage on the tiny corpus -----------------------------------------------------------------

def test_stage_tables_agree_with_the_stored_weights(built_corpus) -> None:
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    try:
        n_weights, n_rows = con.execute("""SELECT (SELECT count(*) FROM weights WHERE tensor = 'linear.weight'),
                                                  (SELECT count(*) FROM layer_topology)""").fetchall()[0]
        assert n_rows == n_weights > 0
        bars = con.execute("""SELECT count(*) FROM layer_topology t JOIN (
                                  SELECT run_id, step, layer_index, count(*) AS k FROM layer_topology_bars GROUP BY ALL
                              ) b USING (run_id, step, layer_index) WHERE b.k <> t.n_bars""").fetchall()[0][0]
        assert bars == 0
        # recompute two layers independently: ripser and persim on the stored weights
        picks = con.execute("""SELECT w.run_id, w.step, w.layer_index, w.shape, w."values", t.normalized_entropy,
                                      t.mean_lifetime, t.n_bars
                               FROM weights w JOIN layer_topology t USING (run_id, step, layer_index)
                               WHERE w.tensor = 'linear.weight' AND t.n_bars >= 2
                               ORDER BY t.n_points DESC, w.run_id, w.step LIMIT 2""").fetchall()
        for _, _, _, shape, values, norm_entropy, mean_lifetime, n_bars in picks:
            points = np.unique(np.asarray(values, np.float32).astype(np.float64).reshape(shape), axis=0)
            deaths = ph.ripser_h0_deaths(points)
            diagram = np.column_stack([np.zeros_like(deaths), deaths])
            assert len(deaths) == n_bars
            assert norm_entropy == pytest.approx(persim_entropy(diagram, normalize=True)[0], rel=1e-6)
            assert mean_lifetime == pytest.approx(deaths.mean(), rel=1e-6)
        verdicts = con.execute("SELECT claim_id, verdict, n FROM analysis_verdicts WHERE stage = 'topology'").fetchall()
        expected = len(topology.PAPER_METRICS) * (len(topology.VERDICT_POSITIONS) * 5 + 1)
        assert len(verdicts) == expected
        # every correlation verdict carries the numbers of its row in analysis_topology_correlations
        mismatched = con.execute("""
            SELECT count(*) FROM analysis_verdicts v JOIN analysis_topology_correlations c
              ON v.claim_id = 'topology.' || c.metric || '.' || c.position || '.' ||
                 CASE c.analysis WHEN 'accuracy_across_runs' THEN 'tracks_accuracy'
                                 WHEN 'accuracy_beyond_variance' THEN 'beyond_variance'
                                 WHEN 'accuracy_over_training' THEN 'over_training'
                                 WHEN 'accuracy_over_training_beyond_variance' THEN 'over_training_beyond_variance'
                                 ELSE c.analysis END
             AND c.method IN ('pearson', 'partial', 'mean within-run spearman', 'mean within-run partial spearman',
                              'mean within-sweep spearman')
            WHERE v.n <> c.n OR v.effect IS DISTINCT FROM c.estimate""").fetchall()[0][0]
        assert mismatched == 0
        # the tiny corpus has one train-fraction sweep of three fractions
        sweeps = con.execute("""SELECT max(n) FROM analysis_topology_correlations
                                WHERE analysis = 'train_fraction'""").fetchall()[0][0]
        assert sweeps == 1
        fractions = con.execute("SELECT DISTINCT train_fraction FROM analysis_topology_train_fraction").fetchall()
        assert sorted(f for (f,) in fractions) == [0.25, 0.5, 1.0]
        # the tiny corpus has one (data set, architecture) group of 3 classification runs: too few for an
        # across-runs interval, so the forest plot must say so instead of drawing
        estimated = con.execute("""SELECT count(*) FROM analysis_topology_correlations
                                   WHERE analysis = 'accuracy_across_runs' AND estimate IS NOT NULL""").fetchall()[0][0]
        for name, make in topology.FIGURES.items():
            fig = make(con)
            drawn = sum(len(ax.lines) + len(ax.collections) for ax in fig.axes)
            assert fig.get_suptitle(), name
            if name == "topology_correlations" and not estimated:
                assert drawn == 0 and fig.axes[0].texts, name
            else:
                assert drawn > 0, name  # data, not the empty placeholder
            plt.close(fig)
    finally:
        con.close()


def test_figures_on_an_empty_corpus_say_so() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_topology_snapshots (run_id VARCHAR, layer_index INT, position VARCHAR, "
                "epoch DOUBLE, train_fraction DOUBLE, sweep VARCHAR, normalized_entropy DOUBLE, mean_lifetime DOUBLE, "
                "mean_lifetime_scaled DOUBLE)")
    con.execute("CREATE TABLE analysis_topology_train_fraction (metric VARCHAR, position VARCHAR, dataset VARCHAR, "
                "size VARCHAR, train_fraction DOUBLE, final_mean DOUBLE, test_metric_mean DOUBLE)")
    con.execute("CREATE TABLE analysis_topology_correlations (metric VARCHAR, position VARCHAR, analysis VARCHAR, "
                "method VARCHAR, estimate DOUBLE, ci_low DOUBLE, ci_high DOUBLE)")
    for make in topology.FIGURES.values():
        fig = make(con)
        assert fig.get_suptitle() and fig.axes[0].texts, make.__name__  # says why it is empty
        plt.close(fig)


def test_within_group_correlation_ignores_differences_between_groups() -> None:
    """Groups differing in both accuracy and metric level give a large pooled r but no within r;
    a single-run group carries no within information and does not count."""
    rng = np.random.default_rng(4)
    groups = np.repeat(["a|small", "b|small", "b|medium"], 30)
    offset = np.repeat([0.0, 5.0, 10.0], 30)
    metric = offset + rng.normal(size=90)
    accuracy = offset + rng.normal(size=90)
    assert np.corrcoef(metric, accuracy)[0, 1] > 0.9
    r, lo, hi, _, n, k, n_ds = topology.within_group_r(metric, accuracy, groups)
    assert lo < 0 < hi and abs(r) < 0.25 and (n, k, n_ds) == (90, 3, 2)
    planted = accuracy + 2 * (metric - offset)
    r, lo, _, p, _, _, _ = topology.within_group_r(metric, planted, groups, method="spearman")
    assert r > 0.8 and lo > 0.7 and p < 1e-10
    controls = rng.normal(size=(91, 2))
    pr, plo, phi, p, n, k, _ = topology.within_group_r(
        np.append(metric, 1.0), np.append(planted, 0.0), np.append(groups, "single"), controls)
    assert (n, k) == (90, 3) and pr > 0.8 and plo > 0.7 and p < 1e-10


def test_within_group_r_matches_the_correlation_stage_and_the_residual_formula() -> None:
    """Without controls it is the correlation stage's within-group r; with them, the textbook partial r of
    the within-group z-scores; its bootstrap redoes the z-scoring per resample (so resampling only
    within-group structure, the interval still covers the estimate)."""
    from analyses.correlations import within_group_pearson
    from analyses.features import standardize_within

    rng = np.random.default_rng(6)
    groups = np.repeat(["a", "b", "c", "d"], 25)
    x, y, c = rng.normal(size=100), rng.normal(size=100), rng.normal(size=(100, 2))
    y = y + 0.5 * x + c[:, 0]
    r, lo, hi, p, n, k, _ = topology.within_group_r(x, y, groups)
    ref = within_group_pearson(x, y, groups)
    assert r == pytest.approx(ref[0], abs=1e-12) and p == pytest.approx(ref[3], rel=1e-9) and lo < r < hi
    pr, *_ = topology.within_group_r(x, y, groups, c)
    z = standardize_within(np.column_stack([x, y, c]), groups)
    design = np.column_stack([np.ones(100), z[:, 2:]])
    res = [v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (z[:, 0], z[:, 1])]
    assert pr == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-10)


def test_standardize_batched_equals_standardize_within() -> None:
    from analyses.features import standardize_within

    rng = np.random.default_rng(8)
    values = rng.normal(size=(3, 12, 2))
    codes = rng.integers(0, 4, size=(3, 12))
    codes[0, :] = 0
    codes[0, 5] = 1  # a group of one row
    out = topology.standardize_batched(values, codes + np.arange(3)[:, None] * 4, 12)
    for b in range(3):
        np.testing.assert_allclose(out[b], standardize_within(values[b], codes[b]), atol=1e-12)
