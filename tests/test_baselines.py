"""Baselines beside metrics: each data set's trivial predictor scored on its test split in the runs' own
metric (pipeline/extract/baseline.py), stored in ``datasets``, set beside every run in
``analysis_overview`` and drawn in the final-metric figure."""

from __future__ import annotations

from collections import Counter

import duckdb
import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import LineCollection
from sklearn.datasets import load_diabetes, load_wine

from analyses import overview
from pipeline.datasets import prepared_dataset
from pipeline.extract.run import dataset_row
from snapshot_loader.schema import ddl


def test_a_classification_baseline_is_the_training_majority_scored_on_the_test_split() -> None:
    """wine, as the registry splits it: the most common class of the training rows, counted by hand on
    sklearn's own labels, predicted for every test row; a constant score has chance AUC."""
    target = load_wine().target
    d = prepared_dataset("wine")
    assert list(d.y) == list(target)  # no row dropped, classes coded in sklearn's order
    counts = Counter(int(target[i]) for i in d.train_idx)
    majority = max(sorted(counts), key=lambda c: counts[c])  # the smallest code among equal counts
    expected = sum(int(target[i]) == majority for i in d.test_idx) / len(d.test_idx)
    row = dataset_row("wine")
    assert row["baseline_name"] == "majority class"
    assert row["baseline_metric"] == pytest.approx(expected, abs=1e-12)
    assert row["baseline_auc"] == 0.5
    assert 0 < expected < 1 and max(Counter(int(target[i]) for i in d.test_idx).values()) / len(d.test_idx) \
        == pytest.approx(expected)  # stratified: the training majority is the test majority here


def test_a_regression_baseline_is_the_r2_of_the_training_mean_on_the_test_split() -> None:
    """diabetes, in its original units (R^2 does not change when the target is standardized): 1 - SS of
    the test rows around the training mean / SS around their own mean, slightly below 0."""
    target = load_diabetes().target
    d = prepared_dataset("diabetes")
    assert len(d.y) == len(target)
    mean_train = sum(float(target[i]) for i in d.train_idx) / len(d.train_idx)
    test = [float(target[i]) for i in d.test_idx]
    mean_test = sum(test) / len(test)
    expected = 1 - sum((y - mean_train) ** 2 for y in test) / sum((y - mean_test) ** 2 for y in test)
    row = dataset_row("diabetes")
    assert row["baseline_name"] == "training mean" and row["baseline_auc"] is None
    # the prepared target is standardized float32, as the runs are scored on: agreement to float32 rounding
    assert row["baseline_metric"] == pytest.approx(expected, rel=1e-6)
    assert -0.2 < expected < 0


def _corpus() -> duckdb.DuckDBPyConnection:
    """Three data sets (one without a recorded baseline) and five runs: on wine one above its 0.4
    majority rate, one at it and one below; on diabetes one below the training mean's R^2; one on an
    older data set row."""
    con = duckdb.connect()
    for statement in ddl():
        con.execute(statement)
    con.executemany("INSERT INTO datasets (name, task, baseline_name, baseline_metric, baseline_auc) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [("wine", "classification", "majority class", 0.4, 0.5),
                     ("diabetes", "regression", "training mean", -0.04, None),
                     ("iris", "classification", None, None, 0.5)])
    runs = [("above", "wine", "classification", 0.9), ("equal", "wine", "classification", 0.4),
            ("below", "wine", "classification", 0.35), ("r2_below", "diabetes", "regression", -0.06),
            ("old", "iris", "classification", 0.9)]
    for run_id, dataset, task, metric in runs:
        con.execute("INSERT INTO runs (run_id, dataset, task, size, status, final_step, total_steps) "
                    "VALUES (?, ?, ?, 'small', 'complete', 10, 10)", [run_id, dataset, task])
        column = "test_accuracy" if task == "classification" else "test_r2"
        con.execute(f"INSERT INTO checkpoints (run_id, step, test_loss, {column}) VALUES (?, 10, 1.0, ?)",
                    [run_id, metric])
    return con


def test_a_run_at_or_below_its_baseline_is_marked_in_the_overview() -> None:
    con = _corpus()
    overview.STAGE.execute(con)
    rows = con.execute("SELECT run_id, primary_metric, baseline_name, baseline, beats_baseline "
                       "FROM analysis_overview ORDER BY run_id").fetchall()
    assert rows == [("above", 0.9, "majority class", 0.4, True), ("below", 0.35, "majority class", 0.4, False),
                    ("equal", 0.4, "majority class", 0.4, False), ("old", 0.9, None, None, None),
                    ("r2_below", -0.06, "training mean", -0.04, False)]
    fig = overview.final_metric_figure(con)  # a bar per recorded baseline, none for iris
    bars = [c for ax in fig.axes for c in ax.collections if isinstance(c, LineCollection)]
    assert len(bars) == 2 and bars[0].get_label() == "baseline"
    assert "baseline" in next(f.caption for f in overview.STAGE.figures if f.name == "overview_final_metric")
    plt.close(fig)
