"""The gap stage's R^2 figure (:mod:`analyses.gap.figures`): every bar and interval drawn whole."""

from __future__ import annotations

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.gap.figures import r2_figure  # noqa: E402


def _regression(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_gap_regression (spec VARCHAR, cv_scheme VARCHAR, stage VARCHAR, "
                "fit_stage VARCHAR, target VARCHAR, sample VARCHAR, r2_cv DOUBLE, r2_cv_low DOUBLE, "
                "r2_cv_high DOUBLE, n_models INT)")
    con.executemany("INSERT INTO analysis_gap_regression VALUES (?, 'grouped_by_dataset', 'late', 'late', 'gap', "
                    "'all', ?, ?, ?, 30)", rows)
    return con


def test_r2_far_below_minus_one_is_drawn_whole() -> None:
    """A bar at -3424 with its interval down to -22064 used to be cut at -1: the axis now reaches it (on a
    logarithmic stretch beyond -1), and each value and interval is written in a column right of the axes."""
    fig = r2_figure(_regression([("sharpness", -0.2, -0.5, -0.1), ("margins_all_points", -3424.0, -22064.0, -168.0)]))
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    assert ax.get_xlim()[0] < -22064 and ax.get_xlim()[1] >= 0.89  # the paper's line
    texts = [t.get_text() for t in ax.texts]
    assert "-3424 [-22064, -168]" in texts and "-0.20 [-0.50, -0.10]" in texts
    right = [t for t in ax.texts if t.get_text().startswith("-")]
    assert all(t.get_position()[0] > 1 for t in right)  # in axes fractions: beside the axes, not on the bars
    plt.close(fig)


def test_r2_above_minus_one_keeps_a_linear_axis() -> None:
    fig = r2_figure(_regression([("sharpness", -0.2, -0.5, -0.1), ("n_params", 0.3, 0.1, 0.5)]))
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and -0.6 < ax.get_xlim()[0] < -0.5
    plt.close(fig)
