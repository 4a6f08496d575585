"""The topology stage's figures (:mod:`analyses.topology.figures`): on an empty corpus, and the
trajectories' sweeps named."""

from __future__ import annotations

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.topology import STAGE  # noqa: E402
from analyses.topology.figures import trajectories_figure  # noqa: E402


def test_figures_on_an_empty_corpus_say_so() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_topology_snapshots (run_id VARCHAR, layer_index INT, position VARCHAR, "
                "epoch DOUBLE, train_fraction DOUBLE, sweep VARCHAR, dataset VARCHAR, size VARCHAR, seed INT, "
                "normalized_entropy DOUBLE, mean_lifetime DOUBLE, mean_lifetime_scaled DOUBLE)")
    con.execute("CREATE TABLE analysis_topology_train_fraction (metric VARCHAR, position VARCHAR, dataset VARCHAR, "
                "size VARCHAR, train_fraction DOUBLE, final_mean DOUBLE, test_metric_mean DOUBLE)")
    con.execute("CREATE TABLE analysis_topology_correlations (metric VARCHAR, position VARCHAR, analysis VARCHAR, "
                "method VARCHAR, estimate DOUBLE, ci_low DOUBLE, ci_high DOUBLE)")
    for figure in STAGE.figures:
        fig = figure.draw(con)
        assert fig.get_suptitle() and fig.axes[0].texts, figure.name  # says why it is empty
        plt.close(fig)


def test_trajectories_name_every_sweep() -> None:
    """Each sweep's bundle of lines carries a letter, and the figure's key says which data set, size and seed
    the letter stands for: without them the bundles were unlabelled."""
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_topology_snapshots (run_id VARCHAR, layer_index INT, position VARCHAR, "
                "epoch DOUBLE, train_fraction DOUBLE, sweep VARCHAR, dataset VARCHAR, size VARCHAR, seed INT, "
                "normalized_entropy DOUBLE, mean_lifetime DOUBLE)")
    rows = [(f"{sweep}-{frac}", 0, "first", epoch, frac, sweep, dataset, "small", seed, 0.99 + 0.001 * seed,
             1.5 + epoch / 100 * frac)
            for sweep, dataset, seed in (("s1", "wine", 0), ("s2", "iris", 1))
            for frac in (0.1, 0.5, 1.0) for epoch in (0.0, 10.0, 20.0)]
    con.executemany("INSERT INTO analysis_topology_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    fig = trajectories_figure(con)
    key = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert key == ["a: iris, small, seed 1", "b: wine, small, seed 0"]
    for ax in fig.axes[:2]:  # both metrics' panels (the last axes is the colour bar)
        assert sorted(t.get_text() for t in ax.texts) == ["a", "b"]
    plt.close(fig)
