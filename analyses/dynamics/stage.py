"""The dynamics stage's run: trajectories in long form by SQL, then per run the spectral change rates,
their segmentation into phases, and the verdicts."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import polars as pl

from analyses.dynamics.phases import segment_rates
from analyses.dynamics.segmentation import MIN_SEGMENT, noise_sigma, penalty
from analyses.dynamics.spectral_change import change_rates, log_rates, shape_distance, spectral_distance
from analyses.dynamics.verdicts import (
    MIN_INTERVALS_HUMP,
    concentration_verdict,
    four_phase_verdict,
    hump,
    permuted_hump,
    rise_fall_verdict,
)
from analyses.kit import features
from analyses.kit.tables import write_table, write_verdicts

#: The Hessian whose spectra define the rate of change (the local Hessian is exactly zero for ReLU).
SPECTRUM_KIND = "loss"
#: Below this many pooled first differences each series estimates its own σ.
MIN_POOLED_DIFFS = 20
#: Checkpoint columns traced at every metric checkpoint (run level).
CHECKPOINT_QUANTITIES = tuple(features.ALL_METRICS) + ("weight_norm", "grad_norm")
#: layer_stats columns traced per layer at every checkpoint.
LAYER_NORMS = ("weight_norm", "grad_norm")
#: Raw per-layer features traced at spectral snapshots.
LAYER_FEATURES = tuple(
    f"{p}_{s}" for p in ("loss", "local") for s in
    ("trace", "top", "effective_rank_ratio", "std", "near_zero_fraction", "negative_mass")
) + ("ggn_trace", "ggn_top", "ggn_effective_rank_ratio", "saturation_fraction", "weight_stable_rank",
     "gradient_pressure", "alignment")


def trajectories_sql() -> str:
    """The SELECT of ``analysis_dynamics``: checkpoint metrics, per-layer norms, layer-mean features
    and raw per-layer features unpivoted into (run_id, step, quantity, layer_index, value) rows."""
    ck = ", ".join(CHECKPOINT_QUANTITIES)
    ln = ", ".join(LAYER_NORMS)
    feats = list(features.FEATURES)
    run_level = ", ".join(f"{f.name} AS mean_{f.name}" for f in feats)
    slog = ", ".join(f"'mean_{f.name}'" for f in feats if f.log_scale) or "''"
    lf = ", ".join(LAYER_FEATURES)
    return f"""
        WITH ck AS (
            SELECT c.run_id, c.step, c.epoch, c.step::DOUBLE / greatest(r.total_steps, 1) AS progress,
                   {", ".join(f"c.{q}::DOUBLE AS {q}" for q in CHECKPOINT_QUANTITIES)}
            FROM checkpoints c JOIN runs r USING (run_id)
        ), ls AS (
            SELECT s.run_id, s.step, s.layer_index, c.epoch,
                   c.step::DOUBLE / greatest(r.total_steps, 1) AS progress,
                   {", ".join(f"s.{q}::DOUBLE AS {q}" for q in LAYER_NORMS)}
            FROM layer_stats s JOIN checkpoints c USING (run_id, step) JOIN runs r USING (run_id)
        ), af AS (
            SELECT run_id, step, epoch, progress, {run_level} FROM analysis_features
        ), afl AS (
            SELECT run_id, step, layer_index, epoch, progress, {lf} FROM analysis_features_layer
        ), long AS (
            SELECT run_id, step, epoch, progress, quantity, NULL::INTEGER AS layer_index, value,
                   'identity' AS transform
            FROM (UNPIVOT ck ON {ck} INTO NAME quantity VALUE value)
            UNION ALL
            SELECT run_id, step, epoch, progress, quantity, layer_index, value, 'identity'
            FROM (UNPIVOT ls ON {ln} INTO NAME quantity VALUE value)
            UNION ALL
            SELECT run_id, step, epoch, progress, quantity, NULL::INTEGER, value,
                   CASE WHEN quantity IN ({slog}) THEN 'slog' ELSE 'identity' END
            FROM (UNPIVOT af ON {", ".join(f"mean_{f.name}" for f in feats)} INTO NAME quantity VALUE value)
            UNION ALL
            SELECT run_id, step, epoch, progress, quantity, layer_index, value, 'identity'
            FROM (UNPIVOT afl ON {lf} INTO NAME quantity VALUE value)
        )
        SELECT run_id, step::INTEGER AS step, epoch, progress, quantity, layer_index::INTEGER AS layer_index,
               value::DOUBLE AS value, transform
        FROM long WHERE value IS NOT NULL AND isfinite(value)
        ORDER BY run_id, quantity, layer_index NULLS FIRST, step"""


def run_rates(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per run with finite SPECTRUM_KIND spectra: its status, the snapshot steps kept (n,), and per
    interval between them (n - 1,) the layer-mean scale-free distance (:func:`shape_distance`), the same
    mean of the scale-relative distance (:func:`spectral_distance`), the number of layers averaged and
    the rate of each.
    A snapshot whose interval has no comparable layer is dropped, so the chain stays connected."""
    rows = con.execute("""
        SELECT h.run_id, h.step, h.layer_index, h.eigenvalues, h.n_params, r.status, r.dataset
        FROM hessian_spectra h JOIN runs r USING (run_id)
        WHERE h.kind = ? AND h.eigenvalues IS NOT NULL AND len(h.eigenvalues) > 0
        ORDER BY h.run_id, h.step, h.layer_index""", [SPECTRUM_KIND]).fetchall()
    by_run: dict[str, dict] = {}
    for run_id, step, layer, ev, n_params, status, dataset in rows:
        lam = np.asarray(ev, float)
        if not np.isfinite(lam).all():
            continue
        entry = by_run.setdefault(run_id, {"status": status, "dataset": dataset or "", "snaps": {}})
        entry["snaps"].setdefault(int(step), {})[int(layer)] = (lam, n_params is not None and len(lam) >= n_params)
    out = []
    for run_id, entry in by_run.items():
        snaps = entry["snaps"]
        steps = sorted(snaps)
        keep_steps, keep_d, keep_rel, keep_n = steps[:1], [], [], []
        for s0, s1 in zip(steps[:-1], steps[1:], strict=True):
            common = sorted(set(snaps[s0]) & set(snaps[s1]))
            pairs = [(snaps[s0][layer][0], snaps[s1][layer][0], snaps[s0][layer][1] and snaps[s1][layer][1])
                     for layer in common]
            d = [(shape_distance(a, b, complete=c), spectral_distance(a, b, complete=c)) for a, b, c in pairs]
            d = [v for v in d if math.isfinite(v[0]) and math.isfinite(v[1])]
            if d:
                keep_steps.append(s1)
                keep_d.append(float(np.mean([v[0] for v in d])))
                keep_rel.append(float(np.mean([v[1] for v in d])))
                keep_n.append(len(d))
        distances, relative = np.asarray(keep_d, float), np.asarray(keep_rel, float)
        st = np.asarray(keep_steps, float)
        out.append({"run_id": run_id, "status": entry["status"], "dataset": entry["dataset"], "steps": keep_steps,
                    "distances": distances, "relative_distances": relative, "n_layers": keep_n,
                    "rates": change_rates(st, distances) if keep_d else np.empty(0),
                    "relative_rates": change_rates(st, relative) if keep_d else np.empty(0)})
    return out


