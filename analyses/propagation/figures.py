"""The propagation stage's figures, drawn from the database alone: the coupling maps and block graph of
one example run, the four arms against the learning rate, and one map per model family."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns

from analyses.kit.presentation import empty_figure
from analyses.kit.stage import Figure
from analyses.propagation.cells import ARMS
from analyses.propagation.coupling import coupling_matrices


def example_run(con: duckdb.DuckDBPyConnection) -> str | None:
    """The synthesized run with the most added edges (then the most shadows), else any run with a map."""
    row = con.execute("""SELECT run_id FROM analysis_propagation_runs WHERE coherence_last IS NOT NULL
                         ORDER BY arm = 'synthesized' DESC, edges_added DESC, shadows_last DESC, run_id
                         LIMIT 1""").fetchone()
    return row[0] if row else None


def coupling_maps_figure(con: duckdb.DuckDBPyConnection, max_panels: int = 6) -> plt.Figure:
    """Heatmaps of kappa_ij at the example run's checkpoints; shadows of each map's window outlined."""
    run_id = example_run(con)
    if run_id is None:
        return empty_figure("Curvature coupling", "No run has a coupling map (set coupling_probes in the config).")
    maps = coupling_matrices(con, run_id)
    if len(maps) > max_panels:
        keep = np.unique(np.round(np.linspace(0, len(maps) - 1, max_panels)).astype(int))
        maps = [maps[k] for k in keep]
    info = con.execute("SELECT dataset, arm, lr, seed FROM analysis_propagation_runs WHERE run_id = ?",
                       [run_id]).fetchone()
    shadows = con.execute("SELECT step_last, block_i, block_j FROM shadows WHERE run_id = ?", [run_id]).fetchall()
    vmax = max(1.5, float(np.nanmax([np.nanmax(m[1]) for m in maps])))
    fig, axes = plt.subplots(1, len(maps), figsize=(3.1 * len(maps) + 1, 3.4), squeeze=False)
    for ax, (step, kappa, _, _) in zip(axes[0], maps, strict=True):
        im = ax.imshow(kappa, cmap="viridis", vmin=0, vmax=vmax)
        for s_last, i, j in shadows:
            if s_last == step:
                for a, b in ((i, j), (j, i)):
                    ax.add_patch(plt.Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
        ax.set_title(f"step {step}", fontsize=10)
        ax.set_xlabel("block j")
        ax.grid(False)
        ax.set_xticks(range(kappa.shape[0]))
        ax.set_yticks(range(kappa.shape[0]))
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("block i")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="κ_ij")
    fig.suptitle(f"Curvature coupling κ_ij of run {run_id} ({info[0]}, {info[1]}, lr {info[2]}, seed {info[3]}); "
                 "red: shadows of the window ending there", fontsize=10)
    return fig


def shadow_graph_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """The example run's block graph: blocks left to right, computational edges (grey, above), shadows
    of its last window (red dashed, below) and the gated edges it gained (green, above)."""
    run_id = example_run(con)
    if run_id is None:
        return empty_figure("Curvature coupling", "No run has a coupling map (set coupling_probes in the config).")
    blocks = con.execute("SELECT block_index, name, successors FROM blocks WHERE run_id = ? ORDER BY 1",
                         [run_id]).fetchall()
    added = con.execute("SELECT src, dst, kind, gate FROM augmentations WHERE run_id = ?", [run_id]).fetchall()
    last = con.execute("SELECT max(step_last) FROM shadows WHERE run_id = ?", [run_id]).fetchone()[0]
    shadows = con.execute("SELECT block_i, block_j, max_relative FROM shadows WHERE run_id = ? AND step_last = ?",
                          [run_id, last]).fetchall()
    n = len(blocks)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * n + 2), 3.6))

    def arc(a: float, b: float, up: bool, **kw) -> None:
        t = np.linspace(0, np.pi, 40)
        height = 0.25 * abs(b - a) ** 0.8 * (1 if up else -1)
        ax.plot(a + (b - a) * (1 - np.cos(t)) / 2, height * np.sin(t), **kw)

    edge_set = {(e[0], e[1]) for e in added}
    for i, _, succ in blocks:
        for j in succ:
            if (i, j) not in edge_set:
                arc(i, j, True, color="0.6", lw=1)
    for src, dst, kind, gate in added:
        arc(src, min(dst, n), True, color="tab:green", lw=2.2,
            label=f"added {kind} {src}→{dst} (gate {gate:+.2f})")
    for i, j, rel in shadows:
        arc(i, j, False, color="tab:red", lw=1.4, ls="--", label=f"shadow {i}–{j} (r ≤ {rel:.2f})")
    ax.scatter(range(n), np.zeros(n), s=260, color="white", edgecolor="black", zorder=3)
    for i in range(n):
        ax.text(i, 0, str(i), ha="center", va="center", fontsize=8, zorder=4)
    ax.set_xlim(-1.2, n + 0.5)
    ax.set_yticks([])
    ax.set_xlabel("block (forward order)")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:8], labels[:8], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Block graph of run {run_id}: computational edges (grey), shadows (red), added edges (green)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def arms_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Final test metric against learning rate per arm (mean over seeds, bars: min-max), per data set, with
    the data set's baseline (the trivial predictor's test score, ``datasets.baseline_metric``) dotted."""
    df = con.sql("SELECT * FROM analysis_propagation_runs WHERE final_test_metric IS NOT NULL").pl()
    baselines = dict(con.execute("SELECT name, baseline_metric FROM datasets WHERE baseline_metric IS NOT NULL")
                     .fetchall())
    if df.is_empty():
        return empty_figure("Four arms", "No runs of the propagation study.")
    datasets = sorted(df["dataset"].unique().to_list())
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets), 3.4), squeeze=False, sharey=True)
    palette = dict(zip(ARMS, sns.color_palette("colorblind", len(ARMS)), strict=True))
    for ax, name in zip(axes[0], datasets, strict=True):
        sub = df.filter(pl.col("dataset") == name)
        for k, arm in enumerate(ARMS):
            g = (sub.filter(pl.col("arm") == arm).group_by("lr")
                 .agg(pl.col("final_test_metric").mean().alias("m"), pl.col("final_test_metric").min().alias("lo"),
                      pl.col("final_test_metric").max().alias("hi")).sort("lr"))
            if g.is_empty():
                continue
            x = np.log10(g["lr"].to_numpy()) + (k - 1.5) * 0.03
            m = g["m"].to_numpy()
            spread = [np.clip(m - g["lo"].to_numpy(), 0, None), np.clip(g["hi"].to_numpy() - m, 0, None)]
            ax.errorbar(x, m, yerr=spread, marker="o", ms=4, capsize=2,
                        color=palette[arm], label=arm)
        if name in baselines:
            ax.axhline(baselines[name], color="black", ls=":", lw=1.2, label="baseline")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("log10 learning rate")
    axes[0][0].set_ylabel("final test metric")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Deep plain networks: final test metric per arm (mean over seeds, bars: min–max)", fontsize=10)
    fig.tight_layout()
    return fig


