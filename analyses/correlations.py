"""Pearson correlations between the internal features of each spectral snapshot (weights, gradients,
activations, local/loss Hessian and Gauss-Newton summaries) and the quality metrics at that step, by
task type and by training phase, with p-values corrected for multiple testing; then run-level tests of
the paper's rank, spectral-spread and adjacent-layer claims (001 §5.5.1, §5.5.4, §5.5.7).

Control for the data set
------------------------
Data sets differ wildly in their losses and in their spectra, so a correlation pooled over data
sets mostly says which data set a snapshot came from. Every correlation here is therefore a
*within-data-set* correlation (:data:`CONTROL_FOR_DATASET`): feature and metric are z-scored within
each data set (over the rows entering that correlation), and r is the Pearson correlation of the
pooled z-scores. That equals the size-weighted mean of the per-data-set correlations,
r = Σ_g n_g r_g / Σ_g n_g (a data set where the feature or the metric is constant contributes zero).
Removing k data-set means costs degrees of freedom: the p-value uses t = r √(ν / (1 - r²)) with
ν = n - k - 1, the Fisher-z interval tanh(atanh r ± 1.96 / √(n - k - 2)) (a partial correlation
given k - 1 data-set indicators). Data sets with fewer than 2 rows are dropped.

``analysis_correlations``
    one row per (task, phase, feature, metric): ``phase`` is ``all`` (every spectral snapshot) or a
    phase of ``analysis_dynamics_phases`` (a snapshot at ``step`` is in the phase of its run with
    start_step <= step <= end_step); features are :data:`analyses.features.FEATURES` on the
    ``analysis_features`` scale (layer mean of the transform), metrics ``features.METRICS[task]``.
    ``n`` snapshots from ``n_runs`` runs, ``r`` with its 95% Fisher-z interval ``ci_low``/``ci_high``,
    ``p_value``, and ``p_adjusted``: Benjamini-Hochberg (statsmodels ``multipletests``, ``fdr_bh``)
    within each task x phase family (every feature x metric pair of that family);
    ``significant`` = p_adjusted < :data:`ALPHA`. r is NULL when n - k - 2 < 1 or a variable is
    constant. Snapshots of one run are not independent (up to ~10 per run), so these p-values and
    intervals are descriptive: they treat snapshots as independent draws. The verdicts below use
    one row per run.

``analysis_correlations_verdicts``
    one row per run: its last spectral snapshot (diverged runs are already excluded by the features
    stage). r is the within-data-set correlation above over runs, pooled over both tasks; its 95%
    interval is a percentile bootstrap over runs (:data:`analyses.verdicts.N_BOOTSTRAP` resamples of
    whole runs, the z-scoring redone in each), its p-value the t-test above with ν = n - k - 1. The
    detail gives r per task and r over all snapshots (descriptive: it mixes training time, so early
    snapshots, poor in quality and in most features, can make a correlation the final states lack).
    Claims (effect r, null 0, negligible band |r| < :data:`NEGLIGIBLE_R`):

    - 001 §5.5.1, lower weight rank goes with overfitting: r(weight_rank_ratio, gap_loss) < 0, with
      the numerical rank over min(d, q); and, because the numerical rank is often full everywhere, a
      second row with the stable-rank ratio (layer mean of ||W||_F² / ||W||_2² / min(d, q), from
      ``analysis_features_layer``).
    - 001 §5.5.1, lower rank of the local Hessian goes with overfitting:
      r(local_effective_rank_ratio, gap_loss) < 0. The paper speaks of the layer's *local* Hessian,
      so that is the one tested; it is NULL for ReLU layers (the local Hessian is exactly zero), so
      only runs with a non-zero local Hessian count.
    - 001 §5.5.4, a small spread of the Hessian spectrum goes with worse generalization:
      r(loss_relative_std, gap_loss) < 0. The relative std (std over mean |λ|) of the loss-Hessian
      blocks is used because the absolute std mostly tracks the overall curvature scale; the detail
      gives r for ``loss_std`` too.
    - 001 §5.5.7, adjacent layers are alike in healthy networks: r(adjacent_similarity,
      primary_metric) > 0 (primary metric test accuracy or test R², made comparable across tasks by
      the within-data-set z-scores).

gap_loss = test_loss - train_loss at the checkpoint (pipeline/extract/checkpoint.py).
"""

