"""Curvature propagation (paper 002): coupling maps, geometric shadows, and the four-arm evaluation
of skip-connection synthesis.

Arms (runs with a coupling map, ``coupling_probes > 0``): ``plain`` (no edges), ``template`` (a
residual edge at every hidden-to-hidden block), ``synthesized`` (gated edges chosen from the map,
see pipeline/propagation/synthesis.py) and ``random`` (as many gated edges placed at random). A
*cell* is one configuration but for the arm fields (``residual``, ``augment`` and the synthesis
settings): the arms of a cell start from the same initialization and see the same batches until
synthesis. Two runs of one arm in a cell (a sweep of the synthesis settings) are averaged.

Tables
------
``shadows``
    per run and window of SHADOW_WINDOW consecutive coupling maps, every pair whose coupling stays
    below SHADOW_RATIO of the median at its path length in each map (pipeline/propagation/shadows.py);
    ``step_first``/``step_last`` bound the window.
``analysis_propagation_runs``
    per MLP run with a coupling map (the arms are MLP options): arm, final test metric (accuracy;
    R2 for regression), final train loss, steps to the data set's target loss (the median final
    train loss of its runs; NULL when never reached), edges added, global coherence (mean kappa
    over path pairs) of its first and last map, and the shadows over its last three spectral maps.
``analysis_propagation``
    per (data set, arm) and over all data sets: means of the above; the fraction of runs reaching
    the target and the median steps to it (a run that never reaches it counts as its total steps);
    the loss variance across seeds (variance of the final train loss over seeds, averaged over
    learning rates); the learning-rate sensitivity (range over learning rates of the seed-averaged
    final test metric).
``analysis_propagation_verdicts``
    the paper's claims, tested on paired differences within cells: synthesized vs plain and vs
    random (final test metric; units: (data set, lr), seeds averaged), lower learning-rate
    sensitivity (units: (data set, seed)), restored coherence (final coherence, synthesized - plain).
"""

from __future__ import annotations

import hashlib
import json

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns

from analyses.presentation import empty_figure, fmt_number
from analyses.verdicts import Verdict, mean_ci, mean_t_p, write_verdicts
from pipeline.curvature.coupling import global_coherence
from pipeline.propagation.shadows import SHADOW_RATIO, SHADOW_WINDOW, find_shadows

READS = ("runs", "checkpoints", "curvature_coupling", "blocks", "augmentations", "augmentation_trials")
WRITES = ("shadows", "analysis_propagation_runs", "analysis_propagation", "analysis_propagation_verdicts")
TITLE = "Curvature propagation and skip-connection synthesis"
ARMS = ("plain", "template", "synthesized", "random")

_ARM_SQL = """CASE WHEN r.residual = 'every' THEN 'template' WHEN r.augment = 'none' THEN 'plain'
                   ELSE r.augment END"""


def coupling_matrices(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[int, np.ndarray, np.ndarray, bool]]:
    """(step, kappa (B, B), pair path lengths (B, B), -1 where none, is_spectral) of every stored map, by
    step."""
    rows = con.execute("""SELECT c.step, c.block_i, c.block_j, c.kappa, coalesce(c.path_length, -1),
                                 coalesce(k.is_spectral, false)
                          FROM curvature_coupling c LEFT JOIN checkpoints k USING (run_id, step)
                          WHERE c.run_id = ? ORDER BY c.step""", [run_id]).fetchall()
    out = []
    for step in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == step]
        n = max(max(r[1], r[2]) for r in mine) + 1
        kappa, lengths = np.full((n, n), np.nan), np.full((n, n), -1)
        for _, i, j, k, length, _ in mine:
            kappa[i, j] = kappa[j, i] = np.nan if k is None else k
            lengths[i, j] = lengths[j, i] = length
        out.append((step, kappa, lengths, bool(mine[0][5])))
    return out


def _shadow_rows(con: duckdb.DuckDBPyConnection) -> tuple[list[dict], dict[str, dict]]:
    """Shadow rows of every window of consecutive maps, and per run: coherence of its first and last
    map over the pairs of the model as built, and the shadows of its last SHADOW_WINDOW spectral maps
    (the same checkpoints in every arm, so the count compares across arms)."""
    rows, per_run = [], {}
    run_ids = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM curvature_coupling ORDER BY 1").fetchall()]
    for run_id in run_ids:
        maps = coupling_matrices(con, run_id)
        for end in range(SHADOW_WINDOW - 1, len(maps)):
            window = maps[end - SHADOW_WINDOW + 1: end + 1]
            rows += [{"run_id": run_id, "step_first": window[0][0], "step_last": window[-1][0],
                      "block_i": s.block_i, "block_j": s.block_j, "path_length": s.path_length,
                      "max_relative": s.max_relative, "mean_relative": s.mean_relative, "n_maps": len(window)}
                     for s in find_shadows([m[1] for m in window], [m[2] for m in window])]
        spectral = [m for m in maps if m[3]][-SHADOW_WINDOW:]
        last = (find_shadows([m[1] for m in spectral], [m[2] for m in spectral])
                if len(spectral) == SHADOW_WINDOW else [])
        first_lengths = maps[0][2]
        per_run[run_id] = {"coherence_first": global_coherence(maps[0][1], first_lengths),
                           "coherence_last": global_coherence(maps[-1][1], first_lengths),
                           "shadows_last": len(last)}
    return rows, per_run


