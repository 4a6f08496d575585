"""The topology stage's figures, drawn from its tables alone (and the data sets' baselines beside the test
metric)."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator, ScalarFormatter

from analyses.kit.features import POSITIONS
from analyses.kit.presentation import empty_figure
from analyses.kit.stage import Figure
from analyses.topology.correlations import MIN_SWEEP_FRACTIONS
from analyses.topology.runs import LOG_METRICS, METRICS
from analyses.topology.verdicts import PAPER_METRICS

_AXIS_LABEL = {"normalized_entropy": "normalized entropy H / ln m", "mean_lifetime": "mean lifetime L / m",
               "mean_lifetime_scaled": "mean lifetime / mean neuron norm", "entropy": "entropy H (nats)",
               "normalized_entropy_log_total": "H / ln L (ITMO)"}
#: Metrics drawn in the curves: the paper's two, which the verdicts test (mean lifetime on a log axis).
CURVE_METRICS = PAPER_METRICS


def plain_log_ticks(ax: plt.Axes) -> None:
    """On a log axis spanning less than a decade, a few plain tick labels (1.7, not 1.7 x 10^0): the
    scientific minor labels are wide enough to run into the axis label."""
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 10:
        ax.yaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        plain = ScalarFormatter(useOffset=False)
        plain.set_scientific(False)
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_locator(NullLocator())


def _bundle_labels(frame: pl.DataFrame) -> dict[str, str]:
    """A short tag per sweep (a, b, ...) and what it stands for: the data set, size and seed its runs share
    (the sweep id added where those do not tell two sweeps apart)."""
    sweeps = (frame.group_by("sweep").agg(pl.col("dataset").first(), pl.col("size").first(), pl.col("seed").first())
              .sort("dataset", "size", "seed", "sweep"))
    names = [f"{d}, {s}, seed {seed}" for d, s, seed in sweeps.select("dataset", "size", "seed").iter_rows()]
    if len(set(names)) < len(names):
        names = [f"{n} ({sw})" for n, sw in zip(names, sweeps["sweep"], strict=True)]
    return dict(zip(sweeps["sweep"], names, strict=True))


def _tag_bundles(ax: plt.Axes, starts: list[tuple[float, float, str]]) -> None:
    """Write each sweep's tag left of the first epoch, at the height where its lines start (every run of a
    sweep starts from the same initialization), spread apart so that no two tags overlap."""
    ax.autoscale_view()
    to_axes = ax.transData + ax.transAxes.inverted()
    placed = sorted((float(to_axes.transform((0.0, y))[1]), x, y, tag) for x, y, tag in starts)
    gap, ys = 0.085, [p[0] for p in placed]
    for k in range(1, len(ys)):  # push up, then back down from the top, keeping the order
        ys[k] = max(ys[k], ys[k - 1] + gap)
    ys[-1] = min(ys[-1], 0.97) if ys else 0.97
    for k in range(len(ys) - 2, -1, -1):
        ys[k] = min(ys[k], ys[k + 1] - gap)
    x0, x1 = ax.get_xlim()
    ax.set_xlim(x0 - 0.16 * (x1 - x0), x1)
    for (_, x, y, tag), yt in zip(placed, ys, strict=True):
        ax.annotate(tag, xy=(x, y), xycoords="data", xytext=(0.015, yt), textcoords="axes fraction",
                    fontsize=7, fontweight="bold", va="center", ha="left",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.45", "shrinkA": 1, "shrinkB": 1})


def trajectories_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Metric vs epoch per layer position, one line per run of the train-fraction sweeps, coloured by
    train fraction (log scale), each sweep's bundle tagged with a letter that a key below spells out."""
    title = "Topology of the weights over training, per layer, coloured by training-set fraction"
    frame = con.sql(f"""
        WITH sweeps AS (SELECT sweep FROM analysis_topology_snapshots GROUP BY sweep
                        HAVING count(DISTINCT train_fraction) >= {MIN_SWEEP_FRACTIONS})
        SELECT run_id, layer_index, position, epoch, train_fraction, sweep, dataset, size, seed,
               {", ".join(CURVE_METRICS)}
        FROM analysis_topology_snapshots WHERE sweep IN (SELECT sweep FROM sweeps)
        ORDER BY run_id, layer_index, epoch""").pl()
    if frame.height == 0:
        return empty_figure(title, f"no train-fraction sweep (runs differing only in train_fraction, "
                                   f">= {MIN_SWEEP_FRACTIONS} fractions)")
    positions = [p for p in POSITIONS if p in set(frame["position"].to_list())]
    fracs = frame["train_fraction"].to_numpy()
    norm = LogNorm(vmin=float(fracs.min()), vmax=max(float(fracs.max()), float(fracs.min()) * 1.01))
    cmap = plt.get_cmap("viridis")
    names = _bundle_labels(frame)
    tags = {sweep: chr(ord("a") + k) if k < 26 else str(k) for k, sweep in enumerate(names)}
    fig, axes = plt.subplots(len(CURVE_METRICS), len(positions),
                             figsize=(4.4 * len(positions) + 1.2, 3.4 * len(CURVE_METRICS) + 0.8), squeeze=False)
    for j, position in enumerate(positions):
        sub = frame.filter(pl.col("position") == position)
        for i, metric in enumerate(CURVE_METRICS):
            ax = axes[i, j]
            starts: dict[str, list[tuple[float, float]]] = {}
            for (_, _), g in sub.group_by(["run_id", "layer_index"], maintain_order=True):
                x, y = g["epoch"].to_numpy(), g[metric].cast(pl.Float64).to_numpy()
                ok = np.isfinite(y)
                if not ok.any():
                    continue
                ax.plot(x[ok], y[ok], lw=1, alpha=0.75, color=cmap(norm(g["train_fraction"][0])))
                starts.setdefault(g["sweep"][0], []).append((float(x[ok][0]), float(y[ok][0])))
            if metric in LOG_METRICS:
                ax.set_yscale("log")
            if starts:
                _tag_bundles(ax, [(min(p[0] for p in v), float(np.median([p[1] for p in v])), tags[s])
                                  for s, v in starts.items()])
            if metric in LOG_METRICS:
                plain_log_ticks(ax)
            ax.set_title(f"{position} layer" if i == 0 else "", fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel(_AXIS_LABEL[metric] if j == 0 else "")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.suptitle(title)
    key = [Line2D([], [], ls="none", label=f"{tags[s]}: {n}") for s, n in names.items()]
    rows = -(-len(key) // 4)
    bottom = min(0.3, (0.32 + 0.2 * rows) / fig.get_figheight())
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.colorbar(sm, ax=axes.ravel().tolist(), label="train fraction (log scale)", shrink=0.85, pad=0.02)
    fig.legend(handles=key, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8, handlelength=0,
               handletextpad=0, columnspacing=2.0, frameon=False,
               title="the train-fraction sweeps (tags at each sweep's first snapshot; one line per train fraction)",
               title_fontsize=8)
    return fig


def train_fraction_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Final metric and test metric vs train fraction per layer position, one line per (data set, size)."""
    title = "Topology of the weights at the end of training vs training-set fraction"
    frame = con.sql("SELECT * FROM analysis_topology_train_fraction").pl()
    if frame.height == 0:
        return empty_figure(title, "no train-fraction sweep in this corpus")
    positions = [p for p in POSITIONS if p in set(frame["position"].to_list())]
    rows = [*CURVE_METRICS, "test_metric"]
    # one colour per data set, one line style per model size: distinguishable at any count
    colour = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(sorted(set(frame["dataset"].to_list())))}
    baselines = dict(con.execute("SELECT name, baseline_metric FROM datasets WHERE baseline_metric IS NOT NULL")
                     .fetchall())
    fig, axes = plt.subplots(len(rows), len(positions), figsize=(4.2 * len(positions), 3.2 * len(rows)),
                             squeeze=False)
    for j, position in enumerate(positions):
        for i, what in enumerate(rows):
            ax = axes[i, j]
            metric = CURVE_METRICS[0] if what == "test_metric" else what
            sub = frame.filter((pl.col("position") == position) & (pl.col("metric") == metric))
            for (dataset, size), g in sub.group_by(["dataset", "size"], maintain_order=True):
                g = g.sort("train_fraction")
                y = g["test_metric_mean" if what == "test_metric" else "final_mean"].cast(pl.Float64).to_numpy()
                ax.plot(g["train_fraction"].to_numpy(), y, marker="o" if size == "small" else "s", ms=3, lw=1.2,
                        ls="-" if size == "small" else "--", color=colour[dataset], label=f"{dataset} ({size})")
            if what == "test_metric":  # each data set's baseline: the trivial predictor's test score
                for dataset in sorted(set(sub["dataset"].to_list()) & set(baselines)):
                    ax.axhline(baselines[dataset], color=colour[dataset], ls=":", lw=1.0)
            ax.set_xscale("log")
            if what in LOG_METRICS:
                ax.set_yscale("log")
                plain_log_ticks(ax)
            ax.set_xlabel("train fraction")
            ax.set_ylabel("test metric (accuracy or R2)" if what == "test_metric" else _AXIS_LABEL[metric])
            if i == 0:
                ax.set_title(f"{position} layer", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(0.85, 0.5), title="data set (size)")
    return fig


def correlations_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Forest plot: r with accuracy, partial r beyond variance and norm, and r with ln variance, with
    95% intervals, per metric and layer position."""
    title = "Does topology track test accuracy beyond weight variance? (across runs, within data set and architecture)"
    frame = con.sql("""
        SELECT * FROM analysis_topology_correlations
        WHERE metric IN ('normalized_entropy', 'mean_lifetime', 'mean_lifetime_scaled')
          AND ((analysis = 'accuracy_across_runs' AND method = 'pearson')
               OR analysis IN ('accuracy_beyond_variance', 'metric_vs_ln_variance'))
          AND estimate IS NOT NULL""").pl()
    if frame.height == 0:
        return empty_figure(title, "too few classification runs for a correlation across runs")
    keys = [(m, p) for m in METRICS for p in POSITIONS
            if frame.filter((pl.col("metric") == m) & (pl.col("position") == p)).height]
    kinds = [("accuracy_across_runs", "r with accuracy", "C0"),
             ("accuracy_beyond_variance", "partial r with accuracy | ln var, ln norm", "C3"),
             ("metric_vs_ln_variance", "r with ln weight variance", "C7")]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(keys) + 1.6))
    labelled: set[str] = set()
    for k, (analysis, label, color) in enumerate(kinds):
        for y, (metric, position) in enumerate(keys):
            hit = frame.filter((pl.col("metric") == metric) & (pl.col("position") == position)
                               & (pl.col("analysis") == analysis))
            if not hit.height:
                continue
            r = hit.row(0, named=True)
            yy = y + (k - 1) * 0.22
            lo = r["ci_low"] if r["ci_low"] is not None else r["estimate"]
            hi = r["ci_high"] if r["ci_high"] is not None else r["estimate"]
            ax.errorbar(r["estimate"], yy, xerr=[[r["estimate"] - lo], [hi - r["estimate"]]], fmt="o", ms=4,
                        color=color, capsize=2, label=None if label in labelled else label)
            labelled.add(label)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(keys)), [f"{m} ({p})" for m, p in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("correlation (95% bootstrap interval over runs)")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=3)
    return fig


FIGURES = [
    Figure("topology_trajectories", trajectories_figure,
           "Normalized persistent entropy of H0 (top) and mean bar lifetime (bottom, log axis) of each layer's "
           "neuron weight cloud at every stored snapshot, for the runs of the train-fraction sweeps; colour = "
           "fraction of the training split used (log scale). A sweep's runs share their initialization, so its "
           "lines start together: the letter at each start names the sweep (data set, size, seed) in the key "
           "below."),
    Figure("topology_train_fraction", train_fraction_figure,
           "The same metrics at the last snapshot, and the test metric, against the train fraction; mean over "
           "seeds per data set (colour) and model size (solid: small, dashed: medium). Beside the test metric, "
           "the dotted line in each data set's colour is its baseline, the trivial predictor's score on the same "
           "test split (majority-class accuracy, training-mean R²)."),
    Figure("topology_correlations", correlations_figure,
           "Across classification runs (one value per run, z-scored within (data set, architecture) groups): "
           "Pearson r of the final metric with test accuracy (blue), the partial r after controlling for ln weight "
           "variance and ln weight norm (red: what topology adds), and the metric's r with ln weight variance "
           "(grey: how much of it is variance). Bars are 95% bootstrap intervals over runs."),
]
