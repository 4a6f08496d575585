"""Gradient pressure (000): where along the network the curvature in the gradient's direction
concentrates over training, and a test of the paper's idea that high-pressure layers are
"bottlenecks": do the layers under the highest pressure early in training improve slowest, or
saturate later?

Definitions
-----------
Gradient pressure of layer i at a spectral snapshot: ``p_i = g_iᵀ H_ii g_i / ||g_i||²`` (the
loss-Hessian block's curvature along the layer's gradient, ``layer_stats.gradient_pressure``).
"High pressure" means a large signed value (negative values, rare, rank lowest).

- ``pressure_rank_in_snapshot``: rank of p_i among the snapshot's layers, 1 = highest.
- ``pressure_share``: ``p_i / Σ_j |p_j|`` over the snapshot's layers.
- early / late: checkpoints with ``progress = step / total_steps <= EARLY_PROGRESS`` / above it.
- early pressure of a layer: the mean of p_i over its early spectral snapshots; its rank within the
  run (1 = highest) is the layer's *early pressure rank*, and the rank-1 layer is the run's
  *top-pressure layer*.
- improvement (a): ``grad_log_decrease = mean_early ln ||G_i|| - mean_late ln ||G_i||`` over every
  metric checkpoint (``layer_stats.grad_norm``, stored at all checkpoints): the log-ratio of the
  geometric-mean gradient norms, scale-free so layers of different size compare. The *slowest-
  improving* layer has the smallest value (its gradient fell least).
- weight movement (descriptive): ``||W_T - W_0||_F / ||W_0||_F`` between the first and last stored
  spectral snapshot (``weights``, tensor ``linear.weight``).
- later saturation (b): ``saturation_rise = mean_late s_i - mean_early s_i`` of the saturation
  fraction over spectral snapshots, for hidden layers of saturating activations
  (:data:`SATURATING`). ReLU layers are excluded from the test: their "saturation fraction" counts
  inactive (u <= 0) pairs, a sparsity that is not the flat-tail saturation the claim is about, and
  dead units (``dead_fraction``) are nearly absent; their rise is still tabulated. Output layers have
  no activation and no saturation.

Tests (per run, across its layers)
----------------------------------
Spearman's ρ between early pressure and (a) over all layers (predicted negative: high pressure,
little improvement), (a) over hidden layers only (the output layer is almost always the top-pressure
layer, so the all-layer test partly compares output against hidden), and (b) (predicted positive).
A run counts when it has at least :data:`MIN_LAYERS` usable layers; with 2 layers ρ is ±1, the sign
of the one pair's concordance. The runs' ρ are pooled by their unweighted mean, not by Fisher z: with
2-4 layers per run ρ takes a few discrete values including ±1 (z infinite) and the usual weights
n - 3 are <= 1. Interval: percentile bootstrap over runs (:data:`analyses.verdicts.N_BOOTSTRAP`);
p-value: two-sided, from :data:`N_PERMUTATIONS` permutations of the outcome among each run's layers.
The mean ρ over runs with >= 3 usable layers is given in the detail. Coincidence: the share of runs
whose top-pressure layer is also the slowest-improving one, minus the chance rate 1/(usable layers)
averaged over runs; interval by bootstrap over runs of the per-run difference.

Tables
------
``analysis_pressure``: one row per (run_id, step, layer_index) spectral snapshot layer: progress,
snapshot_index, context, gradient_pressure, pressure_rank_in_snapshot, pressure_share,
saturation_fraction, dead_fraction, grad_norm, weight_norm.
``analysis_pressure_layers``: one row per (run_id, layer_index): early/late pressure, early pressure
rank, grad_log_decrease, weight_movement, saturation early/late/rise, dead_rise.
``analysis_pressure_bottlenecks``: one row per run: the top-pressure layer with its share,
improvement and saturation rise, the slowest-improving layer, whether they coincide, and the run's ρ.
``analysis_pressure_verdicts``: the bottleneck claims.
"""

from __future__ import annotations

import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.colors import SymLogNorm

from analyses.presentation import fmt_number as _f
from analyses.verdicts import CONFIDENCE, N_BOOTSTRAP, Verdict, write_verdicts

