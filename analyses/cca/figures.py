"""The CCA stage's figures: the loadings heatmap and the first canonical variate pair."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import polars as pl
import seaborn as sns

from analyses.kit.presentation import empty_figure
from analyses.kit.stage import Figure


def loadings_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Heatmap of the structure correlations of every variable with canonical variates 1-2, per task."""
    title = "CCA loadings: correlation of each variable with its block's canonical variate"
    df = con.sql("SELECT task, block, variable, component, loading FROM analysis_cca_loadings").pl()
    tasks = [t for t in ("classification", "regression") if t in set(df["task"].to_list())]
    if not tasks:
        return empty_figure(title, "no task had enough snapshots for a CCA")
    n_rows = max(df.filter(pl.col("task") == t).select(pl.struct("block", "variable").n_unique()).item()
                 for t in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks) + 1, 0.32 * n_rows + 2), squeeze=False)
    for i, (ax, task) in enumerate(zip(axes.flat, tasks, strict=True)):
        sub = df.filter(pl.col("task") == task).to_pandas()
        sub["label"] = sub["block"].map({"X": "feature: ", "Y": "metric: "}) + sub["variable"]
        order = list(dict.fromkeys(sub.sort_values(["block"], kind="stable")["label"]))
        mat = sub.pivot(index="label", columns="component", values="loading").reindex(order)
        mat.columns = [f"pair {c}" for c in mat.columns]
        sns.heatmap(mat, ax=ax, cmap="RdBu_r", center=0, vmin=-1, vmax=1, annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar=i == len(tasks) - 1,
                    cbar_kws={"label": "structure correlation", "shrink": 0.6})
        n_x = int((sub.drop_duplicates("label")["block"] == "X").sum())
        ax.axhline(n_x, color="black", lw=1)
        ax.grid(False)
        ax.set_title(task)
        ax.set_xlabel("canonical pair")
        ax.set_ylabel("variable (features above the line, metrics below)" if i == 0 else "")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def scores_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """First canonical variate pair: in-sample (left) and held-out (right) per task, by data set."""
    title = "First canonical variate pair: in-sample fit and held-out folds"
    df = con.sql("SELECT * FROM analysis_cca_scores ORDER BY task, dataset, run_id, step").pl()
    tasks = [t for t in ("classification", "regression") if t in set(df["task"].to_list())]
    if not tasks:
        return empty_figure(title, "no task had enough snapshots for a CCA")
    stats = {(t, c): (r, p) for t, c, r, p in con.execute(
        "SELECT task, component, canonical_correlation, p_value FROM analysis_cca").fetchall()}
    held = dict(con.execute("SELECT task, avg(heldout_correlation) FROM analysis_cca_heldout "
                            "WHERE x_block = 'spectral' GROUP BY task"
                            ).fetchall())
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 4 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        sub = df.filter(pl.col("task") == task).to_pandas()
        r1, p1 = stats.get((task, 1), (None, None))
        for col, (u, v) in enumerate((("u1", "v1"), ("heldout_u1", "heldout_v1"))):
            ax = axes[row, col]
            part = sub.dropna(subset=[u, v])
            if len(part):
                sns.scatterplot(data=part, x=u, y=v, hue="dataset", ax=ax, s=16, alpha=0.75, linewidth=0,
                                palette="colorblind", legend=col == 1)
            if col == 0:
                ax.set_title(f"{task}, in-sample: ρ1 = {r1:.2f}, Wilks p = {p1:.2g}" if r1 is not None
                             else f"{task}, in-sample")
            else:
                h = held.get(task)
                ax.set_title(f"{task}, held-out: mean fold r = {h:.2f}" if h is not None
                             else f"{task}, held-out: no fold")
                if ax.get_legend() is not None:
                    ax.legend(title="data set", fontsize=7, title_fontsize=8, loc="best")
            ax.set_xlabel("feature variate u1 (spectral block)")
            ax.set_ylabel("metric variate v1 (quality block)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


FIGURES = [
    Figure("cca_loadings", loadings_figure,
           "Structure correlations of each spectral feature (X) and quality metric (Y, no loss-defined metric) with "
           "its block's first two canonical variates, per task, on each run's last snapshot (the verdict's design); "
           "columns z-scored within data set, constant and near-collinear columns dropped. Signs are oriented so "
           "the metric variate rises with the primary metric."),
    Figure("cca_scores", scores_figure,
           "First canonical variates, one point per run (its last snapshot) coloured by data set. Left: the "
           "in-sample fit. Right: each run projected with the weights fitted on the folds that did not contain its "
           "data set (or its run, with fewer than 3 data sets); the sign comes from the training fit. The verdict's "
           "effect is the correlation of the right panel's points."),
]
