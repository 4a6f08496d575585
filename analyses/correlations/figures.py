"""The correlation stage's figures: the feature x metric heatmap, r by training phase, and the pair plot."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns

from analyses.correlations.families import ALPHA, FEATURE_GROUP
from analyses.correlations.stage import PHASE_ORDER
from analyses.kit import features as feat
from analyses.kit.presentation import empty_figure
from analyses.kit.stage import Figure

#: Features drawn in the by-phase and pair-plot figures.
KEY_FEATURES = ("loss_top", "loss_effective_rank_ratio", "weight_stable_rank", "saturation_fraction", "local_std")
#: Metrics of the pair plot (primary_metric: test accuracy or test R²).
PAIR_METRICS = ("test_loss", "gap_loss", "primary_metric")
#: The pair plot's y axes span the PAIR_CLIP to 1 - PAIR_CLIP quantiles of each metric.
PAIR_CLIP = 0.01
#: Primary metric column by task in ``features.METRICS``.
PRIMARY = feat.PRIMARY_METRIC


def heatmap_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Feature x metric heatmap of r (phase 'all') per task, '*' where p_adjusted < ALPHA."""
    title = "Within-data-set Pearson r between features and quality metrics (all snapshots)"
    df = con.sql("SELECT task, feature, metric, r, significant FROM analysis_correlations "
                 "WHERE phase = 'all'").pl()
    tasks = [t for t in ("classification", "regression") if t in set(df["task"].to_list())]
    if not tasks:
        return empty_figure(title, "no correlations computed")
    order = [f.name for f in feat.FEATURES]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks) + 1.5, 0.24 * len(order) + 2.2),
                             squeeze=False)
    for i, (ax, task) in enumerate(zip(axes.flat, tasks, strict=True)):
        sub = df.filter(pl.col("task") == task).to_pandas()
        metrics = list(feat.METRICS[task])
        r = sub.pivot(index="feature", columns="metric", values="r").reindex(index=order, columns=metrics)
        sig = sub.pivot(index="feature", columns="metric", values="significant").reindex(index=order,
                                                                                         columns=metrics)
        annot = np.array([[("" if not np.isfinite(v) else f"{v:.2f}" + ("*" if s is True else ""))
                           for v, s in zip(rv, sv, strict=True)]
                          for rv, sv in zip(r.to_numpy(float), sig.to_numpy(object), strict=True)])
        sns.heatmap(r.astype(float), ax=ax, cmap="RdBu_r", center=0, vmin=-1, vmax=1, annot=annot, fmt="",
                    annot_kws={"fontsize": 6}, linewidths=0.3, linecolor="white",
                    cbar=i == len(tasks) - 1, cbar_kws={"label": "Pearson r (within data set)", "shrink": 0.5},
                    yticklabels=order if i == 0 else False)
        groups = [FEATURE_GROUP[f] for f in order]
        for j in range(1, len(order)):
            if groups[j] != groups[j - 1]:
                ax.axhline(j, color="black", lw=0.8)
        ax.set_title(task)
        ax.set_xlabel("quality metric")
        ax.set_ylabel("feature (lines separate feature groups)" if i == 0 else "")
        ax.grid(False)
        ax.set_facecolor("#e6e6e6")  # NULL r (constant feature, too few rows) shows grey
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title + f"; * = BH-adjusted p < {ALPHA}")
    fig.tight_layout()
    return fig