_SHADOW_SCHEMA = {"run_id": pl.Utf8, "step_first": pl.Int32, "step_last": pl.Int32, "block_i": pl.Int32,
                  "block_j": pl.Int32, "path_length": pl.Int32, "max_relative": pl.Float64,
                  "mean_relative": pl.Float64, "n_maps": pl.Int32}


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``shadows``, the per-run and per-arm tables, and the verdicts."""
    shadow_rows, per_run = _shadow_rows(con)
    shadows = pl.DataFrame(shadow_rows, schema=_SHADOW_SCHEMA)  # noqa: F841
    con.execute("CREATE OR REPLACE TABLE shadows AS SELECT * FROM shadows")
    coherence = pl.DataFrame([{"run_id": k, **v} for k, v in per_run.items()],  # noqa: F841
                             schema={"run_id": pl.Utf8, "coherence_first": pl.Float64, "coherence_last": pl.Float64,
                                     "shadows_last": pl.Int32})
    cells = _cells(con)  # noqa: F841
    con.execute(f"""
        CREATE OR REPLACE TABLE analysis_propagation_runs AS
        WITH base AS (
            SELECT r.run_id, r.dataset, r.task, {_ARM_SQL} AS arm, r.lr, r.seed, r.epochs, r.status, r.total_steps,
                   cells.cell
            FROM runs r JOIN cells USING (run_id) WHERE r.coupling_probes > 0 AND r.family = 'mlp'
        ), last AS (
            SELECT b.run_id, c.train_loss AS final_train_loss,
                   CASE WHEN b.task = 'classification' THEN c.test_accuracy ELSE c.test_r2 END AS final_test_metric
            FROM base b JOIN runs r USING (run_id) JOIN checkpoints c ON c.run_id = r.run_id AND c.step = r.final_step
        ), target AS (
            SELECT b.dataset, median(l.final_train_loss) AS target_loss FROM base b JOIN last l USING (run_id)
            GROUP BY b.dataset
        ), reach AS (
            SELECT b.run_id, min(c.step) AS steps_to_target FROM base b JOIN target t USING (dataset)
            JOIN checkpoints c ON c.run_id = b.run_id AND c.train_loss <= t.target_loss GROUP BY b.run_id
        ), edges AS (
            SELECT run_id, count(*) AS edges_added FROM augmentations GROUP BY run_id
        )
        SELECT b.*, l.final_test_metric, l.final_train_loss, t.target_loss, x.steps_to_target,
               x.steps_to_target IS NOT NULL AS reached, coalesce(e.edges_added, 0) AS edges_added,
               h.coherence_first, h.coherence_last, h.shadows_last
        FROM base b LEFT JOIN last l USING (run_id) LEFT JOIN target t USING (dataset) LEFT JOIN reach x USING (run_id)
        LEFT JOIN edges e USING (run_id) LEFT JOIN coherence h USING (run_id)
        ORDER BY b.dataset, b.seed, b.lr, arm""")
    con.execute("""
        CREATE OR REPLACE TABLE analysis_propagation AS
        WITH runs_ AS (SELECT *, coalesce(steps_to_target, total_steps) AS steps_censored
                       FROM analysis_propagation_runs),
        seeds AS (  -- per (data set, arm, lr): across seeds
            SELECT dataset, arm, lr, var_samp(final_train_loss) AS loss_var, avg(final_test_metric) AS metric
            FROM runs_ GROUP BY dataset, arm, lr
        ), lrs AS (  -- per (data set, arm): across learning rates
            SELECT dataset, arm, avg(loss_var) AS loss_variance_across_seeds,
                   max(metric) - min(metric) AS lr_sensitivity
            FROM seeds GROUP BY dataset, arm
        ), per AS (
            SELECT dataset, arm, count(*) AS n_runs, avg(final_test_metric) AS final_test_metric,
                   avg(final_train_loss) AS final_train_loss, avg(reached::INTEGER) AS reached_fraction,
                   median(steps_censored) AS median_steps_to_target, avg(edges_added) AS edges_added,
                   avg(coherence_last) AS final_coherence, avg(shadows_last) AS final_shadows
            FROM runs_ GROUP BY dataset, arm
        )
        SELECT p.*, l.loss_variance_across_seeds, l.lr_sensitivity FROM per p JOIN lrs l USING (dataset, arm)
        UNION ALL
        SELECT 'all' AS dataset, p.arm, sum(n_runs), avg(final_test_metric), avg(final_train_loss),
               avg(reached_fraction), avg(median_steps_to_target), avg(edges_added), avg(final_coherence),
               avg(final_shadows), avg(l.loss_variance_across_seeds), avg(l.lr_sensitivity)
        FROM per p JOIN lrs l USING (dataset, arm) GROUP BY p.arm
        ORDER BY dataset = 'all', dataset, arm""")
    write_verdicts(con, "propagation", _verdicts(con.sql("SELECT * FROM analysis_propagation_runs").pl()))


#: Fields that make the arms of one cell differ.
ARM_FIELDS = ("residual", "augment", "augment_at", "edge_budget", "trial_steps")


def _cells(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """run_id -> cell: a hash of the run's configuration without the arm fields."""
    rows = con.execute("SELECT run_id, config_json FROM runs").fetchall()
    cells = []
    for _, config in rows:
        d = {k: v for k, v in json.loads(config).items() if k not in ARM_FIELDS}
        cells.append(hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16])
    return pl.DataFrame({"run_id": [r[0] for r in rows], "cell": cells}, schema={"run_id": pl.Utf8, "cell": pl.Utf8})


