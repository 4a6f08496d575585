"""The umap stage's figure: the paper's Figure 2, drawn from ``analysis_umap`` and its scores."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import polars as pl
from bokeh.models import ColorBar, LinearColorMapper
from bokeh.palettes import Viridis256

from analyses.kit import interactive as bk
from analyses.kit.presentation import fmt_number as _f
from analyses.kit.stage import Figure
from analyses.umap.report import stored_score

_PANELS = ("coloured by architecture", "coloured by training progress (lines join a run's snapshots)")
#: What hovering a snapshot shows.
_HOVER = (("run", "run_id"), ("data set", "dataset"), ("architecture", "architecture"), ("optimizer", "optimizer"),
          ("step", "step"), ("progress", "progress", "{0.00}"))


def _embedded(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.sql("SELECT * FROM analysis_umap WHERE x IS NOT NULL ORDER BY run_id, step").pl()


def _title(con: duckdb.DuckDBPyConnection, df: pl.DataFrame) -> str:
    """The figure's title: how many snapshots, and the stored separation scores."""
    n_runs = df["run_id"].n_unique() if df.height else 0
    sil_f = stored_score(con, "silhouette_features")[0]
    sil_e = stored_score(con, "silhouette_embedding")[0]
    acc = stored_score(con, "knn_accuracy", cv="dataset_study")
    base = stored_score(con, "knn_shuffled", cv="dataset_study")
    last = stored_score(con, "knn_accuracy", cv="dataset_study", snapshots="last")[0]
    init = stored_score(con, "knn_accuracy", cv="dataset_study", snapshots="step0")[0]
    return (f"UMAP of {df.height} snapshots from {n_runs} runs (001 Figure 2)\nsilhouette by architecture "
            f"{_f(sil_f)} (features), {_f(sil_e)} (plane); k-NN accuracy, (data set, study) groups held out, "
            f"{_f(acc[0])} vs shuffled {_f(base[0])} [{_f(base[1])}, {_f(base[2])}]\non each run's last snapshot "
            f"{_f(last)}, on its untrained step-0 snapshot {_f(init)}")


def snapshots_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """The paper's Figure 2: the UMAP plane coloured by architecture (marker by task), and by progress."""
    df = _embedded(con)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    ax, ax2 = axes
    if df.height == 0:
        for a in axes:
            a.text(0.5, 0.5, "no embedding: too few snapshots", ha="center", va="center", transform=a.transAxes)
    else:
        archs = sorted(df["architecture"].unique().to_list())
        cmap = plt.get_cmap("tab10" if len(archs) <= 10 else "tab20")
        markers = {"classification": "o", "regression": "^"}
        colour = {arch: cmap(i % cmap.N) for i, arch in enumerate(archs)}
        for (arch, task), sub in df.group_by(["architecture", "task"], maintain_order=True):
            ax.scatter(sub["x"], sub["y"], s=22, marker=markers.get(task, "s"), color=colour[arch], alpha=0.8,
                       edgecolors="none")
        handles = [plt.Line2D([], [], ls="", marker="o", color=colour[a], label=a) for a in archs]
        handles += [plt.Line2D([], [], ls="", marker=m, color="black", markerfacecolor="none", label=f"({t})")
                    for t, m in markers.items() if t in set(df["task"].to_list())]
        ax.legend(handles=handles, title="architecture (marker: task)", fontsize=8, loc="best")
        for _, run in df.group_by("run_id", maintain_order=True):
            ax2.plot(run["x"], run["y"], color="lightgray", lw=0.6, zorder=1)
        sc = ax2.scatter(df["x"], df["y"], c=df["progress"], cmap="viridis", s=18, zorder=2, vmin=0, vmax=1)
        fig.colorbar(sc, ax=ax2, label="training progress (step / total steps)")
    ax.set_title(_PANELS[0])
    ax2.set_title(_PANELS[1])
    for a in axes:
        a.set_xlabel("UMAP 1")
        a.set_ylabel("UMAP 2")
    fig.suptitle(_title(con, df))
    fig.tight_layout()
    return fig


def snapshots_interactive(con: duckdb.DuckDBPyConnection) -> bk.InteractiveFigure | None:
    """Figure 2 to explore: hover a snapshot for its run, data set, architecture and step; zoom; click a
    legend entry to hide an architecture. None without an embedding."""
    df = _embedded(con)
    if df.height == 0:
        return None
    left = bk.panel(_PANELS[0], "UMAP 1", "UMAP 2")
    right = bk.panel(_PANELS[1], "UMAP 1", "UMAP 2")
    right.x_range, right.y_range = left.x_range, left.y_range  # zooming one zooms both
    bk.categorical_scatter(left, df, "x", "y", "architecture", _HOVER, marker_by="task")
    runs = df.group_by("run_id", maintain_order=True).agg("x", "y")
    right.multi_line(runs["x"].to_list(), runs["y"].to_list(), color="lightgray", line_width=0.7)
    mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
    points = right.scatter("x", "y", source=bk.source(df, ["x", "y", *(f[1] for f in _HOVER)]), size=6,
                           line_color=None, color={"field": "progress", "transform": mapper})
    right.add_tools(bk.hover([points], _HOVER))
    right.add_layout(ColorBar(color_mapper=mapper, title="progress (step / total steps)", width=10), "right")
    return bk.InteractiveFigure(_title(con, df), bk.side_by_side(left, right))


FIGURES = [
    Figure("umap_snapshots", snapshots_figure, interactive=snapshots_interactive, caption=(
           "The paper's Figure 2: each point is one spectral snapshot, its weight, gradient and Hessian-spectrum "
           "features (layer means and the output layer, median-imputed, standardized) embedded by UMAP. Left: "
           "colour = architecture (activation, normalization and widths), marker = task. Right: colour = training "
           "progress, grey lines join the snapshots of one run. The title gives the silhouette by architecture, "
           "the k-NN accuracy with whole (data set, study) groups held out against labels shuffled among runs, and "
           "the same on each run's last and on its untrained step-0 snapshot. In the report: hover a point for its "
           "run, zoom with the wheel or a box, click a legend entry to hide it.")),
]