def pooled_sigma(runs: list[dict]) -> float | None:
    """:func:`noise_sigma` over the log-rate series of every non-diverged run with >= 2 intervals; None
    (each run its own σ) when they have fewer than MIN_POOLED_DIFFS first differences in all."""
    series = [log_rates(r["rates"]) for r in runs if r["status"] != "diverged" and len(r["rates"]) >= 2]
    return noise_sigma(series) if sum(len(x) - 1 for x in series) >= MIN_POOLED_DIFFS else None


def segment_run(r: dict, sigma: float | None, bounds: tuple[int, int]) -> tuple[list[dict], list[dict], list[str]]:
    """The rate rows, phase rows and phase names of one run of :func:`run_rates`. ``bounds``: its first
    and last checkpoint step, which the first and last phase stretch to."""
    rates, steps = r["rates"], r["steps"]
    seg = segment_rates(rates, sigma=sigma)
    x = log_rates(rates)
    s_run = sigma if sigma is not None else noise_sigma([x])
    beta = penalty(s_run, len(x)) if len(x) >= 2 and math.isfinite(s_run) else math.nan
    lo, hi = bounds
    n_snap, last = len(steps), len(seg.phases) - 1
    phase_rows = []
    for p, (name, a, b) in enumerate(seg.phases):
        # snapshot k is in the phase of interval k -> k+1; the last snapshot in the last phase
        last_snap = n_snap - 1 if p == last else b
        start = min(lo, steps[0]) if p == 0 else steps[a]
        end = max(hi, steps[-1]) if p == last else steps[seg.phases[p + 1][1]] - 1
        phase_rows.append({"run_id": r["run_id"], "phase_index": p, "phase": name, "start_step": int(start),
                           "end_step": int(end), "n_snapshots": last_snap - a + 1,
                           "mean_rate": float(np.mean(rates[a:b + 1])) if len(rates) else None})
    rate_rows = []
    for k in range(len(rates)):
        d = float(r["distances"][k])
        rate_rows.append({"run_id": r["run_id"], "step_from": steps[k], "step_to": steps[k + 1], "distance": d,
                          "relative_distance": float(r["relative_distances"][k]),
                          "relative_rate": float(r["relative_rates"][k]),
                          "log_step_span": float(np.log1p(steps[k + 1]) - np.log1p(steps[k])),
                          "rate": float(rates[k]), "log_rate": float(x[k]),
                          "rate_per_step": d / (steps[k + 1] - steps[k]), "n_layers": r["n_layers"][k],
                          "segment_index": int(seg.segment[k]), "phase_index": int(seg.phase[k]),
                          "phase": seg.phases[int(seg.phase[k])][0],
                          "noise_sigma": s_run if math.isfinite(s_run) else None,
                          "penalty": beta if math.isfinite(beta) else None})
    return rate_rows, phase_rows, [name for name, _, _ in seg.phases]


