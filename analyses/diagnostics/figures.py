"""The diagnostics stage's figures, drawn from its tables alone."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from analyses.diagnostics.findings import CRITICAL, INFO, WARNING
from analyses.kit.stage import Figure

_SEVERITY_COLORS = {INFO: "#4c72b0", WARNING: "#dd8452", CRITICAL: "#c44e52"}


def findings_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Horizontal stacked bars: findings per rule, split by severity."""
    df = con.sql("SELECT rule, severity, n_findings FROM analysis_diagnostics_summary").pl()
    rules = list(dict.fromkeys(df["rule"].to_list()))
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * max(len(rules), 4) + 1.5))
    left = np.zeros(len(rules))
    for sev in (INFO, WARNING, CRITICAL):
        counts = np.array([df.filter((pl.col("rule") == r) & (pl.col("severity") == sev))["n_findings"].sum()
                           for r in rules], dtype=float)
        ax.barh(rules, counts, left=left, color=_SEVERITY_COLORS[sev], label=sev)
        left += counts
    for i, total in enumerate(left):
        ax.text(total, i, f" {int(total)}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("number of findings (layer snapshots; run-level for normalization_effect)")
    ax.set_ylabel("rule")
    ax.legend(title="severity", loc="lower right")
    ax.set_xlim(0, max(float(left.max()) if len(left) else 0.0, 1.0) * 1.15)
    fig.suptitle("Diagnostics: findings per rule and severity")
    fig.tight_layout()
    return fig


def normalization_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Per data set, run-mean hidden-layer saturation and local near-zero fraction without
    normalization and with each normalization."""
    metrics = ("saturation_fraction", "local_near_zero_fraction")
    df = con.sql("SELECT * FROM analysis_diagnostics_normalization ORDER BY dataset, norm").pl()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    norms = sorted(df["norm"].unique().to_list())
    palette = dict(zip(["none", *norms], plt.get_cmap("tab10").colors, strict=False))
    for ax, metric in zip(axes.flat, metrics, strict=True):
        sub = df.filter(pl.col("metric") == metric)
        datasets = sorted(sub["dataset"].unique().to_list())
        if not datasets:
            ax.text(0.5, 0.5, "no normalized run with an unnormalized twin", ha="center", va="center",
                    transform=ax.transAxes)
        width = 0.8 / (len(norms) + 1)
        for i, ds in enumerate(datasets):
            rows = sub.filter(pl.col("dataset") == ds)
            base = float(np.nanmean(rows["value_without"].cast(pl.Float64).fill_null(np.nan).to_numpy()))
            ax.bar(i, base, width, color=palette["none"], label="none" if i == 0 else None)
            for j, nm in enumerate(norms):
                v = rows.filter(pl.col("norm") == nm)["value_with_norm"].to_list()
                if v and v[0] is not None:
                    ax.bar(i + (j + 1) * width, v[0], width, color=palette[nm], label=nm if i == 0 else None)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(datasets))], datasets)
        ax.set_xlabel("data set")
        ax.set_ylabel(f"run mean of {metric}\n(hidden layers)")  # one line ran into the title
        ax.set_title(metric.replace("_", " "))
        if datasets:
            ax.margins(y=0.35)  # headroom: the legend sat on the tallest bars
            ax.legend(title="normalization", loc="upper left", ncol=len(norms) + 1, fontsize=9)
    fig.suptitle("Normalization and saturation (001 §5.2): matched runs with and without normalization")
    fig.tight_layout()
    return fig


FIGURES = [
    Figure("diagnostics_findings", findings_figure,
           "Number of findings of each diagnostic rule, stacked by severity (warning: every condition past its "
           "warning threshold; critical: past its critical threshold; info: a comparison). Thresholds are in the "
           "summary table."),
    Figure("diagnostics_normalization", normalization_figure,
           "Run-mean saturation fraction and local-Hessian near-zero fraction of hidden layers over all spectral "
           "snapshots, for each normalized run and its twin without normalization (identical configuration "
           "otherwise)."),
]
