"""Corpus overview: the final state of every run and its training curves.

Table ``analysis_overview``: one row per run with its configuration, status and the metrics at its
last recorded checkpoint (the primary metric is test accuracy for classification, test R2 for
regression), plus the best test loss and the step it was reached at, and beside the primary metric its
data set's baseline: the trivial predictor's score on the same test split in the same metric
(``datasets.baseline_metric``: the majority class's accuracy, the training mean's R^2), and whether
the run beats it (``beats_baseline``: primary_metric > baseline; NULL where either is missing, as for a
data set recorded before baselines were).
"""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns

from analyses.kit.stage import Figure, Stage
from analyses.kit.tables import write_table

_OVERVIEW_SQL = """
WITH last AS (
    SELECT c.* FROM checkpoints c JOIN runs r USING (run_id) WHERE c.step = r.final_step
), best AS (
    SELECT run_id, min(test_loss) AS best_test_loss, arg_min(step, test_loss) AS best_step
    FROM checkpoints GROUP BY run_id
)
SELECT r.run_id, r.dataset, r.task, r.size, r.activation, r.optimizer, r.norm, r.init, r.train_fraction,
       r.seed, r.n_params, r.status, r.final_step, r.total_steps,
       l.train_loss, l.test_loss, l.gap_loss, l.gap_accuracy,
       CASE WHEN r.task = 'classification' THEN l.test_accuracy ELSE l.test_r2 END AS primary_metric,
       CASE WHEN r.task = 'classification' THEN 'test_accuracy' ELSE 'test_r2' END AS primary_metric_name,
       b.best_test_loss, b.best_step,
       d.baseline_name, d.baseline_metric AS baseline,
       CASE WHEN r.task = 'classification' THEN l.test_accuracy ELSE l.test_r2 END > d.baseline_metric
           AS beats_baseline
FROM runs r LEFT JOIN last l USING (run_id) LEFT JOIN best b USING (run_id)
     LEFT JOIN datasets d ON d.name = r.dataset
ORDER BY r.dataset, r.run_id
"""


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_overview``."""
    write_table(con, "analysis_overview", _OVERVIEW_SQL)


def training_curves_figure(con: duckdb.DuckDBPyConnection, max_panels: int = 12) -> plt.Figure:
    """Train (dashed) and test (solid) loss against optimizer step, one panel per data set, one
    colour per model size; at most ``max_panels`` data sets (those with the most runs)."""
    df = con.sql("""
        SELECT c.run_id, r.dataset, r.task, r.size, c.step, c.train_loss, c.test_loss
        FROM checkpoints c JOIN runs r USING (run_id) ORDER BY r.dataset, c.run_id, c.step""").pl()
    datasets = (df.group_by("dataset").agg(pl.col("run_id").n_unique().alias("n"))
                .sort(["n", "dataset"], descending=[True, False])["dataset"].head(max_panels).sort().to_list())
    ncols = min(4, max(1, len(datasets)))
    nrows = max(1, int(np.ceil(len(datasets) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    sizes = sorted(df["size"].unique().to_list())
    palette = dict(zip(sizes, sns.color_palette("colorblind", len(sizes)), strict=True))
    for ax, name in zip(axes.flat, datasets, strict=False):
        sub = df.filter(pl.col("dataset") == name)
        for _, run in sub.group_by(["run_id"], maintain_order=True):
            color = palette[run["size"][0]]
            steps = run["step"].to_numpy() + 1
            ax.plot(steps, run["train_loss"].to_numpy(), ls="--", lw=0.9, color=color, alpha=0.7)
            ax.plot(steps, run["test_loss"].to_numpy(), ls="-", lw=1.1, color=color, alpha=0.9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        task = sub["task"][0]
        ax.set_title(f"{name} ({task[:5]}.)")
        ax.set_xlabel("optimizer step + 1")
        ax.set_ylabel("cross-entropy" if task == "classification" else "MSE (standardized)")
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=palette[s], label=f"size {s}") for s in sizes]
    handles += [plt.Line2D([], [], color="gray", ls="-", label="test"),
                plt.Line2D([], [], color="gray", ls="--", label="train")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Training curves: loss per checkpoint, by data set and model size")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


def final_metric_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Primary test metric at the last checkpoint per data set, by model size (runs as points), with
    each data set's baseline (the trivial predictor's score on the same test split) as a black bar."""
    df = con.sql("SELECT dataset, task, size, primary_metric, baseline FROM analysis_overview "
                 "WHERE primary_metric IS NOT NULL").pl().to_pandas()
    tasks = [t for t in ("classification", "regression") if t in set(df["task"])]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(7 * max(1, len(tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        sub = df[df["task"] == task]
        order = sorted(set(sub["dataset"]))
        sns.stripplot(data=sub, x="dataset", y="primary_metric", hue="size", dodge=True, ax=ax, size=5, order=order)
        baselines = sub.groupby("dataset")["baseline"].first().astype(float)
        drawn = [(i, baselines[name]) for i, name in enumerate(order) if np.isfinite(baselines[name])]
        for k, (i, value) in enumerate(drawn):  # a NULL baseline (not recorded) reads as NaN: no bar
            ax.hlines(value, i - 0.42, i + 0.42, color="black", lw=1.6, zorder=3, label="baseline" if k == 0 else None)
        ax.legend(fontsize=8)
        ax.set_title("test accuracy at the end of training (bar: majority class)" if task == "classification"
                     else "test R² at the end of training (bar: training mean)")
        ax.set_xlabel("data set")
        ax.set_ylabel("test accuracy" if task == "classification" else "test R²")
        ax.tick_params(axis="x", rotation=45)
        if task == "regression":
            low = np.nanmin([*sub["primary_metric"], *sub["baseline"].astype(float)])
            ax.set_ylim(max(-1.0, float(low) - 0.05), 1.0)
    fig.suptitle("Final quality per data set and model size, beside each data set's baseline")
    fig.tight_layout()
    return fig


TABLES = {
    "analysis_overview": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("task", "VARCHAR"), ("size", "VARCHAR"),
        ("activation", "VARCHAR"), ("optimizer", "VARCHAR"), ("norm", "VARCHAR"), ("init", "VARCHAR"),
        ("train_fraction", "DOUBLE"), ("seed", "INTEGER"), ("n_params", "BIGINT"), ("status", "VARCHAR"),
        ("final_step", "INTEGER"), ("total_steps", "INTEGER"), ("train_loss", "DOUBLE"), ("test_loss", "DOUBLE"),
        ("gap_loss", "DOUBLE"), ("gap_accuracy", "DOUBLE"), ("primary_metric", "DOUBLE"),
        ("primary_metric_name", "VARCHAR"), ("best_test_loss", "DOUBLE"), ("best_step", "INTEGER"),
        ("baseline_name", "VARCHAR"), ("baseline", "DOUBLE"), ("beats_baseline", "BOOLEAN"),
    ],
}

STAGE = Stage(
    name="overview", title="Training curves", doc=__doc__, reads=("runs", "checkpoints", "datasets"), tables=TABLES,
    run=run,
    figures=[
        Figure("overview_training_curves", training_curves_figure,
               "Train (dashed) and test (solid) loss over optimizer steps, log-log, one colour per model size; "
               "the metric checkpoints are dense early and sparse late."),
        Figure("overview_final_metric", final_metric_figure,
               "Test accuracy (classification) or test R² (regression) at each run's last checkpoint; one point "
               "per run. The black bar is the data set's baseline, the trivial predictor fitted on its training "
               "split and scored on the same test split: the majority class's accuracy, the training mean's R² "
               "(slightly below 0); a run at or under it has learned nothing the class balance or the mean does "
               "not give (no bar: not recorded for that data set)."),
    ],
)
