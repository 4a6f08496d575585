"""The topology stage's figures on an empty corpus (:mod:`analyses.topology.figures`)."""

from __future__ import annotations

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.topology import STAGE  # noqa: E402


def test_figures_on_an_empty_corpus_say_so() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_topology_snapshots (run_id VARCHAR, layer_index INT, position VARCHAR, "
                "epoch DOUBLE, train_fraction DOUBLE, sweep VARCHAR, normalized_entropy DOUBLE, mean_lifetime DOUBLE, "
                "mean_lifetime_scaled DOUBLE)")
    con.execute("CREATE TABLE analysis_topology_train_fraction (metric VARCHAR, position VARCHAR, dataset VARCHAR, "
                "size VARCHAR, train_fraction DOUBLE, final_mean DOUBLE, test_metric_mean DOUBLE)")
    con.execute("CREATE TABLE analysis_topology_correlations (metric VARCHAR, position VARCHAR, analysis VARCHAR, "
                "method VARCHAR, estimate DOUBLE, ci_low DOUBLE, ci_high DOUBLE)")
    for figure in STAGE.figures:
        fig = figure.draw(con)
        assert fig.get_suptitle() and fig.axes[0].texts, figure.name  # says why it is empty
        plt.close(fig)
