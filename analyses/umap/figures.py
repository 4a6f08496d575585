"""The umap stage's figure: the paper's Figure 2, drawn from ``analysis_umap`` and its scores."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt

from analyses.kit.presentation import fmt_number as _f
from analyses.kit.stage import Figure
from analyses.umap.report import stored_score


def snapshots_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """The paper's Figure 2: the UMAP plane coloured by architecture (marker by task), and by progress."""
    df = con.sql("SELECT * FROM analysis_umap WHERE x IS NOT NULL ORDER BY run_id, step").pl()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    ax, ax2 = axes
    n_runs = df["run_id"].n_unique() if df.height else 0
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
    ax.set_title("coloured by architecture")
    ax2.set_title("coloured by training progress (lines join a run's snapshots)")
    for a in axes:
        a.set_xlabel("UMAP 1")
        a.set_ylabel("UMAP 2")
    sil_f = stored_score(con, "silhouette_features")[0]
    sil_e = stored_score(con, "silhouette_embedding")[0]
    acc = stored_score(con, "knn_accuracy", cv="dataset_study")
    base = stored_score(con, "knn_shuffled", cv="dataset_study")
    last = stored_score(con, "knn_accuracy", cv="dataset_study", snapshots="last")[0]
    init = stored_score(con, "knn_accuracy", cv="dataset_study", snapshots="step0")[0]
    fig.suptitle(
        f"UMAP of {df.height} snapshots from {n_runs} runs (001 Figure 2)\nsilhouette by architecture "
        f"{_f(sil_f)} (features), {_f(sil_e)} (plane); k-NN accuracy, (data set, study) groups held out, "
        f"{_f(acc[0])} vs shuffled {_f(base[0])} [{_f(base[1])}, {_f(base[2])}]\non each run's last snapshot "
        f"{_f(last)}, on its untrained step-0 snapshot {_f(init)}")
    fig.tight_layout()
    return fig


FIGURES = [
    Figure("umap_snapshots", snapshots_figure,
           "The paper's Figure 2: each point is one spectral snapshot, its weight, gradient and Hessian-spectrum "
           "features (layer means and the output layer, median-imputed, standardized) embedded by UMAP. Left: "
           "colour = architecture (activation, normalization and widths), marker = task. Right: colour = training "
           "progress, grey lines join the snapshots of one run. The title gives the silhouette by architecture, "
           "the k-NN accuracy with whole (data set, study) groups held out against labels shuffled among runs, and "
           "the same on each run's last and on its untrained step-0 snapshot."),
]