def families_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """The last coupling map of one run per family (and of the residual template), blocks labelled."""
    picks = con.execute("""
        SELECT family || CASE WHEN residual = 'every' THEN ' (residual)' ELSE '' END AS label, min(run_id)
        FROM runs WHERE coupling_probes > 0 AND status = 'complete' AND augment = 'none'
        GROUP BY ALL ORDER BY label""").fetchall()
    if not picks:
        return empty_figure("Coupling maps by family", "No run has a coupling map (set coupling_probes).")
    fig, axes = plt.subplots(1, len(picks), figsize=(3.4 * len(picks) + 1, 3.8), squeeze=False)
    for ax, (label, run_id) in zip(axes[0], picks, strict=True):
        step, kappa, _, _ = coupling_matrices(con, run_id)[-1]
        names = [r[0] for r in con.execute("SELECT name FROM blocks WHERE run_id = ? ORDER BY block_index",
                                           [run_id]).fetchall()]
        dataset = con.execute("SELECT dataset FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
        im = ax.imshow(kappa, cmap="viridis", vmin=0, vmax=max(1.5, float(np.nanmax(kappa))))
        labels = names if len(names) <= 8 else [str(i) for i in range(len(names))]
        ax.set_xticks(range(len(names)), labels, rotation=60 if len(names) <= 8 else 0,
                      ha="right" if len(names) <= 8 else "center", fontsize=7)
        ax.set_yticks(range(len(names)), labels, fontsize=7)
        ax.grid(False)
        ax.set_title(f"{label}, {dataset}, step {step}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle("Curvature coupling κ_ij at the last snapshot, one run per family", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = [
    Figure("propagation_coupling_maps", coupling_maps_figure,
           "Curvature coupling κ_ij = ||H_ij||_F / sqrt(||H_ii||_F ||H_jj||_F) of the loss Hessian at the stored "
           "checkpoints of one run (Rademacher probes, definition 9); red squares: pairs in shadow over the "
           "window of maps ending at that step."),
    Figure("propagation_shadow_graph", shadow_graph_figure,
           "The same run's blocks and paths: grey arcs are the computational edges, green the gated edges "
           "synthesis added (final gate value), red dashed the shadows of its last window (relative coupling r "
           "below the threshold at the pair's path length)."),
    Figure("propagation_arms", arms_figure,
           "Final test metric of the four arms against the learning rate, per data set; the dotted line is the "
           "data set's baseline, the trivial predictor's score on the same test split (majority-class accuracy, "
           "training-mean R²; absent where not recorded)."),
    Figure("propagation_families", families_figure,
           "The coupling map of every family at its last snapshot: the MLP chain, its residual template, the "
           "1-D/2-D CNN and the Transformer encoder (blocks are parameter groups; the residual stream links every "
           "Transformer sublayer to all later ones)."),
]