READS = ("analysis_features_layer", "layer_stats", "runs", "weights")
WRITES = ("analysis_pressure", "analysis_pressure_layers", "analysis_pressure_bottlenecks",
          "analysis_pressure_verdicts")
TITLE = "Gradient pressure and bottlenecks (000)"

#: Checkpoints with progress <= this are "early", the rest "late".
EARLY_PROGRESS = 0.5
#: Activations whose saturation (flat tails) the later-saturation test uses.
SATURATING = ("sigmoid", "tanh")
#: A run enters a per-run rank correlation with at least this many usable layers.
MIN_LAYERS = 2
#: Within-run permutations for the p-values.
N_PERMUTATIONS = 2000
#: Gradient norms below this are floored before the logarithm.
GRAD_FLOOR = 1e-30
#: Seed of permutations and bootstraps.
SEED = 0
#: Runs drawn in the pressure map.
MAP_RUNS = 6


# --- pure functions -------------------------------------------------------------------------------

def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (1..n) along the last axis."""
    from scipy.stats import rankdata
    return rankdata(v, axis=-1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of two equal-length vectors (Pearson of average ranks); NaN if n < 2 or a side is tied."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return math.nan
    rx, ry = _ranks(x) - (len(x) + 1) / 2, _ranks(y) - (len(y) + 1) / 2
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def per_run_spearman(runs, x, y, min_layers: int = MIN_LAYERS) -> dict[str, float]:
    """ρ(x, y) across the layers of each run: ``{run: ρ}`` for runs with >= min_layers finite pairs
    and a defined ρ. ``runs``, ``x``, ``y``: (n,) one entry per layer."""
    runs, x, y = np.asarray(runs), np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    out = {}
    for r in dict.fromkeys(runs[ok].tolist()):
        m = ok & (runs == r)
        if m.sum() >= min_layers:
            rho = spearman(x[m], y[m])
            if math.isfinite(rho):
                out[r] = rho
    return out


def pooled_rank_correlation(runs, x, y, min_layers: int = MIN_LAYERS, n_boot: int = N_BOOTSTRAP,
                            n_perm: int = N_PERMUTATIONS, seed: int = SEED) -> dict:
    """Mean over runs of the within-run Spearman ρ(x, y), with a bootstrap-over-runs interval and a
    within-run permutation p-value (see the module doc).

    Returns ``effect`` (mean ρ), ``ci_low``, ``ci_high`` (NaN with fewer than 3 runs), ``p_value``
    (two-sided), ``n`` (runs), ``rho`` ({run: ρ}), ``mean_rho_3plus`` and ``n_3plus`` (runs with >= 3
    usable layers).
    """
    runs, x, y = np.asarray(runs), np.asarray(x, float), np.asarray(y, float)
    rho = per_run_spearman(runs, x, y, min_layers)
    n = len(rho)
    nan = math.nan
    out = {"effect": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "n": n, "rho": rho,
           "mean_rho_3plus": nan, "n_3plus": 0}
    if n == 0:
        return out
    vals = np.array(list(rho.values()))
    out["effect"] = float(vals.mean())
    ok = np.isfinite(x) & np.isfinite(y)
    sizes = {r: int((ok & (runs == r)).sum()) for r in rho}
    big = [rho[r] for r in rho if sizes[r] >= 3]
    out["n_3plus"] = len(big)
    if big:
        out["mean_rho_3plus"] = float(np.mean(big))
    rng = np.random.default_rng(seed)
    if n >= 3 and n_boot > 0:
        pick = rng.integers(0, n, size=(n_boot, n))
        a = (1 - CONFIDENCE) / 2
        out["ci_low"], out["ci_high"] = map(float, np.quantile(vals[pick].mean(axis=1), [a, 1 - a]))
    if n_perm > 0:
        # ranks per run, centred and normalized, grouped by layer count for a vectorized permutation
        total = np.zeros(n_perm)
        for m in sorted(set(sizes.values())):
            members = [r for r in rho if sizes[r] == m]
            rx = np.stack([_ranks(x[ok & (runs == r)]) for r in members]) - (m + 1) / 2
            ry = np.stack([_ranks(y[ok & (runs == r)]) for r in members]) - (m + 1) / 2
            den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))  # (R,)
            order = np.argsort(rng.random((n_perm, len(members), m)), axis=2)
            ryp = np.take_along_axis(np.broadcast_to(ry, (n_perm, *ry.shape)), order, axis=2)
            total += ((rx[None] * ryp).sum(axis=2) / den[None]).sum(axis=1)
        null = total / n
        obs = out["effect"]
        out["p_value"] = float((1 + np.sum(np.abs(null) >= abs(obs) - 1e-12)) / (1 + n_perm))
    return out


def coincidence(runs, pressure, improvement, min_layers: int = MIN_LAYERS, n_boot: int = N_BOOTSTRAP,
                seed: int = SEED) -> dict:
    """Does the top-pressure layer coincide with the slowest-improving one more often than chance?

    Per run (layers with both values finite, at least ``min_layers``): ``hit`` = 1 when the argmax of
    ``pressure`` is the argmin of ``improvement``, ``chance`` = 1/(its layers). Returns ``rate``,
    ``chance`` (means over runs), ``effect`` = rate - chance with a bootstrap-over-runs interval
    ``ci_low``/``ci_high`` (NaN with fewer than 3 runs), ``n`` runs and ``hits`` {run: 0/1}.
    """
    runs, p, imp = np.asarray(runs), np.asarray(pressure, float), np.asarray(improvement, float)
    ok = np.isfinite(p) & np.isfinite(imp)
    hits, chance = {}, {}
    for r in dict.fromkeys(runs[ok].tolist()):
        m = ok & (runs == r)
        if m.sum() >= min_layers:
            hits[r] = int(np.argmax(p[m]) == np.argmin(imp[m]))
            chance[r] = 1.0 / m.sum()
    n = len(hits)
    nan = math.nan
    out = {"rate": nan, "chance": nan, "effect": nan, "ci_low": nan, "ci_high": nan, "n": n, "hits": hits}
    if n == 0:
        return out
    h, c = np.array(list(hits.values()), float), np.array(list(chance.values()))
    out.update(rate=float(h.mean()), chance=float(c.mean()), effect=float((h - c).mean()))
    if n >= 3 and n_boot > 0:
        pick = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        a = (1 - CONFIDENCE) / 2
        out["ci_low"], out["ci_high"] = map(float, np.quantile((h - c)[pick].mean(axis=1), [a, 1 - a]))
    return out


# --- the stage ------------------------------------------------------------------------------------

_PRESSURE_SQL = """
CREATE OR REPLACE TABLE analysis_pressure AS
SELECT run_id, step, dense_rank() OVER (PARTITION BY run_id ORDER BY step) - 1 AS snapshot_index, progress,
       dataset, task, architecture, activation, optimizer, n_layers, layer_index, relative_depth, is_output,
       gradient_pressure,
       CASE WHEN gradient_pressure IS NULL THEN NULL ELSE
            rank() OVER (PARTITION BY run_id, step ORDER BY gradient_pressure DESC NULLS LAST) END
            AS pressure_rank_in_snapshot,
       gradient_pressure / nullif(sum(abs(gradient_pressure)) OVER (PARTITION BY run_id, step), 0)
            AS pressure_share,
       saturation_fraction, dead_fraction, grad_norm, weight_norm
