"""Shapiro-Wilk tests of normality for every internal feature, pooled over all spectral snapshots and
per layer position, with QQ plots of the :data:`N_QQ` = 3 most and least normal features. Which
features are close to normal decides where correlations, CCA and t intervals on them can be read at
face value.

Scale, units and rules
----------------------
Every feature is tested on the scale the other stages use (the catalog's ``transform``):
``slog(x) = sign(x) ln(1 + |x|)`` for the scale-like features (:attr:`analyses.kit.features.Feature.log_scale`),
the identity otherwise. Pooled rows (``layer`` NULL) take ``analysis_features``: one value per
snapshot, the layer mean of the transformed feature. Per-layer rows take
``analysis_features_layer`` with the transform applied to each layer's raw value, grouped by the
layer's *position* (:func:`layer_position`), because layer indices mean different things in networks
of different depth: ``first`` (layer 0), ``output`` (the output layer), ``last`` (the last hidden
layer, when it is not the first), ``middle`` (the rest).

``analysis_normality``: one row per (feature, layer) (per-layer rows only where the position has a
finite value): n finite values, ``w_statistic`` and
``p_value`` of ``scipy.stats.shapiro`` on them, ``p_adjusted`` by Benjamini-Hochberg over every
row of the table (statsmodels ``multipletests``), and ``normal_at_5pct`` = p_value >= :data:`ALPHA`
(the per-test p: correcting would make "normal" easier to reach, the wrong direction for a
screen). A test needs n >= :data:`MIN_N`; with n > :data:`MAX_N` (scipy's p-value is unreliable
beyond 5000) a fixed-seed subsample of MAX_N values is tested. W and p are NULL for fewer than
MIN_N values or a constant feature (W is undefined at zero spread).

Snapshots of one run and layers of one network are not independent, and with hundreds of values
Shapiro-Wilk rejects even mild departures, so W (1 = perfectly normal) is the number to compare
features by; p says whether the departure is detectable at this n. The papers make no claim about
normality (001 §4.4 uses the test to spot deviations), so this stage writes no verdict.
"""

from __future__ import annotations

import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from scipy import stats

from analyses.kit import features as feat
from analyses.kit.features import POSITIONS, layer_position
from analyses.kit.stage import Figure, Stage
from analyses.kit.tables import write_table
from analyses.stats import bh_adjust

#: Level of ``normal_at_5pct``.
ALPHA = 0.05
#: Fewest values for a test (scipy's minimum).
MIN_N = 3
#: Most values per test; above it a fixed-seed subsample is tested.
MAX_N = 5000
#: Seed of the subsample.
SEED = 0
#: Features shown at each end of the QQ figure.
N_QQ = 3

def test_sample(values: np.ndarray, max_n: int = MAX_N, seed: int = SEED) -> np.ndarray:
    """The finite values of ``values`` (shape (m,)) that are tested: all of them, or with more than
    ``max_n`` a subsample of max_n without replacement (fixed seed, original order kept)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) > max_n:
        keep = np.sort(np.random.default_rng(seed).choice(len(v), size=max_n, replace=False))
        v = v[keep]
    return v


def shapiro_wilk(values: np.ndarray) -> tuple[float, float, int]:
    """Shapiro-Wilk W and p (``scipy.stats.shapiro``) on :func:`test_sample` of values (m,).

    Returns ``(w, p, n)``, n the number of finite values before any subsample; NaNs when fewer than
    MIN_N values or no spread."""
    v = np.asarray(values, float)
    n = int(np.isfinite(v).sum())
    sample = test_sample(v)
    if len(sample) < MIN_N or np.ptp(sample) == 0:
        return math.nan, math.nan, n
    res = stats.shapiro(sample)
    return float(res.statistic), float(res.pvalue), n


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_normality``."""
    pooled = con.sql("SELECT * FROM analysis_features ORDER BY run_id, step").pl()
    layers = con.sql("SELECT * FROM analysis_features_layer ORDER BY run_id, step, layer_index").pl()
    positions = (layer_position(layers["layer_index"].to_numpy(), layers["n_layers"].to_numpy(),
                                layers["is_output"].fill_null(False).to_numpy())
                 if layers.height else np.array([], dtype=str))
    rows = []
    for f in feat.FEATURES:
        transform = "slog" if f.log_scale else "identity"
        x = pooled[f.name].cast(pl.Float64).fill_null(math.nan).to_numpy() if pooled.height else np.array([])
        w, p, n = shapiro_wilk(x)
        rows.append({"feature": f.name, "layer": None, "transform": transform, "n": n, "w_statistic": w,
                     "p_value": p})
        raw = layers[f.name].cast(pl.Float64).fill_null(math.nan).to_numpy() if layers.height else np.array([])
        values = feat.slog(raw) if f.log_scale else raw
        for pos in POSITIONS:
            w, p, n = shapiro_wilk(values[positions == pos])
            if n == 0:  # no layer at this position, or the feature is NULL there
                continue
            rows.append({"feature": f.name, "layer": pos, "transform": transform, "n": n, "w_statistic": w,
                         "p_value": p})
    adj = bh_adjust(np.array([r["p_value"] for r in rows], float), alpha=ALPHA)
    for r, a in zip(rows, adj, strict=True):
        r["p_adjusted"] = float(a)
        r["normal_at_5pct"] = bool(r["p_value"] >= ALPHA) if math.isfinite(r["p_value"]) else None
    # NaN (untestable) is stored as NULL; every row is scanned for the column types
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.col(pl.Float64).fill_nan(None))
    write_table(con, "analysis_normality", frame)


# --- figures --------------------------------------------------------------------------------------