from __future__ import annotations

import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analyses import features as feat
from analyses.presentation import empty_figure
from analyses.verdicts import CONFIDENCE, N_BOOTSTRAP, Verdict, write_verdicts

READS = ("analysis_features", "analysis_features_layer", "analysis_dynamics_phases")
WRITES = ("analysis_correlations", "analysis_correlations_verdicts")
TITLE = "Correlations between internal features and quality"

#: Family-wise level for ``significant`` (after Benjamini-Hochberg).
ALPHA = 0.05
#: z-score feature and metric within each data set before correlating (see module doc).
CONTROL_FOR_DATASET = True
#: |r| below this is a negligible correlation (verdict band).
NEGLIGIBLE_R = 0.1
#: Fewest runs for a verdict interval.
MIN_RUNS = 6
#: Order of phases in tables and figures.
PHASE_ORDER = ("all", "initial", "fast learning", "fine-tuning", "saturation", "single phase")
#: Features drawn in the by-phase and pair-plot figures.
KEY_FEATURES = ("loss_top", "loss_effective_rank_ratio", "weight_stable_rank", "saturation_fraction", "local_std")
#: Metrics of the pair plot (primary_metric: test accuracy or test R²).
PAIR_METRICS = ("test_loss", "gap_loss", "primary_metric")
#: The pair plot's y axes span the PAIR_CLIP to 1 - PAIR_CLIP quantiles of each metric.
PAIR_CLIP = 0.01
#: Primary metric column by task in ``features.METRICS``.
PRIMARY = feat.PRIMARY_METRIC
_SEED = 0

_GROUP = {f.name: f.group for f in feat.FEATURES}
_COLUMNS = {"task": pl.Utf8, "phase": pl.Utf8, "feature": pl.Utf8, "feature_group": pl.Utf8, "metric": pl.Utf8,
            "n": pl.Int64, "n_runs": pl.Int64, "r": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
            "p_value": pl.Float64, "p_adjusted": pl.Float64, "significant": pl.Boolean}


# --- pure statistics ------------------------------------------------------------------------------

def _within_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, int, int]:
    """r of within-group z-scores over rows of groups with >= 2 rows: (r, n, k)."""
    _, inv = np.unique(groups, return_inverse=True)
    keep = np.bincount(inv)[inv] >= 2
    x, y, g = x[keep], y[keep], inv[keep]
    n, k = int(len(x)), int(len(np.unique(g)))
    if n == 0:
        return math.nan, 0, 0
    zx, zy = feat.standardize_within(x, g), feat.standardize_within(y, g)
    sxx, syy = float(zx @ zx), float(zy @ zy)
    if sxx <= 0 or syy <= 0:
        return math.nan, n, k
    return float(np.clip(zx @ zy / math.sqrt(sxx * syy), -1.0, 1.0)), n, k