FROM analysis_features_layer
ORDER BY run_id, step, layer_index
"""

_LAYERS_SQL = f"""
CREATE OR REPLACE TABLE analysis_pressure_layers AS
WITH spec AS (
    SELECT run_id, layer_index,
           any_value(dataset) AS dataset, any_value(architecture) AS architecture,
           any_value(activation) AS activation, any_value(n_layers) AS n_layers,
           any_value(relative_depth) AS relative_depth, any_value(is_output) AS is_output,
           avg(gradient_pressure) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS early_pressure,
           avg(gradient_pressure) FILTER (WHERE progress > {EARLY_PROGRESS}) AS late_pressure,
           avg(saturation_fraction) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS saturation_early,
           avg(saturation_fraction) FILTER (WHERE progress > {EARLY_PROGRESS}) AS saturation_late,
           avg(dead_fraction) FILTER (WHERE progress > {EARLY_PROGRESS})
             - avg(dead_fraction) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS dead_rise,
           count(*) FILTER (WHERE progress <= {EARLY_PROGRESS}) AS n_early_snapshots,
           count(*) FILTER (WHERE progress > {EARLY_PROGRESS}) AS n_late_snapshots
    FROM analysis_features_layer GROUP BY run_id, layer_index
), grads AS (
    SELECT s.run_id, s.layer_index,
           avg(ln(greatest(s.grad_norm, {GRAD_FLOOR})))
               FILTER (WHERE s.step::DOUBLE / greatest(r.total_steps, 1) <= {EARLY_PROGRESS})
         - avg(ln(greatest(s.grad_norm, {GRAD_FLOOR})))
               FILTER (WHERE s.step::DOUBLE / greatest(r.total_steps, 1) > {EARLY_PROGRESS})
           AS grad_log_decrease,
           count(s.grad_norm) AS n_grad_checkpoints
    FROM layer_stats s JOIN runs r USING (run_id)
    WHERE s.grad_norm IS NOT NULL
    GROUP BY s.run_id, s.layer_index
), w AS (
    SELECT run_id, layer_index, arg_min("values", step) AS w0, arg_max("values", step) AS w1
    FROM weights WHERE tensor = 'linear.weight' GROUP BY run_id, layer_index
), moves AS (
    SELECT run_id, layer_index,
           CASE WHEN len(w0) = len(w1) AND list_dot_product(w0, w0) > 0
                THEN list_distance(w1, w0) / sqrt(list_dot_product(w0, w0)) END AS weight_movement
    FROM w
)
SELECT spec.run_id, spec.layer_index, dataset, architecture, activation, n_layers, relative_depth, is_output,
       early_pressure, late_pressure,
       CASE WHEN early_pressure IS NULL THEN NULL ELSE
            rank() OVER (PARTITION BY spec.run_id ORDER BY early_pressure DESC NULLS LAST) END AS early_pressure_rank,
       early_pressure / nullif(sum(abs(early_pressure)) OVER (PARTITION BY spec.run_id), 0) AS early_pressure_share,
       grad_log_decrease, weight_movement,
       saturation_early, saturation_late, saturation_late - saturation_early AS saturation_rise, dead_rise,
       n_early_snapshots, n_late_snapshots, n_grad_checkpoints