def rise_fall_rows(runs: list[dict]) -> pl.DataFrame:
    """One row per non-diverged run of :func:`run_rates` with >= MIN_INTERVALS_HUMP intervals: run_id,
    dataset, n_intervals, the first/middle/last-third means of its log scale-free rate, ``hump``
    (:func:`hump`), ``hump_null`` (its mean over the run's intervals in random order,
    :func:`permuted_hump`) and ``hump_relative`` (the hump of the scale-relative distance's rate)."""
    rows = []
    for r in runs:
        if r["status"] == "diverged" or len(r["rates"]) < MIN_INTERVALS_HUMP:
            continue
        x = log_rates(r["rates"])
        first, mid, last = (float(t.mean()) for t in np.array_split(x, 3))
        rows.append({"run_id": r["run_id"], "dataset": r["dataset"], "n_intervals": len(x), "early": first,
                     "middle": mid, "late": last, "hump": hump(x), "hump_null": permuted_hump(x, r["run_id"]),
                     "hump_relative": hump(log_rates(r["relative_rates"]))})
    schema = {"run_id": pl.Utf8, "dataset": pl.Utf8, "n_intervals": pl.Int32, "early": pl.Float64,
              "middle": pl.Float64, "late": pl.Float64, "hump": pl.Float64, "hump_null": pl.Float64,
              "hump_relative": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort("run_id")


def _concentration_frame(con: duckdb.DuckDBPyConnection, kind: str) -> pl.DataFrame:
    """(run_id, dataset, layer_index, delta): Δ = ln(er_last / er_first) of the ``kind`` effective-rank ratio per
    (run, layer) between the run's first and last snapshot, where it is finite and positive at both (for
    the local Hessian also not exactly zero at either)."""
    zero = ("AND NOT coalesce(a.local_exactly_zero, false) AND NOT coalesce(b.local_exactly_zero, false)"
            if kind == "local" else "")
    return con.sql(f"""
        WITH ends AS (SELECT run_id, min(step) AS s0, max(step) AS s1 FROM analysis_features_layer
                      GROUP BY run_id HAVING min(step) < max(step))
        SELECT a.run_id, r.dataset, a.layer_index,
               ln(b.{kind}_effective_rank_ratio / a.{kind}_effective_rank_ratio) AS delta
        FROM ends e
        JOIN runs r ON r.run_id = e.run_id
        JOIN analysis_features_layer a ON a.run_id = e.run_id AND a.step = e.s0
        JOIN analysis_features_layer b ON b.run_id = e.run_id AND b.step = e.s1 AND b.layer_index = a.layer_index
        WHERE a.{kind}_effective_rank_ratio > 0 AND b.{kind}_effective_rank_ratio > 0
              AND isfinite(a.{kind}_effective_rank_ratio) AND isfinite(b.{kind}_effective_rank_ratio) {zero}
        ORDER BY a.run_id, a.layer_index""").pl()


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the trajectory, rate, phase and verdict tables."""
    write_table(con, "analysis_dynamics", trajectories_sql())
    runs = run_rates(con)
    bounds = {r: (lo, hi) for r, lo, hi in con.execute(
        "SELECT run_id, min(step), max(step) FROM checkpoints GROUP BY run_id").fetchall()}
    sigma = pooled_sigma(runs)
    rate_rows, phase_rows, sequences, intervals, resolved = [], [], [], [], []
    for r in runs:
        steps = r["steps"]
        rates, phases, names = segment_run(r, sigma, bounds.get(r["run_id"], (steps[0], steps[-1])))
        rate_rows += rates
        phase_rows += phases
        if r["status"] != "diverged" and len(steps) >= 2 * MIN_SEGMENT + 1:
            sequences.append(names)
            intervals.append(len(steps) - 1)
            resolved.append((r["run_id"], r["dataset"]))
    # every row is scanned for the column types (a column can be NULL in its first rows)
    write_table(con, "analysis_dynamics_rates",
                pl.DataFrame(rate_rows, infer_schema_length=None).sort("run_id", "step_from") if rate_rows
                else pl.DataFrame())
    write_table(con, "analysis_dynamics_phases",
                pl.DataFrame(phase_rows, infer_schema_length=None).sort("run_id", "phase_index") if phase_rows
                else pl.DataFrame())
    hump_rows = rise_fall_rows(runs)
    write_table(con, "analysis_dynamics_rise_fall", hump_rows)
    verdicts = [four_phase_verdict(sequences, intervals, resolved), rise_fall_verdict(hump_rows)]
    verdicts += [concentration_verdict(_concentration_frame(con, kind), kind) for kind in ("loss", "local")]
    write_verdicts(con, "dynamics", verdicts)
