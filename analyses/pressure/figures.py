"""The pressure stage's figures: the pressure map of a few runs, and early pressure rank against
later behaviour."""

from __future__ import annotations

import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.colors import SymLogNorm

from analyses.kit.presentation import fmt_number as _f
from analyses.kit.stage import Figure
from analyses.pressure.layers import SATURATING

#: Runs drawn in the pressure map.
MAP_RUNS = 6
#: Seed of the horizontal jitter of the bottleneck figure's points.
JITTER_SEED = 0


def _pick_runs(con: duckdb.DuckDBPyConnection, k: int = MAP_RUNS) -> list[str]:
    """Up to k runs, deepest first, one per architecture before any architecture repeats."""
    rows = con.execute("""SELECT run_id, architecture, n_layers FROM analysis_pressure_bottlenecks
                          WHERE top_layer IS NOT NULL ORDER BY n_layers DESC, architecture, run_id""").fetchall()
    picked, seen = [], set()
    for run_id, arch, _ in rows:
        if arch not in seen and len(picked) < k:
            picked.append(run_id)
            seen.add(arch)
    picked += [r for r, _, _ in rows if r not in picked][: k - len(picked)]
    return picked


def pressure_map_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Heatmaps layer x spectral snapshot of the gradient pressure for a few representative runs."""
    runs = _pick_runs(con)
    ncols = min(3, max(1, len(runs)))
    nrows = max(1, math.ceil(len(runs) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 3.6 * nrows), squeeze=False, layout="constrained")
    df = con.sql("SELECT * FROM analysis_pressure WHERE gradient_pressure IS NOT NULL").pl()
    vals = np.abs(df["gradient_pressure"].to_numpy()) if df.height else np.array([1.0])
    vmax = float(vals.max()) if vals.size and vals.max() > 0 else 1.0
    pos = vals[vals > 0]
    linthresh = float(max(np.quantile(pos, 0.05), vmax * 1e-6)) if pos.size else vmax * 1e-3
    norm = SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax, base=10)
    mesh = None
    for ax, run_id in zip(axes.flat, runs, strict=False):
        sub = df.filter(pl.col("run_id") == run_id).sort(["snapshot_index", "layer_index"])
        n_snap, n_lay = int(sub["snapshot_index"].max()) + 1, int(sub["n_layers"][0])
        grid = np.full((n_lay, n_snap), np.nan)
        grid[sub["layer_index"].to_numpy(), sub["snapshot_index"].to_numpy()] = sub["gradient_pressure"].to_numpy()
        mesh = ax.pcolormesh(np.ma.masked_invalid(grid), cmap="RdBu_r", norm=norm)
        prog = sub.group_by("snapshot_index").agg(pl.col("progress").first()).sort("snapshot_index")
        ax.set_xticks(prog["snapshot_index"].to_numpy() + 0.5)
        ax.set_xticklabels([f"{p:.2g}" for p in prog["progress"].to_list()], rotation=60, fontsize=7)
        ax.set_yticks(np.arange(n_lay) + 0.5)
        ax.set_yticklabels([f"{i}{' (out)' if i == n_lay - 1 else ''}" for i in range(n_lay)], fontsize=8)
        ax.set_xlabel("spectral snapshot (training progress)")
        ax.set_ylabel("layer index")
        ax.set_title(f"{sub['architecture'][0]} · {sub['dataset'][0]} · {sub['optimizer'][0]} · {run_id[:6]}",
                     fontsize=9)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    if not runs:
        axes.flat[0].text(0.5, 0.5, "no gradient pressure stored", ha="center", va="center",
                          transform=axes.flat[0].transAxes)
    if mesh is not None:
        top, low = math.floor(math.log10(vmax)), math.ceil(math.log10(linthresh)) + 1
        ticks = [10.0 ** e for e in range(low, top + 1, max(1, (top - low) // 4 + 1))]
        fig.colorbar(mesh, ax=axes.ravel().tolist(), ticks=[-t for t in ticks[::-1]] + [0.0] + ticks,
                     label="gradient pressure gᵀHg/||g||² (symmetric log scale)")
    fig.suptitle(f"Gradient pressure per layer over training ({len(runs)} runs, deepest first, one per architecture)")
    return fig


def bottleneck_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Early pressure rank against improvement, saturation rise and weight movement, one line per run."""
    df = con.sql("SELECT * FROM analysis_pressure_layers WHERE early_pressure_rank IS NOT NULL "
                 "ORDER BY run_id, early_pressure_rank").pl()
    verdicts = dict(con.execute("SELECT claim_id, effect FROM analysis_pressure_verdicts").fetchall())
    panels = [("grad_log_decrease", "gradient-norm log-decrease, early → late\n(small = slow improvement)",
               None, "pressure.slowest_improving"),
              ("saturation_rise", "saturation-fraction rise, early → late\n(hidden layers)",
               list(SATURATING), "pressure.later_saturation"),
              ("weight_movement", "weight movement ||W_T − W_0|| / ||W_0||", None, None)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    rng = np.random.default_rng(JITTER_SEED)
    for ax, (col, label, acts, claim) in zip(axes, panels, strict=True):
        sub = df.filter(pl.col(col).is_not_null())
        if acts is not None:
            sub = sub.filter(pl.col("activation").is_in(acts) & ~pl.col("is_output"))
        for _, run in sub.group_by("run_id", maintain_order=True):
            ax.plot(run["early_pressure_rank"], run[col], color="lightgray", lw=0.7, zorder=1)
        for is_out, colour, name in ((False, "tab:blue", "hidden layer"), (True, "tab:red", "output layer")):
            part = sub.filter(pl.col("is_output") == is_out)
            if part.height:
                xj = part["early_pressure_rank"].to_numpy() + rng.uniform(-0.08, 0.08, part.height)
                ax.scatter(xj, part[col], s=16, color=colour, label=name, zorder=2, alpha=0.8)
        if col == "weight_movement" and sub.height and (sub[col] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("early pressure rank within the run (1 = highest)")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        rho = verdicts.get(claim) if claim else None
        ax.set_title(f"ρ(early pressure, this), mean over runs = {_f(rho)}" if claim else "descriptive", fontsize=10)
        if sub.height:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Are high-pressure layers bottlenecks? Early pressure rank against later behaviour "
                 "(lines join one run's layers)")
    fig.tight_layout()
    return fig


FIGURES = [
    Figure("pressure_map", pressure_map_figure,
           "Gradient pressure gᵀH_ii g/||g||² (000) of each layer (rows, output at the top) at each spectral "
           "snapshot (columns, labelled by training progress) for up to six runs, deepest first and one per "
           "architecture; colour on a symmetric log scale shared by all panels."),
    Figure("pressure_bottleneck", bottleneck_figure,
           "Each point is one layer of one run: its rank by early mean gradient pressure within the run (1 = "
           "highest) against how much its gradient norm fell from the first to the second half of training (left), "
           "how much its saturation fraction rose (middle, hidden sigmoid/tanh layers) and how far its weights "
           "moved (right); grey lines join a run's layers. The bottleneck idea predicts lines rising to the right "
           "on the left panel (the top-pressure layer improves least) and falling ones in the middle (it saturates "
           "most); panel titles give the mean within-run Spearman ρ between early pressure (not its rank) and the "
           "plotted quantity."),
]
