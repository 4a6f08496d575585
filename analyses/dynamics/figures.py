"""The dynamics stage's figures: curves with phases for one run per architecture, eigenvalue
distributions by phase and layer position, and the number of phases per run."""

from __future__ import annotations

import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns

from analyses.dynamics.phases import PHASES, SINGLE_PHASE
from analyses.dynamics.segmentation import MAX_CHANGES
from analyses.kit.stage import Figure

#: At most this many runs in the curves figure (one per architecture).
MAX_CURVE_PANELS = 8
#: Colours of the phases in the figures.
PHASE_COLORS = {"initial": "#56B4E9", "fast learning": "#E69F00", "fine-tuning": "#009E73",
                "saturation": "#999999", SINGLE_PHASE: "#CC79A7"}


def _representative_runs(con: duckdb.DuckDBPyConnection, max_panels: int = MAX_CURVE_PANELS) -> list[tuple]:
    """One run per architecture (the most common number of phases in it, then the smallest run_id)."""
    return con.execute(f"""
        WITH n AS (SELECT run_id, count(*) AS n_phases FROM analysis_dynamics_phases GROUP BY run_id),
        a AS (SELECT DISTINCT run_id, architecture, dataset FROM analysis_features),
        j AS (SELECT a.*, n.n_phases, count(*) OVER (PARTITION BY a.architecture, n.n_phases) AS freq
              FROM a JOIN n USING (run_id))
        SELECT run_id, architecture, dataset, n_phases FROM j
        QUALIFY row_number() OVER (PARTITION BY architecture ORDER BY freq DESC, n_phases DESC, run_id) = 1
        ORDER BY architecture LIMIT {int(max_panels)}""").fetchall()


def curves_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Per representative run: train/test loss (left, log), the spectral change rate per interval
    (right, log: solid steps) and each phase's mean rate (dashed), phase spans shaded and boundaries
    as vertical lines; x = step + 1 (log)."""
    reps = _representative_runs(con)
    ncols = min(4, max(1, len(reps)))
    nrows = max(1, math.ceil(len(reps) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    seen: set[str] = set()
    for ax, (run_id, arch, dataset, _) in zip(axes.flat, reps, strict=False):
        curve = con.execute("""SELECT step, train_loss, test_loss FROM checkpoints WHERE run_id = ?
                               ORDER BY step""", [run_id]).fetchall()
        phases = con.execute("""SELECT phase, start_step, end_step, mean_rate FROM analysis_dynamics_phases
                                WHERE run_id = ? ORDER BY phase_index""", [run_id]).fetchall()
        rates = con.execute("""SELECT step_from, step_to, rate, phase_index FROM analysis_dynamics_rates
                               WHERE run_id = ? ORDER BY step_from""", [run_id]).fetchall()
        for i, (name, start, end, _) in enumerate(phases):
            ax.axvspan(start + 1, end + 2, color=PHASE_COLORS.get(name, "#dddddd"), alpha=0.18, lw=0)
            if i > 0:
                ax.axvline(start + 1, color="black", ls=":", lw=1)
            seen.add(name)
        if curve:
            c = np.array([[s, np.nan if a is None else a, np.nan if b is None else b] for s, a, b in curve], float)
            ax.plot(c[:, 0] + 1, c[:, 1], ls="--", color="C0", lw=1.1)
            ax.plot(c[:, 0] + 1, c[:, 2], ls="-", color="C0", lw=1.3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step + 1")
        ax.set_ylabel("loss", color="C0")
        ax.tick_params(axis="y", labelsize=8, which="both")
        ax.set_title(f"{arch}\n{dataset} · {run_id[:8]}", fontsize=9)
        if rates:
            twin = ax.twinx()
            for s0, s1, v, _ in rates:
                if v is not None and v > 0:
                    twin.plot([s0 + 1, s1 + 1], [v, v], color="C3", lw=1.8)
            for p, (_, _, _, mean) in enumerate(phases):
                spans = [(s0, s1) for s0, s1, _, ph in rates if ph == p]
                if spans and mean is not None and mean > 0:
                    twin.plot([spans[0][0] + 1, spans[-1][1] + 1], [mean, mean], color="C3", ls="--", lw=1)
            twin.set_yscale("log")
            twin.set_ylabel("spectral change rate", color="C3")
            twin.tick_params(axis="y", labelsize=8, which="both")
            twin.grid(False)
    for ax in list(axes.flat)[len(reps):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color="C0", ls="-", label="test loss"),
               plt.Line2D([], [], color="C0", ls="--", label="train loss"),
               plt.Line2D([], [], color="C3", lw=1.8, label="loss-Hessian change rate per e-fold of steps"),
               plt.Line2D([], [], color="C3", ls="--", lw=1, label="phase mean rate"),
               plt.Line2D([], [], color="black", ls=":", label="phase boundary")]
    handles += [plt.Rectangle((0, 0), 1, 1, color=PHASE_COLORS[p], alpha=0.35, label=p)
                for p in (*PHASES, SINGLE_PHASE) if p in seen]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Training curves and phases (one run per architecture)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    return fig


def _phase_spectra_frame(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Complete spectra (every eigenvalue stored) of the loss Hessian and the non-zero local Hessian,
    with layer position (first / middle / last) and the snapshot's phase."""
    return con.sql("""
        WITH depth AS (SELECT run_id, max(layer_index) AS last FROM layers GROUP BY run_id)
        SELECT h.kind, p.phase,
               CASE WHEN h.layer_index = 0 THEN 'first layer'
                    WHEN h.layer_index = d.last THEN 'last layer' ELSE 'middle layers' END AS position,
               h.eigenvalues
        FROM hessian_spectra h
        JOIN depth d USING (run_id)
        JOIN analysis_dynamics_phases p ON p.run_id = h.run_id AND h.step BETWEEN p.start_step AND p.end_step
        WHERE h.kind IN ('loss', 'local') AND NOT coalesce(h.exactly_zero, false)
              AND len(h.eigenvalues) = h.n_params AND len(h.eigenvalues) > 0""").pl()