def within_group_pearson(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
                         ) -> tuple[float, float, float, float, int, int]:
    """Pearson r of x and y (shape (n,)) within groups, with its 95% interval and p-value.

    Finite pairs only; both variables z-scored within each group of >= 2 rows (``groups=None``: one
    group, the ordinary Pearson r). With n rows in k groups: p from t = r √(ν/(1-r²)), ν = n - k - 1;
    interval tanh(atanh(r) ± z_{0.975} / √(n - k - 2)). Returns ``(r, lo, hi, p, n, k)``; NaNs where
    n - k - 2 < 1 or a variable is constant within every group.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    g = np.zeros(len(x), int) if groups is None else np.asarray(groups)
    ok = np.isfinite(x) & np.isfinite(y)
    r, n, k = _within_r(x[ok], y[ok], g[ok])
    dof = n - k - 1
    if not math.isfinite(r) or dof - 1 < 1:
        return math.nan, math.nan, math.nan, math.nan, n, k
    if abs(r) >= 1.0:
        return r, r, r, 0.0, n, k
    t = r * math.sqrt(dof / (1 - r * r))
    p = float(2 * stats.t.sf(abs(t), dof))
    half = stats.norm.ppf(0.5 + CONFIDENCE / 2) / math.sqrt(dof - 1)
    z = math.atanh(r)
    return r, math.tanh(z - half), math.tanh(z + half), p, n, k


def bootstrap_within_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int = N_BOOTSTRAP,
                       seed: int = _SEED) -> tuple[float, float]:
    """Percentile 95% interval of the within-group r by resampling rows (runs) with replacement.

    x, y, groups: shape (n,), one row per independent unit; the within-group z-scoring is redone in
    every resample. NaNs when fewer than :data:`MIN_RUNS` finite rows or fewer than half of the
    resamples give a finite r.
    """
    x, y, g = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[ok], y[ok], g[ok]
    n = len(x)
    if n < MIN_RUNS:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, size=n)
        r, _, _ = _within_r(x[pick], y[pick], g[pick])
        if math.isfinite(r):
            draws.append(r)
    if len(draws) < n_boot // 2:
        return math.nan, math.nan
    a = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return float(lo), float(hi)


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels ``multipletests(method='fdr_bh')``) over the
    finite entries of ``p`` (shape (m,)); NaN stays NaN."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="fdr_bh")[1]
    return out


def correlation_table(frame: pl.DataFrame, feature_names: list[str], metrics: list[str], group_col: str | None
                      ) -> list[dict]:
    """Every feature x metric within-group correlation of ``frame`` (snapshot rows with ``run_id``)."""
    groups = frame[group_col].to_numpy() if group_col else np.zeros(frame.height, int)
    runs = frame["run_id"].to_numpy()
    rows = []
    for f in feature_names:
        x = frame[f].cast(pl.Float64).fill_null(math.nan).to_numpy()
        for m in metrics:
            y = frame[m].cast(pl.Float64).fill_null(math.nan).to_numpy()
            r, lo, hi, p, n, _ = within_group_pearson(x, y, groups)
            ok = np.isfinite(x) & np.isfinite(y)
            rows.append({"feature": f, "feature_group": _GROUP.get(f, ""), "metric": m, "n": n,
                         "n_runs": int(len(np.unique(runs[ok]))), "r": r, "ci_low": lo, "ci_high": hi,
                         "p_value": p})
    p_adj = bh_adjust(np.array([row["p_value"] for row in rows], float))
    for row, pa in zip(rows, p_adj, strict=True):
        row["p_adjusted"] = float(pa)
        row["significant"] = bool(np.isfinite(pa) and pa < ALPHA)
    return rows


# --- the stage ------------------------------------------------------------------------------------

def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _snapshots(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """analysis_features rows with their phase (NULL when no phase table or no matching phase)."""
    if "analysis_dynamics_phases" in _tables(con):
        return con.sql("""
            SELECT f.*, p.phase FROM analysis_features f
            LEFT JOIN analysis_dynamics_phases p
                 ON p.run_id = f.run_id AND f.step BETWEEN p.start_step AND p.end_step
            QUALIFY row_number() OVER (PARTITION BY f.run_id, f.step ORDER BY p.phase_index) = 1
            ORDER BY f.run_id, f.step""").pl()
    return con.sql("SELECT *, NULL::VARCHAR AS phase FROM analysis_features ORDER BY run_id, step").pl()


def _phases(frame: pl.DataFrame) -> list[str]:
    present = [p for p in frame["phase"].unique().to_list() if p is not None]
    rank = {p: i for i, p in enumerate(PHASE_ORDER)}
    return ["all"] + sorted(present, key=lambda p: (rank.get(p, len(rank)), p))


def _with_stable_rank(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every analysis_features snapshot with the layer-mean stable-rank ratio ||W||_F²/||W||_2²/min(d, q)."""
    return con.sql("""
        WITH sr AS (
            SELECT run_id, step,
                   avg(weight_stable_rank / nullif(least(in_features, out_features), 0)) AS stable_rank_ratio
            FROM analysis_features_layer GROUP BY run_id, step
        )
        SELECT f.*, sr.stable_rank_ratio FROM analysis_features f LEFT JOIN sr USING (run_id, step)
        ORDER BY run_id, step""").pl()


def _last_per_run(snaps: pl.DataFrame) -> pl.DataFrame:
    """One row per run: its last spectral snapshot."""
    return snaps.sort(["run_id", "step"]).group_by("run_id", maintain_order=True).last()