def qq_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """QQ plots (scipy.stats.probplot) of the N_QQ most and N_QQ least normal pooled features, by W."""
    title = "Normal QQ plots of the most (top) and least (bottom) normal features, all snapshots"
    ranked = con.execute("""SELECT feature, transform, w_statistic, p_value, n FROM analysis_normality
                            WHERE layer IS NULL AND w_statistic IS NOT NULL
                            ORDER BY w_statistic DESC, feature""").fetchall()
    if not ranked:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.text(0.5, 0.5, "no feature could be tested", ha="center", va="center")
        ax.set_axis_off()
        fig.suptitle(title)
        return fig
    k = min(N_QQ, math.ceil(len(ranked) / 2))
    picks = [("most normal", r) for r in ranked[:k]] + [("least normal", r) for r in ranked[::-1][:k]
                                                         if r not in ranked[:k]]
    fig, axes = plt.subplots(2, k, figsize=(4 * k, 7.6), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for idx, (kind, (name, transform, w, p, _)) in enumerate(picks):
        ax = axes[0 if kind == "most normal" else 1, idx if kind == "most normal" else idx - k]
        ax.set_visible(True)
        values = test_sample(con.execute(f'SELECT "{name}" FROM analysis_features ORDER BY run_id, step'
                                         ).fetchnumpy()[name].astype(float))
        (osm, osr), (slope, intercept, _) = stats.probplot(values, dist="norm")
        ax.scatter(osm, osr, s=10, alpha=0.7, label="snapshots")
        ax.plot(osm, slope * osm + intercept, color="C3", lw=1.2, label="normal fit")
        label = name if transform == "identity" else f"slog({name})"
        ax.set_title(f"{label}\nW = {w:.3f}, p = {p:.2g} ({kind})", fontsize=10)
        ax.set_xlabel("theoretical normal quantile")
        ax.set_ylabel(f"ordered {label}")
        if idx == 0:
            ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- report ---------------------------------------------------------------------------------------

def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences: how many features pass Shapiro-Wilk, pooled and per layer position."""
    paragraphs = []
    pooled = con.execute("""
        SELECT count(w_statistic), count(*) FILTER (WHERE normal_at_5pct),
               count(*) FILTER (WHERE p_adjusted >= 0.05), median(w_statistic), max(n)
        FROM analysis_normality WHERE layer IS NULL""").fetchall()[0]
    tested, normal, normal_adj, med_w, n = pooled
    if tested:
        best = con.execute("""SELECT feature, w_statistic FROM analysis_normality WHERE layer IS NULL
                              AND w_statistic IS NOT NULL ORDER BY w_statistic DESC LIMIT 3""").fetchall()
        worst = con.execute("""SELECT feature, w_statistic FROM analysis_normality WHERE layer IS NULL
                               AND w_statistic IS NOT NULL ORDER BY w_statistic LIMIT 3""").fetchall()
        paragraphs.append(
            f"Over all snapshots (up to {n} per feature), {normal} of {tested} testable features are not rejected "
            f"as normal at {ALPHA} ({normal_adj} after Benjamini-Hochberg correction); median W = {med_w:.3f}. "
            f"Closest to normal: {', '.join(f'{f} (W = {w:.3f})' for f, w in best)}; furthest: "
            f"{', '.join(f'{f} (W = {w:.3f})' for f, w in worst)}.")
    else:
        paragraphs.append("No feature had enough snapshots for a Shapiro-Wilk test.")
    per = con.execute("""
        SELECT layer, count(w_statistic), count(*) FILTER (WHERE normal_at_5pct), median(w_statistic)
        FROM analysis_normality WHERE layer IS NOT NULL GROUP BY layer""").fetchall()
    order = {p: i for i, p in enumerate(POSITIONS)}
    per = sorted((r for r in per if r[1]), key=lambda r: order.get(r[0], 99))
    if per:
        paragraphs.append("Per layer position, normal / tested: " + "; ".join(
            f"{pos}: {k} / {t} (median W {w:.3f})" for pos, t, k, w in per) + ".")
    tables = [
        {"caption": "Shapiro-Wilk over all snapshots, features from least to most normal",
         "sql": """SELECT feature, transform, n, round(w_statistic, 4) AS W, p_value, p_adjusted, normal_at_5pct
                   FROM analysis_normality WHERE layer IS NULL ORDER BY w_statistic NULLS LAST, feature"""},
        {"caption": "Features judged normal per layer position",
         "sql": """SELECT layer, count(w_statistic) AS tested, count(*) FILTER (WHERE normal_at_5pct) AS normal,
                          round(median(w_statistic), 4) AS median_W, max(n) AS max_n
                   FROM analysis_normality WHERE layer IS NOT NULL GROUP BY layer ORDER BY layer"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}


TABLES = {
    "analysis_normality": [
        ("feature", "VARCHAR"), ("layer", "VARCHAR"), ("transform", "VARCHAR"), ("n", "BIGINT"),
        ("w_statistic", "DOUBLE"), ("p_value", "DOUBLE"), ("p_adjusted", "DOUBLE"), ("normal_at_5pct", "BOOLEAN"),
    ],
}

STAGE = Stage(
    name="normality", title="Normality of the features (Shapiro-Wilk)", doc=__doc__,
    reads=("analysis_features", "analysis_features_layer"), tables=TABLES, run=run, report=report,
    figures=[
        Figure("normality_qq", qq_figure,
               "Normal QQ plots (scipy.stats.probplot) of the snapshot-level features (layer means on the features' "
               "scale) with the highest (top row) and lowest (bottom row) Shapiro-Wilk W; points on the red line "
               "are normal. Titles give W and the unadjusted p."),
    ],
)
