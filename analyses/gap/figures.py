"""The gap stage's figures: out-of-fold predictions against the actual gap, and every regression
row's cross-validated R^2 beside the paper's."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.ticker import NullLocator

from analyses.gap.predictors import MAIN, PAPER_N_MODELS, PAPER_R2
from analyses.kit import interactive as bk
from analyses.kit.presentation import empty_figure, fmt_number
from analyses.kit.stage import Figure

_PREDICTED_TITLE = "Generalization gap: cross-validated prediction from margins vs actual"
#: (stage, fit stage, sample, panel title) of the two prediction panels.
_PREDICTED_PANELS = [("late", "late", "all", "last snapshot (fit and predict late)"),
                     ("middle", "late", "all_stages", "middle snapshot, predicted by the late fit")]
_GAP_AXES = ("actual gap (train accuracy - test accuracy)", "predicted gap (out of fold)")


def _predictions(con: duckdb.DuckDBPyConnection) -> dict[tuple, pl.DataFrame]:
    """Each panel's out-of-fold predictions with the main specification's R^2_cv and counts."""
    return {p[:3]: con.sql(f"""SELECT p.*, r.r2_cv, r.n_models, r.n_datasets FROM analysis_gap_predictions p
                               JOIN analysis_gap_regression r ON r.spec = '{MAIN}' AND r.stage = p.stage
                                AND r.fit_stage = p.fit_stage AND r.target = p.target AND r.sample = p.sample
                                AND r.cv_scheme = 'grouped_by_dataset'
                               WHERE p.stage = '{p[0]}' AND p.fit_stage = '{p[1]}' AND p.target = 'gap'
                                 AND p.sample = '{p[2]}' AND p.predicted_cv IS NOT NULL
                               ORDER BY p.dataset, p.run_id""").pl() for p in _PREDICTED_PANELS}


def _panel_title(label: str, f: pl.DataFrame) -> str:
    return (f"{label}: R^2_cv = {fmt_number(f['r2_cv'][0])}, {f['n_models'][0]} models, "
            f"{f['n_datasets'][0]} data sets")


def predicted_vs_actual_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Out-of-fold predicted vs actual gap, at the end of training and for the late-fitted model on
    the middle snapshots; colour = data set."""
    title = _PREDICTED_TITLE
    panels = _PREDICTED_PANELS
    frames = _predictions(con)
    if all(f.height == 0 for f in frames.values()):
        return empty_figure(title, "no model has out-of-fold predictions (too few models or data sets)")
    datasets = sorted({d for f in frames.values() for d in f["dataset"].to_list()})
    colors = {d: plt.cm.tab20(i % 20) for i, d in enumerate(datasets)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4))
    for ax, (stage, fit, sample, label) in zip(axes, panels, strict=True):
        f = frames[(stage, fit, sample)]
        if f.height == 0:
            ax.text(0.5, 0.5, "no predictions", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(label)
            continue
        for d in datasets:
            g = f.filter(pl.col("dataset") == d)
            if g.height:
                ax.scatter(g["gap"], g["predicted_cv"], s=14, alpha=0.75, color=colors[d], label=d)
        lo = float(min(f["gap"].min(), f["predicted_cv"].min()))
        hi = float(max(f["gap"].max(), f["predicted_cv"].max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="y = x")
        ax.set_xlabel(_GAP_AXES[0])
        ax.set_ylabel(_GAP_AXES[1])
        ax.set_title(_panel_title(label, f).replace(": ", "\n", 1), fontsize=10)
    axes[0].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def predicted_vs_actual_interactive(con: duckdb.DuckDBPyConnection) -> bk.InteractiveFigure | None:
    """The two prediction panels to explore: hover a model for its run, data set, gap and prediction.
    None without any out-of-fold prediction."""
    frames = _predictions(con)
    if all(f.height == 0 for f in frames.values()):
        return None
    fields = (("run", "run_id"), ("data set", "dataset"), ("actual gap", "gap", "{0.000}"),
              ("predicted", "predicted_cv", "{0.000}"))
    datasets = sorted({d for f in frames.values() for d in f["dataset"].to_list()})
    panels = []
    for stage, fit, sample, label in _PREDICTED_PANELS:  # a panel without predictions is left out
        f = frames[(stage, fit, sample)]
        if f.height == 0:
            continue
        p = bk.panel(_panel_title(label, f), *_GAP_AXES)
        lo = float(min(f["gap"].min(), f["predicted_cv"].min()))
        hi = float(max(f["gap"].max(), f["predicted_cv"].max()))
        p.line([lo, hi], [lo, hi], color="black", line_dash="dashed", line_width=1)
        bk.categorical_scatter(p, f, "gap", "predicted_cv", "dataset", fields, factors=datasets)
        panels.append(p)
    return bk.InteractiveFigure(_PREDICTED_TITLE, bk.side_by_side(*panels))


def fmt_r2(x: float) -> str:
    """Two decimals in [-100, 100], whole numbers beyond (a value column of the R^2 figure)."""
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"


def r2_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Cross-validated R^2 with its bootstrap interval per specification, stage and transfer; below -1 on a
    logarithmic stretch of the axis, each value and interval also written out in a column on the right."""
    title = "Cross-validated R^2 of gap predictors (folds grouped by data set)"
    rows = con.sql("""SELECT spec || CASE WHEN cv_scheme = 'grouped_by_dataset' THEN '' ELSE ' (random folds)' END,
                             stage, fit_stage, target, sample, r2_cv, r2_cv_low, r2_cv_high, n_models
                      FROM analysis_gap_regression WHERE r2_cv IS NOT NULL""").fetchall()
    if not rows:
        return empty_figure(title, "no specification could be cross-validated")

    def label(spec, stage, fit, target, sample):
        if sample == "all":
            return spec
        what = f"{spec} @ {stage}" + (f" (fit @ {fit})" if fit != stage else "")
        return what + (" -> final gap" if target == "final_gap" else "")

    rows = sorted(rows, key=lambda r: (r[4] != "all", -r[5] if r[4] == "all" else 0))
    fig, ax = plt.subplots(figsize=(10, 0.34 * len(rows) + 1.8))
    y = np.arange(len(rows))
    est = np.array([r[5] for r in rows], float)
    lo = np.array([r[6] if r[6] is not None else np.nan for r in rows], float)
    hi = np.array([r[7] if r[7] is not None else np.nan for r in rows], float)
    colors = ["C0" if r[4] == "all" else "C1" for r in rows]
    ax.barh(y, est, color=colors, alpha=0.8)
    has = np.isfinite(lo) & np.isfinite(hi)
    # a bootstrap percentile interval need not contain the full-sample estimate: clip, do not fail
    xerr = [np.clip(est[has] - lo[has], 0, None), np.clip(hi[has] - est[has], 0, None)]
    ax.errorbar(est[has], y[has], xerr=xerr, fmt="none", color="black", lw=1)
    ax.axvline(PAPER_R2, color="C3", ls="--", lw=1.2, label=f"paper 004: R^2 = {PAPER_R2} ({PAPER_N_MODELS} models)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, [label(*r[:5]) for r in rows], fontsize=8)
    ax.set_xlabel("R^2 of out-of-fold predictions (95% bootstrap interval)")
    lowest = float(np.nanmin(np.append(lo, est)))
    if lowest < -1.0:
        # R^2 has no floor: a model can miss held-out data sets by thousands of times their variance. A linear
        # axis cut at -1 hid those bars and their intervals; beyond -1 the axis turns logarithmic instead
        # (shaded), so every bar and interval is drawn whole while [-1, 1] keeps its linear reading.
        ax.set_xscale("symlog", linthresh=1.0, linscale=2.0)
        decades = int(np.floor(np.log10(-lowest)))
        ax.set_xlim(lowest * 1.4, 1.0)
        ticks = [-(10.0 ** k) for k in range(decades, 0, -1)] + [-1.0, -0.5, 0.0, 0.5, 1.0]
        ax.set_xticks(ticks, [f"$-10^{{{k}}}$" if k > 1 else "-10" for k in range(decades, 0, -1)]
                      + ["-1", "-0.5", "0", "0.5", "1"])
        ax.tick_params(axis="x", labelsize=9)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvspan(ax.get_xlim()[0], -1.0, color="0.5", alpha=0.08, lw=0, label="log scale below -1")
    else:
        ax.set_xlim(lowest - 0.05, 1.0)
    # each row's value and interval in a column right of the axes, clear of the bars and error bars
    names = ax.get_yaxis_transform()
    for yi, e, lo_i, hi_i in zip(y, est, lo, hi, strict=True):
        interval = f" [{fmt_r2(lo_i)}, {fmt_r2(hi_i)}]" if np.isfinite(lo_i) and np.isfinite(hi_i) else ""
        ax.text(1.02, yi, fmt_r2(e) + interval, transform=names, va="center", ha="left", fontsize=7)
    ax.text(1.02, -0.9, "R^2 [95% interval]", transform=names, va="bottom", ha="left", fontsize=7,
            fontweight="bold")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("blue: every model at its last snapshot; orange: the same models at every stage", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


FIGURES = [
    Figure("gap_predicted_vs_actual", predicted_vs_actual_figure, interactive=predicted_vs_actual_interactive,
           caption="Left: each trained model's generalization gap against its out-of-fold prediction from the margin "
           "signature (input, first hidden layer, output; correct training points), folds grouped by data set. "
           "Right: the same late-fitted models predicting the held-out data sets' models at about half of their "
           "training (the paper's transfer test). Points on the dashed line are predicted exactly. In the report: "
           "hover a point for its run, zoom with the wheel or a box, click a data set to hide it."),
    Figure("gap_r2", r2_figure,
           "R^2 of out-of-fold predictions for each predictor set (blue: every model at its last snapshot) and for "
           "the margin model at each training stage and in transfer (orange: models with all three stages). "
           "Values below 0 predict held-out data sets worse than their mean gap would. R^2 has no floor: where a "
           "value or interval falls below -1 the axis turns logarithmic there (shaded), so every bar and interval "
           "is drawn whole; the column on the right gives each value and its interval. Red: the paper's R^2."),
]