def _paired(frame: pl.DataFrame, arm: str, baseline: str, column: str, unit: list[str]) -> np.ndarray:
    """Per unit, the seed-averaged difference arm - baseline of ``column`` within cells."""
    wide = (frame.filter(pl.col("arm").is_in([arm, baseline]))
            .pivot(on="arm", index=["cell", "dataset", "lr", "seed"], values=column, aggregate_function="mean"))
    if arm not in wide.columns or baseline not in wide.columns:
        return np.empty(0)
    diff = wide.with_columns((pl.col(arm) - pl.col(baseline)).alias("d")).drop_nulls("d")
    return diff.group_by(unit).agg(pl.col("d").mean())["d"].to_numpy()


def _lr_range_difference(frame: pl.DataFrame, arm: str, baseline: str) -> np.ndarray:
    """Per (data set, seed): range over lrs of the final test metric, baseline - arm (positive: arm less
    sensitive); only units where both arms have at least two learning rates."""
    r = (frame.filter(pl.col("arm").is_in([arm, baseline])).drop_nulls("final_test_metric")
         .group_by(["dataset", "seed", "arm"])
         .agg((pl.col("final_test_metric").max() - pl.col("final_test_metric").min()).alias("range"),
              pl.col("lr").n_unique().alias("n_lr"))
         .filter(pl.col("n_lr") >= 2)
         .pivot(on="arm", index=["dataset", "seed"], values="range"))
    if arm not in r.columns or baseline not in r.columns:
        return np.empty(0)
    return (r[baseline] - r[arm]).drop_nulls().to_numpy()


def _verdicts(frame: pl.DataFrame) -> list[Verdict]:
    out = []

    def add(claim_id: str, claim: str, test: str, effect_name: str, values: np.ndarray, unit: str,
            negligible: float) -> None:
        m, lo, hi, n = mean_ci(values)
        out.append(Verdict(claim_id, "002", claim, test, effect_name, "positive", m, lo, hi, n, unit,
                           mean_t_p(values), 0.0, negligible, f"SHADOW_RATIO {SHADOW_RATIO}, window {SHADOW_WINDOW}"))

    unit = "(data set, lr) units"
    add("propagation.synthesis_beats_plain", "Skip-connections synthesized where the coupling map shows shadows "
        "improve the final test metric of deep plain networks",
        "paired difference synthesized - plain within cells, seeds averaged per (data set, lr); t interval",
        "final test metric difference",
        _paired(frame, "synthesized", "plain", "final_test_metric", ["dataset", "lr"]), unit, 0.005)
    add("propagation.synthesis_beats_random", "Synthesized edges improve the final test metric more than the same "
        "number of randomly placed gated edges",
        "paired difference synthesized - random within cells, seeds averaged per (data set, lr); t interval",
        "final test metric difference",
        _paired(frame, "synthesized", "random", "final_test_metric", ["dataset", "lr"]), unit, 0.005)
    add("propagation.synthesis_lowers_lr_sensitivity", "Synthesized edges lower the dependence on the learning rate",
        "per (data set, seed): range over learning rates of the final test metric, plain - synthesized; t interval",
        "reduction of the learning-rate range", _lr_range_difference(frame, "synthesized", "plain"),
        "(data set, seed) units", 0.005)
    add("propagation.synthesis_restores_coherence",
        "Synthesized edges restore the coherence of curvature between blocks",
        "paired difference of the final global coherence (mean kappa over path pairs), synthesized - plain, seeds "
        "averaged per (data set, lr); t interval", "final coherence difference",
        _paired(frame, "synthesized", "plain", "coherence_last", ["dataset", "lr"]), unit, 0.01)
    return out