def phase_spectra_figure(con: duckdb.DuckDBPyConnection, bins: int = 41) -> plt.Figure:
    """Histograms of λ / max|λ| per spectrum, pooled (each spectrum weighted equally) by phase
    (columns) and layer position (rows), loss Hessian filled, local Hessian outlined; log y."""
    df = _phase_spectra_frame(con)
    phases = [p for p in (*PHASES, SINGLE_PHASE) if p in set(df["phase"].to_list())] if df.height else []
    positions = [p for p in ("first layer", "middle layers", "last layer")
                 if df.height and p in set(df["position"].to_list())]
    ncols, nrows = max(1, len(phases)), max(1, len(positions))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows), squeeze=False, sharex=True)
    edges = np.linspace(-1, 1, bins + 1)
    centers = 0.5 * (edges[:-1] + edges[1:])
    colors = {"loss": "C0", "local": "C1"}
    for i, pos in enumerate(positions):
        for j, ph in enumerate(phases):
            ax = axes[i, j]
            sub = df.filter((pl.col("position") == pos) & (pl.col("phase") == ph))
            for kind in ("loss", "local"):
                spectra = sub.filter(pl.col("kind") == kind)["eigenvalues"].to_list()
                hist = np.zeros(bins)
                for ev in spectra:
                    lam = np.asarray(ev, float)
                    top = np.abs(lam).max() if lam.size else 0.0
                    if not np.isfinite(lam).all() or top == 0:
                        continue
                    hist += np.histogram(lam / top, bins=edges)[0] / lam.size
                if hist.sum() == 0:
                    continue
                hist /= len(spectra)
                if kind == "loss":
                    ax.bar(centers, hist, width=edges[1] - edges[0], color=colors[kind], alpha=0.6,
                           label=f"loss Hessian ({len(spectra)} spectra)")
                else:
                    ax.step(centers, hist, where="mid", color=colors[kind], lw=1.3,
                            label=f"local Hessian ({len(spectra)} spectra)")
            ax.set_yscale("log")
            if i == 0:
                ax.set_title(ph)
            if i == nrows - 1:
                ax.set_xlabel("λ / max|λ|")
            if j == 0:
                ax.set_ylabel(f"{pos}\nshare of eigenvalues")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
    if not phases:
        axes[0, 0].text(0.5, 0.5, "no complete spectra", ha="center", va="center", transform=axes[0, 0].transAxes)
        axes[0, 0].set_xlabel("λ / max|λ|")
        axes[0, 0].set_ylabel("share of eigenvalues")
    fig.suptitle("Hessian eigenvalue distributions by training phase and layer position (001 claims 1-2)")
    fig.tight_layout()
    return fig


def phase_counts_figure(con: duckdb.DuckDBPyConnection, max_sequences: int = 6) -> plt.Figure:
    """Number of runs by number of phases, stacked by phase sequence (the most common ones)."""
    rows = con.execute("""
        SELECT n_phases, seq, count(*) AS runs FROM (
            SELECT run_id, count(*) AS n_phases, string_agg(phase, ' → ' ORDER BY phase_index) AS seq
            FROM analysis_dynamics_phases GROUP BY run_id)
        GROUP BY ALL ORDER BY runs DESC, seq""").fetchall()
    keep = [seq for _, seq, _ in rows][:max_sequences]
    fig, ax = plt.subplots(figsize=(8, 4))
    ks = list(range(1, MAX_CHANGES + 2))
    bottom = np.zeros(len(ks))
    labels = keep + (["other sequences"] if len(rows) > len(keep) else [])
    palette = sns.color_palette("colorblind", max(1, len(labels)))
    for colour, label in zip(palette, labels, strict=False):
        heights = np.array([sum(c for n, seq, c in rows if n == k and
                                (seq == label if label in keep else seq not in keep)) for k in ks], float)
        ax.bar(ks, heights, bottom=bottom, color=colour, label=label)
        bottom += heights
    ax.set_xticks(ks)
    ax.set_xlabel("number of phases")
    ax.set_ylabel("runs")
    if labels:
        ax.legend(fontsize=8, title="phase sequence", title_fontsize=8, loc="upper right")
    fig.suptitle("Phases per run (change points of the loss-Hessian spectral change rate)")
    fig.tight_layout()
    return fig



FIGURES = [
    Figure("dynamics_curves", curves_figure,
           "One run per architecture: train (dashed) and test (solid) loss, the rate at which the loss-Hessian "
           "spectra change per e-fold of training time between consecutive spectral snapshots (red steps, "
           "right axis), and the phases found by change points in that rate (shaded; dotted lines are "
           "boundaries)."),
    Figure("dynamics_phase_spectra", phase_spectra_figure,
           "Eigenvalues of complete loss-Hessian (filled) and local-Hessian (outlined; layers where it is not "
           "exactly zero) spectra, each divided by its largest |λ|, pooled by training phase (columns) and layer "
           "position (rows), each spectrum weighted equally; log y. Claims 1-2 of paper 001 predict mass piling "
           "near zero as training proceeds."),
    Figure("dynamics_phase_counts", phase_counts_figure,
           "Runs by number of phases found, stacked by the sequence of phase names (the six most common); the "
           "paper predicts initial → fast learning → fine-tuning → saturation."),
]