FROM spec LEFT JOIN grads USING (run_id, layer_index) LEFT JOIN moves USING (run_id, layer_index)
ORDER BY spec.run_id, spec.layer_index
"""


def _test_frames(layers: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The layer subsets of each test."""
    hidden = layers.filter(~pl.col("is_output"))
    return {"all": layers, "hidden": hidden,
            "saturation": hidden.filter(pl.col("activation").is_in(list(SATURATING)))}


def _run_tests(layers: pl.DataFrame) -> dict[str, dict]:
    f = _test_frames(layers)

    def cols(frame, y):
        return (frame["run_id"].to_numpy(), frame["early_pressure"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                frame[y].cast(pl.Float64).fill_null(np.nan).to_numpy())

    return {
        "improvement": pooled_rank_correlation(*cols(f["all"], "grad_log_decrease")),
        "improvement_hidden": pooled_rank_correlation(*cols(f["hidden"], "grad_log_decrease")),
        "saturation": pooled_rank_correlation(*cols(f["saturation"], "saturation_rise")),
        "movement": pooled_rank_correlation(*cols(f["all"], "weight_movement")),
        "coincidence": coincidence(*cols(f["all"], "grad_log_decrease")),
    }


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the pressure tables and verdicts."""
    con.execute(_PRESSURE_SQL)
    con.execute(_LAYERS_SQL)
    layers = con.sql("SELECT * FROM analysis_pressure_layers ORDER BY run_id, layer_index").pl()
    tests = _run_tests(layers)
    rho_cols = {"rho_improvement": "improvement", "rho_improvement_hidden": "improvement_hidden",
                "rho_saturation": "saturation", "rho_movement": "movement"}
    rho_frame = pl.DataFrame(  # noqa: F841
        {"run_id": layers["run_id"].unique(maintain_order=True).to_list()}, schema={"run_id": pl.Utf8}
    ).with_columns([pl.col("run_id").replace_strict(tests[t]["rho"], default=None, return_dtype=pl.Float64).alias(c)
                    for c, t in rho_cols.items()])
    con.execute("""
        CREATE OR REPLACE TABLE analysis_pressure_bottlenecks AS
        WITH usable AS (
            SELECT * FROM analysis_pressure_layers WHERE early_pressure IS NOT NULL
        ), top AS (
            SELECT run_id, arg_max(layer_index, early_pressure) AS top_layer,
                   arg_max(is_output, early_pressure) AS top_is_output,
                   arg_max(relative_depth, early_pressure) AS top_relative_depth,
                   arg_max(early_pressure_share, early_pressure) AS top_share,
                   arg_max(grad_log_decrease, early_pressure) AS top_grad_log_decrease,
                   arg_max(saturation_rise, early_pressure) AS top_saturation_rise,
                   arg_max(weight_movement, early_pressure) AS top_weight_movement,
                   count(*) AS n_layers_with_pressure
            FROM usable GROUP BY run_id
        ), slow AS (
            SELECT run_id, arg_min(layer_index, grad_log_decrease) AS slowest_layer,
                   count(*) AS n_layers_compared
            FROM usable WHERE grad_log_decrease IS NOT NULL GROUP BY run_id
        ), ctx AS (
            SELECT run_id, any_value(dataset) AS dataset, any_value(architecture) AS architecture,
                   any_value(activation) AS activation, any_value(n_layers) AS n_layers
            FROM analysis_pressure_layers GROUP BY run_id
        )
        SELECT ctx.*, top.* EXCLUDE (run_id), slow.slowest_layer, slow.n_layers_compared,
               top.top_layer = slow.slowest_layer AS top_is_slowest,
               1.0 / slow.n_layers_compared AS chance_rate,
               rho_frame.* EXCLUDE (run_id)
        FROM ctx LEFT JOIN top USING (run_id) LEFT JOIN slow USING (run_id) LEFT JOIN rho_frame USING (run_id)
        ORDER BY ctx.run_id""")
    n_top_out = con.execute("SELECT count(*) FILTER (WHERE top_is_output), count(top_layer) "
                            "FROM analysis_pressure_bottlenecks").fetchall()[0]
    write_verdicts(con, "pressure", _verdicts(tests, n_top_out))


def _verdicts(t: dict[str, dict], n_top_out: tuple[int, int]) -> list[Verdict]:
    def rho_detail(s: dict, what: str) -> str:
        return (f"mean within-run Spearman ρ(early pressure, {what}) over {s['n']} runs; over the "
                f"{s['n_3plus']} runs with >= 3 usable layers {_f(s['mean_rho_3plus'])}")

    imp, hid, sat, mov, co = (t[k] for k in ("improvement", "improvement_hidden", "saturation", "movement",
                                             "coincidence"))
    top_text = f"the top-pressure layer is the output layer in {n_top_out[0]} of {n_top_out[1]} runs"
    common = dict(effect_name="mean within-run Spearman ρ", n_unit="runs", null_value=0.0)
    test_imp = (f"per run, Spearman ρ across layers between early mean gradient pressure (progress <= "
                f"{EARLY_PROGRESS}) and the gradient-norm log-decrease from the early to the late half; mean over "
                f"runs, bootstrap over runs, within-run permutation p")
    return [
        Verdict(claim_id="pressure.slowest_improving", source="000",
                claim="000 bottleneck: high-pressure layers improve slowest", test=test_imp + " (all layers)",
                predicted="negative", effect=imp["effect"], ci_low=imp["ci_low"], ci_high=imp["ci_high"],
                n=imp["n"], p_value=imp["p_value"],
                detail=(f"{rho_detail(imp, 'gradient log-decrease')}; {top_text}; weight movement "
                        f"||W_T - W_0||/||W_0|| instead: mean ρ {_f(mov['effect'])} [{_f(mov['ci_low'])}, "
                        f"{_f(mov['ci_high'])}] over {mov['n']} runs"), **common),
        Verdict(claim_id="pressure.slowest_improving_hidden", source="000",
                claim="000 bottleneck: high-pressure hidden layers improve slowest (output layer left out)",
                test=test_imp + " (hidden layers only)", predicted="negative", effect=hid["effect"],
                ci_low=hid["ci_low"], ci_high=hid["ci_high"], n=hid["n"], p_value=hid["p_value"],
                detail=rho_detail(hid, "gradient log-decrease") + "; removes the output-versus-hidden contrast",
                **common),
        Verdict(claim_id="pressure.later_saturation", source="000",
                claim="000 bottleneck: high-pressure layers saturate later",
                test=(f"per run, Spearman ρ across hidden {'/'.join(SATURATING)} layers between early mean gradient "
                      f"pressure and the rise of the saturation fraction from the early to the late half; mean over "
                      f"runs, bootstrap over runs, within-run permutation p"),
                predicted="positive", effect=sat["effect"], ci_low=sat["ci_low"], ci_high=sat["ci_high"],
                n=sat["n"], p_value=sat["p_value"],
                detail=rho_detail(sat, "saturation rise") + "; ReLU layers excluded (see the section text)",
                **common),
        Verdict(claim_id="pressure.top_is_slowest", source="000",
                claim="000 bottleneck: the top-pressure layer is the slowest-improving layer",
                test=("share of runs whose layer of highest early pressure has the smallest gradient-norm "
                      "log-decrease, minus the chance rate 1/(layers); bootstrap over runs"),
                effect_name="coincidence rate minus chance", predicted="positive", effect=co["effect"],
                ci_low=co["ci_low"], ci_high=co["ci_high"], n=co["n"], n_unit="runs",
                detail=(f"coincidence in {_f(co['rate'])} of runs against chance {_f(co['chance'])}; "
                        f"{top_text}")),
    ]


# --- figures and report ---------------------------------------------------------------------------

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
    rng = np.random.default_rng(SEED)
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


def report(con: duckdb.DuckDBPyConnection) -> dict:
    n_runs, n_top_out, coincide, compared = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE top_is_output), count(*) FILTER (WHERE top_is_slowest),
               count(top_is_slowest) FROM analysis_pressure_bottlenecks""").fetchall()[0]
    share = con.execute("SELECT avg(top_share) FROM analysis_pressure_bottlenecks").fetchall()[0][0]
    paragraphs = []
    if n_runs:
        paragraphs.append(
            f"Over {n_runs} runs the layer of highest early gradient pressure is the output layer in {n_top_out}; "
            f"on average it carries {_f(share)} of the runs' summed absolute early pressure. It is also the "
            f"slowest-improving layer (smallest gradient-norm log-decrease) in {coincide} of {compared} runs.")
    return {"paragraphs": paragraphs, "tables": [{
        "caption": "Per run: the top-pressure layer, its improvement and saturation rise, the slowest-improving "
                   "layer, and the run's rank correlations",
        "sql": """SELECT run_id, dataset, architecture, n_layers, top_layer, top_is_output,
                         round(top_share, 3) AS top_share, round(top_grad_log_decrease, 3) AS top_grad_log_decrease,
                         round(top_saturation_rise, 3) AS top_saturation_rise, slowest_layer, top_is_slowest,
                         round(rho_improvement, 2) AS rho_improvement,
                         round(rho_improvement_hidden, 2) AS rho_improvement_hidden,
                         round(rho_saturation, 2) AS rho_saturation
                  FROM analysis_pressure_bottlenecks ORDER BY n_layers DESC, architecture, run_id LIMIT 60"""}]}


FIGURES = {"pressure_map": pressure_map_figure, "pressure_bottleneck": bottleneck_figure}
CAPTIONS = {
    "pressure_map": ("Gradient pressure gᵀH_ii g/||g||² (000) of each layer (rows, output at the top) at each "
                     "spectral snapshot (columns, labelled by training progress) for up to six runs, deepest first "
                     "and one per architecture; colour on a symmetric log scale shared by all panels."),
    "pressure_bottleneck": ("Each point is one layer of one run: its rank by early mean gradient pressure within "
                            "the run (1 = highest) against how much its gradient norm fell from the first to the "
                            "second half of training (left), how much its saturation fraction rose (middle, hidden "
                            "sigmoid/tanh layers) and how far its weights moved (right); grey lines join a run's "
                            "layers. The bottleneck idea predicts lines rising to the right on the left panel (the "
                            "top-pressure layer improves least) and falling ones in the middle (it saturates most); "
                            "panel titles give the mean within-run Spearman ρ between early pressure (not its rank) "
                            "and the plotted quantity."),
}