# --- figures ---------------------------------------------------------------------------------------

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
    """Final test metric against learning rate per arm (mean over seeds, bars: min-max), per data set."""
    df = con.sql("SELECT * FROM analysis_propagation_runs WHERE final_test_metric IS NOT NULL").pl()
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


FIGURES = {"propagation_coupling_maps": coupling_maps_figure, "propagation_shadow_graph": shadow_graph_figure,
           "propagation_arms": arms_figure, "propagation_families": families_figure}
CAPTIONS = {
    "propagation_coupling_maps": "Curvature coupling κ_ij = ||H_ij||_F / sqrt(||H_ii||_F ||H_jj||_F) of the loss "
                                 "Hessian at the stored checkpoints of one run (Rademacher probes, definition 9); "
                                 "red squares: pairs in shadow over the window of maps ending at that step.",
    "propagation_shadow_graph": "The same run's blocks and paths: grey arcs are the computational edges, green the "
                                "gated edges synthesis added (final gate value), red dashed the shadows of its last "
                                "window (relative coupling r below the threshold at the pair's path length).",
    "propagation_arms": "Final test metric of the four arms against the learning rate, per data set.",
    "propagation_families": "The coupling map of every family at its last snapshot: the MLP chain, its residual "
                            "template, the 1-D/2-D CNN and the Transformer encoder (blocks are parameter groups; "
                            "the residual stream links every Transformer sublayer to all later ones).",
}


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Sentences, the arm table and the trials summary."""
    n = con.execute("SELECT count(*), count(DISTINCT cell) FROM analysis_propagation_runs").fetchone()
    if not n[0]:
        return {"paragraphs": ["No run in this corpus has a coupling map (coupling_probes = 0 everywhere); "
                               "configs/propagation.toml has the study."], "tables": []}
    trials = con.execute("""SELECT count(*), count(DISTINCT t.run_id), sum(t.selected::INTEGER),
                                   avg(t.gain) FILTER (WHERE t.selected)
                            FROM augmentation_trials t JOIN runs r USING (run_id)
                            WHERE r.augment = 'synthesized'""").fetchone()
    shadows = con.execute("SELECT count(DISTINCT run_id), count(*) FROM shadows").fetchone()
    paragraphs = [
        f"{n[0]} runs in {n[1]} cells (data set, seed, learning rate) of deep plain networks, four arms each where "
        f"the config has them. {shadows[0]} runs show shadows in some window ({shadows[1]} pair-windows, threshold "
        f"{SHADOW_RATIO} of the median coupling at the same path length, {SHADOW_WINDOW} consecutive maps).",
        f"Synthesis ran {trials[0]} gentle trials in {trials[1]} synthesized runs and kept {trials[2] or 0} edges "
        f"(mean coherence gain of a kept edge {fmt_number(trials[3])}); each random run repeats its twin's trials "
        "only to add as many edges of the same kinds at random. A run whose map showed no shadow, or whose "
        "trials restored no coherence, adds none and trains exactly as its plain twin.",
    ]
    tables = [
        {"caption": "Per data set and arm (analysis_propagation): steps to target count a run that never reaches "
                    "the data set's target loss as its total steps",
         "sql": """SELECT dataset, arm, n_runs, round(final_test_metric, 4) AS test_metric,
                          round(final_train_loss, 4) AS train_loss, round(reached_fraction, 2) AS reached,
                          median_steps_to_target AS steps_to_target,
                          round(loss_variance_across_seeds, 5) AS loss_var_seeds,
                          round(lr_sensitivity, 4) AS lr_sensitivity, round(edges_added, 2) AS edges,
                          round(final_coherence, 3) AS coherence, round(final_shadows, 2) AS shadows
                   FROM analysis_propagation"""},
        {"caption": "Verdicts (analysis_propagation_verdicts)",
         "sql": """SELECT claim_id, effect_name, round(effect, 4) AS effect, round(ci_low, 4) AS ci_low,
                          round(ci_high, 4) AS ci_high, n, n_unit, verdict FROM analysis_propagation_verdicts"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