#: (claim_id, source, claim, feature column, metric, predicted, extra detail)
_CLAIMS = (
    ("correlations.s5_5_1_weight_rank", "001 §5.5.1",
     "Lower numerical rank of the weight matrices goes with stronger overfitting",
     "weight_rank_ratio", "gap_loss", "negative"),
    ("correlations.s5_5_1_weight_stable_rank", "001 §5.5.1",
     "Lower (stable) rank of the weight matrices goes with stronger overfitting",
     "stable_rank_ratio", "gap_loss", "negative"),
    ("correlations.s5_5_1_local_hessian_rank", "001 §5.5.1",
     "Lower effective rank of the local Hessian goes with stronger overfitting",
     "local_effective_rank_ratio", "gap_loss", "negative"),
    ("correlations.s5_5_4_hessian_std", "001 §5.5.4",
     "A small standard deviation of the Hessian spectrum goes with worse generalization",
     "loss_std", "gap_loss", "negative"),
    ("correlations.s5_5_4_hessian_relative_std", "001 §5.5.4",
     "A small spread of the Hessian spectrum (std over mean |eigenvalue|) goes with worse generalization",
     "loss_relative_std", "gap_loss", "negative"),
    ("correlations.s5_5_7_adjacent_similarity", "001 §5.5.7",
     "Adjacent layers' weights are alike in healthy networks (similarity goes with quality)",
     "adjacent_similarity", "primary_metric", "positive"),
)