def by_phase_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """r (with its Fisher-z interval) of the key features vs the task's primary metric, by phase."""
    title = "Correlation of key features with the primary metric, by training phase"
    df = con.sql("SELECT task, phase, feature, metric, r, ci_low, ci_high, n FROM analysis_correlations").pl()
    tasks = [t for t in ("classification", "regression") if t in set(df["task"].to_list())]
    if not tasks:
        return empty_figure(title, "no correlations computed")
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), squeeze=False)
    colors = dict(zip(KEY_FEATURES, sns.color_palette("colorblind", len(KEY_FEATURES)), strict=True))
    for ax, task in zip(axes.flat, tasks, strict=True):
        sub = df.filter((pl.col("task") == task) & (pl.col("metric") == PRIMARY[task]))
        phases = [p for p in PHASE_ORDER if p in set(sub["phase"].to_list())]
        phases += sorted(set(sub["phase"].to_list()) - set(phases))
        xs = np.arange(len(phases))
        width = 0.8 / len(KEY_FEATURES)
        for j, f in enumerate(KEY_FEATURES):
            s = {row["phase"]: row for row in sub.filter(pl.col("feature") == f).iter_rows(named=True)}
            r = np.array([s.get(p, {}).get("r") or np.nan for p in phases], float)
            lo = np.array([s.get(p, {}).get("ci_low") or np.nan for p in phases], float)
            hi = np.array([s.get(p, {}).get("ci_high") or np.nan for p in phases], float)
            pos = xs - 0.4 + width * (j + 0.5)
            ax.errorbar(pos, r, yerr=[r - lo, hi - r], fmt="o", ms=4, capsize=2, color=colors[f], label=f)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(xs, phases, rotation=20)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("training phase ('all' = every snapshot)")
        ax.set_ylabel(f"within-data-set r with {PRIMARY[task]}")
        ax.set_title(task)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9,
               title="feature", bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title + " (bars: 95% Fisher-z interval, snapshots treated as independent)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def pairplot_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Seaborn pair plot: key features (x) against test loss, loss gap and primary metric (y)."""
    title = "Key features against quality metrics, every spectral snapshot, by architecture"
    cols = ", ".join(dict.fromkeys(KEY_FEATURES + PAIR_METRICS))
    df = con.sql(f"SELECT architecture, {cols} FROM analysis_features ORDER BY architecture, run_id, step").pl()
    if df.height == 0:
        return empty_figure(title, "no snapshots")
    pdf = df.to_pandas()
    grid = sns.pairplot(pdf, x_vars=list(KEY_FEATURES), y_vars=list(PAIR_METRICS), hue="architecture",
                        palette="colorblind", plot_kws={"s": 14, "alpha": 0.7, "linewidth": 0},
                        height=2.1, aspect=1.1)
    for row, metric in enumerate(PAIR_METRICS):
        v = pdf[metric].to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v) >= 20:  # a few diverging regression runs (R² << 0) would flatten every other point
            lo, hi = np.quantile(v, [PAIR_CLIP, 1 - PAIR_CLIP])
            pad = 0.05 * (hi - lo) if hi > lo else 1.0
            for ax in grid.axes[row]:
                ax.set_ylim(lo - pad, hi + pad)
    grid.figure.suptitle(title + f" (y axes show the {PAIR_CLIP:.0%}-{1 - PAIR_CLIP:.0%} quantile range)",
                         y=1.02)
    return grid.figure


FIGURES = [
    Figure("correlations_heatmap", heatmap_figure,
           "Pearson r between each internal feature (rows, grouped by what it measures) and each quality metric "
           "(columns), over every spectral snapshot of a task, z-scored within data set. '*' marks "
           "Benjamini-Hochberg-adjusted p < 0.05 within the task's family; snapshots of a run are not "
           "independent, so the stars are descriptive."),
    Figure("correlations_by_phase", by_phase_figure,
           "Within-data-set r of a few key features with the task's primary metric (test accuracy, test R²), over "
           "all snapshots and within each training phase of the dynamics stage, with 95% Fisher-z intervals."),
    Figure("correlations_pairplot", pairplot_figure,
           "Seaborn pair plot of five key features (layer mean on the features' scale: slog for scale-like "
           "features) against test loss, the loss gap (test - train) and the primary metric, one point per "
           "spectral snapshot, coloured by architecture. Raw values (data sets are not standardized here); each y "
           "axis spans the 1-99% quantile range of its metric, so a few diverging runs fall outside."),
]