def _verdicts(snaps: pl.DataFrame) -> list[Verdict]:
    out = []
    runs = _last_per_run(snaps)
    groups = runs["dataset"].to_numpy() if CONTROL_FOR_DATASET else np.zeros(runs.height, int)
    snap_groups = snaps["dataset"].to_numpy() if CONTROL_FOR_DATASET else np.zeros(snaps.height, int)

    def col(name: str, frame: pl.DataFrame = runs) -> np.ndarray:
        return frame[name].cast(pl.Float64).fill_null(math.nan).to_numpy()

    for claim_id, source, claim, feature, metric, predicted in _CLAIMS:
        x, y = col(feature), col(metric)
        r, _, _, p, n, k = within_group_pearson(x, y, groups)
        lo, hi = bootstrap_within_r(x, y, groups) if math.isfinite(r) else (math.nan, math.nan)
        ok = np.isfinite(x) & np.isfinite(y)
        parts = [f"{n} runs in {k} data sets (last spectral snapshot; data sets with < 2 runs dropped)"]
        if ok.sum() and np.ptp(x[ok]) == 0:
            parts.append(f"{feature} is constant ({x[ok][0]:.3g}) in every run, so r is undefined")
        for task in ("classification", "regression"):
            sel = ok & (runs["task"].to_numpy() == task)
            rt, *_ , nt, _ = within_group_pearson(x[sel], y[sel], groups[sel])
            parts.append(f"{task}: r = {rt:.3f} (n = {nt})" if math.isfinite(rt) else f"{task}: r n/a (n = {nt})")
        rs, *_, ns, _ = within_group_pearson(col(feature, snaps), col(metric, snaps), snap_groups)
        parts.append(f"over all {ns} snapshots (descriptive, mixes training time): r = {rs:.3f}"
                     if math.isfinite(rs) else "over all snapshots: r n/a")
        control = "z-scored within data set, " if CONTROL_FOR_DATASET else ""
        out.append(Verdict(
            claim_id=claim_id, source=source, claim=claim,
            test=(f"Pearson r of {feature} and {metric} over runs (last spectral snapshot), both {control}"
                  "pooled over tasks; 95% CI by bootstrap over runs"),
            effect_name=f"r({feature}, {metric})", predicted=predicted, effect=r, ci_low=lo, ci_high=hi,
            n=n, n_unit="runs", p_value=p, null_value=0.0, negligible=NEGLIGIBLE_R, detail="; ".join(parts)))
    return out


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_correlations`` and ``analysis_correlations_verdicts``."""
    snaps = _snapshots(con)
    names = [f.name for f in feat.FEATURES]
    group_col = "dataset" if CONTROL_FOR_DATASET else None
    rows = []
    for task in sorted(snaps["task"].unique().to_list()):
        metrics = list(feat.METRICS.get(task, ()))
        sub = snaps.filter(pl.col("task") == task)
        for phase in _phases(sub):
            part = sub if phase == "all" else sub.filter(pl.col("phase") == phase)
            rows += [{"task": task, "phase": phase, **row} for row in correlation_table(part, names, metrics,
                                                                                       group_col)]
    corr_frame = pl.DataFrame(rows, schema=_COLUMNS).with_columns(  # noqa: F841
        pl.col(pl.Float64).fill_nan(None))
    con.execute("CREATE OR REPLACE TABLE analysis_correlations AS SELECT * FROM corr_frame")
    write_verdicts(con, "correlations", _verdicts(_with_stable_rank(con)))


# --- figures --------------------------------------------------------------------------------------

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
        groups = [_GROUP[f] for f in order]
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


FIGURES = {
    "correlations_heatmap": heatmap_figure,
    "correlations_by_phase": by_phase_figure,
    "correlations_pairplot": pairplot_figure,
}
CAPTIONS = {
    "correlations_heatmap": (
        "Pearson r between each internal feature (rows, grouped by what it measures) and each quality metric "
        "(columns), over every spectral snapshot of a task, z-scored within data set. '*' marks "
        "Benjamini-Hochberg-adjusted p < 0.05 within the task's family; snapshots of a run are not "
        "independent, so the stars are descriptive."),
    "correlations_by_phase": (
        "Within-data-set r of a few key features with the task's primary metric (test accuracy, test R²), over "
        "all snapshots and within each training phase of the dynamics stage, with 95% Fisher-z intervals."),
    "correlations_pairplot": (
        "Seaborn pair plot of five key features (layer mean on the features' scale: slog for scale-like "
        "features) against test loss, the loss gap (test - train) and the primary metric, one point per "
        "spectral snapshot, coloured by architecture. Raw values (data sets are not standardized here); each y axis "
        "spans the 1-99% quantile range of its metric, so a few diverging runs fall outside."),
}


# --- report ---------------------------------------------------------------------------------------

def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences: how many correlations survive correction, and the strongest ones."""
    paragraphs = []
    for task, n_all, n_fin, n_sig in con.execute("""
            SELECT task, count(*), count(r), count(*) FILTER (WHERE significant)
            FROM analysis_correlations WHERE phase = 'all' GROUP BY task ORDER BY task""").fetchall():
        top = con.execute("""
            SELECT feature, metric, r, p_adjusted FROM analysis_correlations
            WHERE phase = 'all' AND task = ? AND r IS NOT NULL ORDER BY abs(r) DESC LIMIT 3""", [task]).fetchall()
        strongest = "; ".join(f"{f} with {m} (r = {r:.2f}, adjusted p = {p:.2g})" for f, m, r, p in top)
        paragraphs.append(
            f"{task.capitalize()}, all snapshots: {n_fin} of {n_all} feature-metric correlations could be "
            f"computed and {n_sig} survive Benjamini-Hochberg correction at {ALPHA}"
            + (f". Strongest: {strongest}." if top else "."))
    phases = con.execute("""
        SELECT task, phase, count(*) FILTER (WHERE significant), count(r) FROM analysis_correlations
        WHERE phase <> 'all' GROUP BY ALL ORDER BY task, phase""").fetchall()
    if phases:
        paragraphs.append("By phase, significant / computed: " + "; ".join(
            f"{t} {p}: {s} / {n}" for t, p, s, n in phases) + ".")
    tables = [
        {"caption": "The 40 strongest correlations over all snapshots (within-data-set r, BH-adjusted p)",
         "sql": """SELECT task, feature, feature_group, metric, n, n_runs, round(r, 3) AS r,
                          round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high, p_adjusted, significant
                   FROM analysis_correlations WHERE phase = 'all' AND r IS NOT NULL
                   ORDER BY abs(r) DESC LIMIT 40"""},
        {"caption": "Significant correlations per task and phase",
         "sql": """SELECT task, phase, count(r) AS computed, count(*) FILTER (WHERE significant) AS significant,
                          round(max(abs(r)), 3) AS max_abs_r, max(n) AS max_n
                   FROM analysis_correlations GROUP BY ALL ORDER BY task, phase"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
