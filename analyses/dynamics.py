"""Training dynamics: how every measured quantity of a run moves over its checkpoints, and a
segmentation of each run into training phases (initial, fast learning, fine-tuning, saturation;
paper 001 §5.3) by change points in the rate at which its loss-Hessian spectra change, with fewer
phases where the data show fewer. Phase boundaries are stored per run and drawn on the curves.

Tables
------
``analysis_dynamics``
    long form, one row per (run_id, step, quantity, layer_index): ``epoch``, ``progress`` (step /
    total_steps), ``value`` and ``transform``. Run-level rows (``layer_index`` NULL): the checkpoint
    metrics of :data:`CHECKPOINT_QUANTITIES` at every metric checkpoint (identity), and at spectral
    snapshots ``mean_<feature>`` for every feature of ``features.FEATURES``, taken from
    ``analysis_features``: the layer-mean of the feature's transform (``transform`` = ``slog`` for
    ``slog(x) = sign(x) ln(1 + |x|)`` features, else ``identity``). Layer-level rows: the per-layer
    norms of :data:`LAYER_NORMS` at every checkpoint and the raw per-layer features of
    :data:`LAYER_FEATURES` at spectral snapshots. Non-finite values (diverged runs) are left out.
``analysis_dynamics_rates``
    one row per run and interval between consecutive spectral snapshots k, k+1: ``step_from``,
    ``step_to``, ``distance`` (layer mean of d_l below), ``log_step_span`` = ln(s_{k+1}+1) - ln(s_k+1),
    ``rate``, ``log_rate``, ``rate_per_step`` = distance / (s_{k+1} - s_k) (for reference; not
    segmented), ``n_layers`` averaged, the raw segment (``segment_index``) and the phase it
    falls in (``phase_index``, ``phase``), and the ``noise_sigma`` and ``penalty`` the segmentation used.
``analysis_dynamics_phases``
    (run_id, phase_index, phase, start_step, end_step, n_snapshots, mean_rate): the phases of each run
    in order; they tile the run's steps (end_step = next start_step - 1; the first phase starts at the
    run's first checkpoint, the last ends at its last), so a snapshot (or checkpoint) at ``step`` is in
    the phase with start_step <= step <= end_step. ``mean_rate`` is the mean ``rate`` of the phase's
    intervals (NULL when it has none).
``analysis_dynamics_verdicts``
    the claims below.

Spectral change rate
--------------------
For layer l and consecutive snapshots k, k+1 with loss-Hessian block spectra (``hessian_spectra``
kind = :data:`SPECTRUM_KIND`) sorted in descending order, a = λ_k, b = λ_{k+1},

    d_l = ||b[:m] - a[:m]||_2 / (||a[:m]||_2 + ||b[:m]||_2)      (0 when both are 0; d_l in [0, 1])

with m the common length when both spectra are complete (every eigenvalue stored), else the common
top part m = min(len a, len b, :data:`PARTIAL_TOP_K`) (Lanczos rows store the top-k Ritz values and a
few bottom ones). d is scale-free: a spectrum multiplied by c moves by |c - 1| / (c + 1). The
snapshot distance is the mean of d_l over the layers present at both snapshots, and

    rate_k = d / (ln(s_{k+1} + 1) - ln(s_k + 1)),

the change per e-fold of training time. Snapshots are log-spaced, so each interval is an equal slice
of log-time; a spectrum that has stopped changing has rate -> 0 whenever that happens, whereas a rate
per optimizer step falls like 1/step for a spectrum that keeps changing at a steady pace in log-time
(the usual shape of training curves), and would call every long run saturated. ``rate_per_step`` is
stored beside it for comparison.

Change points (exact optimal partitioning)
------------------------------------------
The series x_k = ln(max(rate_k, :data:`RATE_FLOOR`)) (multiplicative changes and noise become
additive) is split into at most :data:`MAX_CHANGES` + 1 segments of at least :data:`MIN_SEGMENT`
intervals, each fitted by its mean, by dynamic programming over all segmentations:

    minimize over k <= MAX_CHANGES and τ_1 < ... < τ_k:  Σ_segments Σ_t (x_t - mean_seg)² + k β,
    β = :data:`PENALTY_C` · σ² · ln(n),

n the series length. σ is the noise scale of x: σ = 1.4826 · median|x_{t+1} - x_t| / √2 (the MAD of
first differences, uncentred, so that a smooth drift counts as variation rather than a staircase),
pooled over the first differences of every non-diverged run's series (:func:`noise_sigma`); a
single short series (about 10 points) gives too noisy a σ for a stable penalty, so each run uses the
pooled σ, and its own only when fewer than :data:`MIN_POOLED_DIFFS` differences exist in all.
Calibration by simulation (Gaussian noise, C = 5, min segment 2): with the noise σ known, a change
point is found in pure noise in 0.3 % of series at n = 9, 0.2 % at n = 12, < 0.1 % at n >= 20 (with a
per-series σ: 6 %, 4 %, 2 %); shifts of 5σ (1-3 of them, segments of 2-15 points) are recovered
exactly, each within one index, in >= 98 % of series, shifts of 4σ in 86-98 %. Series shorter than
2·MIN_SEGMENT have no change point. This assumes the noise of the log rate is alike across runs;
an unusually noisy run can get spurious phases.

Naming (pure rule, :func:`name_segments`)
-----------------------------------------
Segments are compared by their mean rate r_j. The segment with the highest r_j is
"fast learning"; every segment before it is "initial"; a segment after it is "saturation" if
r_j < :data:`SATURATION_FRACTION` · max r, else "fine-tuning". Adjacent segments with the same name
are merged into one phase. No change point gives one phase, "single phase". Snapshot k belongs to
the phase of the interval starting at it (k -> k+1); the last snapshot to the last phase.

Verdicts
--------
- 001 §5.3 (four phases): the share of runs whose phases are exactly (initial, fast learning,
  fine-tuning, saturation), over non-diverged runs with at least 2·MIN_SEGMENT + 1 snapshots (fewer
  cannot have a change point); Wilson 95% interval against the null 0.5 ("most runs show four
  phases"), predicted above.
- 001 Claim 1 / §5.1 (concentration): for every (run, layer), Δ = ln(er_last / er_first), the log
  change of the effective-rank ratio Σ|λ|/max|λ|/dim from the first to the last snapshot, for the
  loss-Hessian block and for the local Hessian (layers where it is not exactly zero at either
  snapshot; above the exact limit the engine's effective rank is its SLQ-density estimate).
  Concentration predicts Δ < 0. Effect: the mean Δ over pairs, 95% cluster bootstrap by
  run; n = runs; no interval (inconclusive) with fewer than :data:`MIN_VERDICT_RUNS` runs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns

from analyses import features
from analyses.verdicts import Verdict, cluster_bootstrap, wilson_ci, write_verdicts

READS = ("runs", "checkpoints", "layers", "layer_stats", "hessian_spectra", "analysis_features",
         "analysis_features_layer")
WRITES = ("analysis_dynamics", "analysis_dynamics_rates", "analysis_dynamics_phases",
          "analysis_dynamics_verdicts")
TITLE = "Training dynamics and phases"

#: The Hessian whose spectra define the rate of change (the local Hessian is exactly zero for ReLU).
SPECTRUM_KIND = "loss"
#: Common top part compared when a spectrum is incomplete (the engine's Lanczos top-k).
PARTIAL_TOP_K = 8
#: Floor of the rate before the logarithm (a rate of 1e-6 per e-fold is "no change").
RATE_FLOOR = 1e-6
#: At most this many change points (four phases).
MAX_CHANGES = 3
#: Minimum number of rate intervals in a segment.
MIN_SEGMENT = 2
#: Penalty per change point: PENALTY_C · σ² · ln(n).
PENALTY_C = 5.0
#: MAD -> standard deviation for Gaussian noise.
MAD_TO_SIGMA = 1.4826
#: Below this many pooled first differences each series estimates its own σ.
MIN_POOLED_DIFFS = 20
#: After the peak, a segment slower than this fraction of the peak rate is "saturation".
SATURATION_FRACTION = 0.25
#: The paper's phases, in order, and the name of an unsegmented run.
PHASES = ("initial", "fast learning", "fine-tuning", "saturation")
SINGLE_PHASE = "single phase"
#: Null share of runs with the four-phase sequence ("most runs show four phases").
FOUR_PHASE_NULL = 0.5
#: Fewer runs than this give no interval for the concentration verdicts (a bootstrap over 3-4
#: clusters has too few distinct resamples to mean anything).
MIN_VERDICT_RUNS = 5
#: Snapshot intervals a run needs for the four-phase verdict: four phases of at least MIN_SEGMENT + 1
#: intervals each, so that every phase has more than the minimum and its level can be told apart.
MIN_INTERVALS_FOUR_PHASES = 4 * (MIN_SEGMENT + 1)

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
#: At most this many runs in the curves figure (one per architecture).
MAX_CURVE_PANELS = 8
#: Colours of the phases in the figures.
PHASE_COLORS = {"initial": "#56B4E9", "fast learning": "#E69F00", "fine-tuning": "#009E73",
                "saturation": "#999999", SINGLE_PHASE: "#CC79A7"}


# --- pure math ------------------------------------------------------------------------------------

def spectral_distance(a: np.ndarray, b: np.ndarray, complete: bool = True) -> float:
    """Scale-free distance of two spectra: ||b[:m] - a[:m]|| / (||a[:m]|| + ||b[:m]||), both sorted
    descending; m = common length when ``complete`` else min(len a, len b, PARTIAL_TOP_K).

    a: (p,), b: (q,). Returns a value in [0, 1] (0 when both parts are zero), NaN when m = 0 or a value
    is not finite.
    """
    a = np.sort(np.asarray(a, float))[::-1]
    b = np.sort(np.asarray(b, float))[::-1]
    m = min(len(a), len(b)) if complete else min(len(a), len(b), PARTIAL_TOP_K)
    if m == 0:
        return math.nan
    a, b = a[:m], b[:m]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    den = float(np.linalg.norm(a) + np.linalg.norm(b))
    return 0.0 if den == 0 else float(np.linalg.norm(b - a) / den)


def change_rates(steps: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """rate_k = distance_k / (ln(steps[k+1] + 1) - ln(steps[k] + 1)).

    steps: (n,) increasing; distances: (n - 1,). Returns (n - 1,)."""
    steps = np.asarray(steps, float)
    span = np.diff(np.log1p(steps))
    return np.asarray(distances, float) / span


def noise_sigma(series: Sequence[np.ndarray]) -> float:
    """σ = MAD_TO_SIGMA · median|Δx| / √2 over the first differences of all ``series`` pooled
    (uncentred MAD of differences). NaN when there are no differences."""
    diffs = [np.abs(np.diff(np.asarray(x, float))) for x in series if len(x) >= 2]
    pooled = np.concatenate(diffs) if diffs else np.empty(0)
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(pooled) / math.sqrt(2))


def optimal_partitions(values: np.ndarray, max_changes: int = MAX_CHANGES,
                       min_segment: int = MIN_SEGMENT) -> dict[int, tuple[float, list[int]]]:
    """For every feasible number of change points k <= max_changes, the least squared error of a
    piecewise-constant fit with k change points and segments of >= min_segment values, by dynamic
    programming (exact): C_k(j) = min_i C_{k-1}(i) + SSE(i, j), SSE(i, j) = Σ_{i<=t<j} (x_t - mean)².

    values: (n,). Returns {k: (sse, [τ_1, ..., τ_k])}, τ the index where a new segment starts.
    """
    x = np.asarray(values, float)
    n = len(x)
    cs = np.concatenate([[0.0], np.cumsum(x)])
    cs2 = np.concatenate([[0.0], np.cumsum(x * x)])

    def sse(i, j: int):
        s = cs[j] - cs[i]
        return np.maximum((cs2[j] - cs2[i]) - s * s / (j - i), 0.0)

    cost = np.full((max_changes + 1, n + 1), np.inf)
    arg = np.zeros((max_changes + 1, n + 1), dtype=int)
    for j in range(min_segment, n + 1):
        cost[0, j] = sse(0, j)
    for k in range(1, max_changes + 1):
        for j in range((k + 1) * min_segment, n + 1):
            i = np.arange(k * min_segment, j - min_segment + 1)
            c = cost[k - 1, i] + sse(i, j)
            best = int(np.argmin(c))
            cost[k, j], arg[k, j] = c[best], i[best]
    out = {}
    for k in range(max_changes + 1):
        if n >= 1 and np.isfinite(cost[k, n]):
            taus, j = [], n
            for kk in range(k, 0, -1):
                j = int(arg[kk, j])
                taus.append(j)
            out[k] = (float(cost[k, n]), sorted(taus))
    return out


def change_points(values: np.ndarray, max_changes: int = MAX_CHANGES, min_segment: int = MIN_SEGMENT,
                  penalty_c: float = PENALTY_C, sigma: float | None = None) -> list[int]:
    """Change points of a piecewise-constant signal: the k <= max_changes and positions minimizing
    SSE_k + k β, β = penalty_c · σ² · ln(n) (see the module doc). ``sigma`` defaults to the series'
    own :func:`noise_sigma`. values: (n,), finite. Returns the start indices of segments 2..k+1
    (empty for no change, or when n < 2 · min_segment)."""
    x = np.asarray(values, float)
    n = len(x)
    if n < 2 * min_segment or not np.isfinite(x).all():
        return []
    s = noise_sigma([x]) if sigma is None or not math.isfinite(sigma) else float(sigma)
    beta = penalty_c * s * s * math.log(n)
    parts = optimal_partitions(x, max_changes, min_segment)
    best = min(parts, key=lambda k: (parts[k][0] + k * beta, k))
    return parts[best][1]


def segment_means(values: np.ndarray, cps: Sequence[int]) -> np.ndarray:
    """Mean of ``values`` (n,) on each segment [0, τ_1), [τ_1, τ_2), ..., [τ_k, n). Returns (k + 1,)."""
    bounds = [0, *cps, len(values)]
    return np.array([float(np.mean(values[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def name_segments(mean_rates: Sequence[float], saturation_fraction: float = SATURATION_FRACTION) -> list[str]:
    """Names of consecutive segments from their mean rates r_j (see the module doc): the fastest is
    "fast learning", those before it "initial", those after it "saturation" if r_j < fraction · max r
    else "fine-tuning"; a single segment is "single phase"."""
    r = np.asarray(mean_rates, float)
    if len(r) <= 1:
        return [SINGLE_PHASE] * len(r)
    peak = int(np.nanargmax(r))
    names = []
    for j, v in enumerate(r):
        if j < peak:
            names.append("initial")
        elif j == peak:
            names.append("fast learning")
        else:
            names.append("saturation" if v < saturation_fraction * r[peak] else "fine-tuning")
    return names


@dataclass(frozen=True)
class Segmentation:
    """Result for one run: per rate interval its raw segment and merged phase index, and the phases
    (name, first interval, last interval)."""

    segment: np.ndarray
    phase: np.ndarray
    phases: list[tuple[str, int, int]]


def segment_rates(rates: np.ndarray, sigma: float | None = None) -> Segmentation:
    """Change points of ln(max(rate, RATE_FLOOR)), segments named by :func:`name_segments` on their
    mean rates, adjacent equal names merged. rates: (n,) finite. Intervals are indexed 0..n-1."""
    r = np.asarray(rates, float)
    n = len(r)
    cps = change_points(np.log(np.maximum(r, RATE_FLOOR)), sigma=sigma) if n else []
    bounds = [0, *cps, n]
    segment = np.zeros(n, dtype=int)
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        segment[a:b] = j
    names = name_segments(segment_means(r, cps)) if n else [SINGLE_PHASE]
    phases: list[tuple[str, int, int]] = []
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if phases and phases[-1][0] == names[j]:
            phases[-1] = (names[j], phases[-1][1], b - 1)
        else:
            phases.append((names[j], a, b - 1))
    phase = np.zeros(n, dtype=int)
    for p, (_, a, b) in enumerate(phases):
        phase[a:b + 1] = p
    return Segmentation(segment, phase, phases)


def log_change(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Δ = ln(last / first) elementwise; NaN where either is not finite and positive. (n,) -> (n,)."""
    first, last = np.asarray(first, float), np.asarray(last, float)
    ok = np.isfinite(first) & np.isfinite(last) & (first > 0) & (last > 0)
    out = np.full(first.shape, np.nan)
    out[ok] = np.log(last[ok] / first[ok])
    return out


# --- verdicts ------------------------------------------------------------------------------------

def four_phase_verdict(sequences: Sequence[Sequence[str]], n_intervals: Sequence[int] | None = None) -> Verdict:
    """Share of runs whose phase sequence is exactly PHASES, Wilson interval, null FOUR_PHASE_NULL, over
    the runs with at least :data:`MIN_INTERVALS_FOUR_PHASES` snapshot intervals (``n_intervals``, one per
    sequence; all runs when None). With fewer than MIN_VERDICT_RUNS such runs there is no interval: a
    run too short to resolve four phases is no evidence against them."""
    n_intervals = [MIN_INTERVALS_FOUR_PHASES] * len(sequences) if n_intervals is None else list(n_intervals)
    resolved = [s for s, m in zip(sequences, n_intervals, strict=True) if m >= MIN_INTERVALS_FOUR_PHASES]
    n = len(resolved)
    k = sum(tuple(s) == PHASES for s in resolved)
    p, lo, hi = wilson_ci(k, n)
    counts = Counter(len(s) for s in sequences)
    dist = ", ".join(f"{c} phase{'s' if c > 1 else ''}: {counts[c]}" for c in sorted(counts))
    short = ""
    if n < MIN_VERDICT_RUNS:
        lo = hi = math.nan
        short = (f"; only {n} runs have >= {MIN_INTERVALS_FOUR_PHASES} intervals between spectral snapshots "
                 f"(max here {max(n_intervals, default=0)}): too few to resolve four phases of >= "
                 f"{MIN_SEGMENT} intervals with this rule; raise spectral_snapshots to >= "
                 f"{MIN_INTERVALS_FOUR_PHASES + 1}")
    return Verdict(
        claim_id="dynamics.four_phases", source="001 §5.3",
        claim="Training passes through four phases: initial, fast learning, fine-tuning, saturation",
        test=("share of runs whose change-point segmentation of the loss-Hessian spectral change rate gives "
              "exactly the four phases in order; Wilson 95% interval vs 0.5 (most runs)"),
        effect_name="share of runs with the four phases", predicted="positive",
        effect=p, ci_low=lo, ci_high=hi, n=n, n_unit="runs", null_value=FOUR_PHASE_NULL,
        detail=f"{k} of {n} resolved runs; phases per run (all runs): {dist or 'none'}{short}")


def concentration_verdict(frame: pl.DataFrame, kind: str) -> Verdict:
    """Mean Δ = ln(er_last / er_first) over (run, layer) rows of ``frame`` (columns run_id, delta),
    cluster bootstrap by run; predicted negative."""
    frame = frame.filter(pl.col("delta").is_finite())
    what = {"loss": "loss-Hessian block", "local": "local Hessian (layers where it is not exactly zero)"}[kind]
    if frame.height:
        per_run = frame.group_by("run_id", maintain_order=True).agg(
            pl.col("delta").sum().alias("s"), pl.len().alias("c"))
        est, lo, hi, n = cluster_bootstrap(per_run, "run_id", lambda f: float(f["s"].sum() / f["c"].sum()))
        if n < MIN_VERDICT_RUNS:
            lo = hi = math.nan
    else:
        est, lo, hi, n = math.nan, math.nan, math.nan, 0
    return Verdict(
        claim_id=f"dynamics.concentration_{kind}", source="001 Claim 1 / §5.1",
        claim=("Eigenvalues become more concentrated as training proceeds (early spectra are more uniform)"
               + (" — tested on the loss-Hessian block, an analogue of the paper's local Hessian" if kind == "loss"
                  else "")),
        test=(f"per (run, layer), log change of the {what} effective-rank ratio Σ|λ|/max|λ|/dim from the first "
              "to the last spectral snapshot; mean over pairs, 95% cluster bootstrap by run"),
        effect_name="mean ln(effective rank last / first)", predicted="negative",
        effect=est, ci_low=lo, ci_high=hi, n=n, n_unit="runs",
        detail=(f"{frame.height} (run, layer) pairs; {int((frame['delta'] < 0).sum())} decrease"
                if frame.height else "no (run, layer) pair with positive effective rank at both ends"))


# --- the stage -----------------------------------------------------------------------------------

def _trajectories(con: duckdb.DuckDBPyConnection) -> None:
    ck = ", ".join(CHECKPOINT_QUANTITIES)
    ln = ", ".join(LAYER_NORMS)
    feats = [f for f in features.FEATURES]
    run_level = ", ".join(f"{f.name} AS mean_{f.name}" for f in feats)
    slog = ", ".join(f"'mean_{f.name}'" for f in feats if f.log_scale) or "''"
    lf = ", ".join(LAYER_FEATURES)
    con.execute(f"""
        CREATE OR REPLACE TABLE analysis_dynamics AS
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
        ORDER BY run_id, quantity, layer_index NULLS FIRST, step""")


def _run_rates(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per run: snapshot steps, interval distances/rates (finite spectra only)."""
    rows = con.execute("""
        SELECT h.run_id, h.step, h.layer_index, h.eigenvalues, h.n_params, r.status
        FROM hessian_spectra h JOIN runs r USING (run_id)
        WHERE h.kind = ? AND h.eigenvalues IS NOT NULL AND len(h.eigenvalues) > 0
        ORDER BY h.run_id, h.step, h.layer_index""", [SPECTRUM_KIND]).fetchall()
    by_run: dict[str, dict] = {}
    for run_id, step, layer, ev, n_params, status in rows:
        lam = np.asarray(ev, float)
        if not np.isfinite(lam).all():
            continue
        entry = by_run.setdefault(run_id, {"status": status, "snaps": {}})
        entry["snaps"].setdefault(int(step), {})[int(layer)] = (lam, n_params is not None and len(lam) >= n_params)
    out = []
    for run_id, entry in by_run.items():
        snaps = entry["snaps"]
        steps = sorted(snaps)
        dists, n_layers = [], []
        for s0, s1 in zip(steps[:-1], steps[1:], strict=True):
            common = sorted(set(snaps[s0]) & set(snaps[s1]))
            d = [spectral_distance(snaps[s0][layer][0], snaps[s1][layer][0],
                                   complete=snaps[s0][layer][1] and snaps[s1][layer][1]) for layer in common]
            d = [v for v in d if math.isfinite(v)]
            dists.append(float(np.mean(d)) if d else math.nan)
            n_layers.append(len(d))
        # drop snapshots whose interval has no comparable layer (keep the chain connected)
        keep_steps = [steps[0]] if steps else []
        keep_d, keep_n = [], []
        for s1, d, k in zip(steps[1:], dists, n_layers, strict=True):
            if math.isfinite(d):
                keep_steps.append(s1)
                keep_d.append(d)
                keep_n.append(k)
        st = np.asarray(keep_steps, float)
        out.append({"run_id": run_id, "status": entry["status"], "steps": keep_steps,
                    "distances": np.asarray(keep_d, float), "n_layers": keep_n,
                    "rates": change_rates(st, np.asarray(keep_d, float)) if len(keep_d) else np.empty(0)})
    return out


def _log_rates(rates: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(rates, float), RATE_FLOOR))


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the trajectory, rate, phase and verdict tables."""
    _trajectories(con)
    runs = _run_rates(con)
    bounds = dict(((r, (lo, hi)) for r, lo, hi in con.execute(
        "SELECT run_id, min(step), max(step) FROM checkpoints GROUP BY run_id").fetchall()))
    healthy = [r for r in runs if r["status"] != "diverged"]
    pooled_series = [_log_rates(r["rates"]) for r in healthy if len(r["rates"]) >= 2]
    n_diffs = sum(len(x) - 1 for x in pooled_series)
    sigma = noise_sigma(pooled_series) if n_diffs >= MIN_POOLED_DIFFS else None

    rate_rows, phase_rows, sequences, intervals = [], [], [], []
    for r in runs:
        rates, steps = r["rates"], r["steps"]
        if not steps:
            continue
        seg = segment_rates(rates, sigma=sigma)
        x = _log_rates(rates)
        s_run = sigma if sigma is not None else noise_sigma([x])
        penalty = PENALTY_C * s_run**2 * math.log(len(x)) if len(x) >= 2 and math.isfinite(s_run) else math.nan
        lo, hi = bounds.get(r["run_id"], (steps[0], steps[-1]))
        n_snap = len(steps)
        for p, (name, a, b) in enumerate(seg.phases):
            first_snap = a
            last_snap = n_snap - 1 if p == len(seg.phases) - 1 else b
            start = min(lo, steps[0]) if p == 0 else steps[first_snap]
            end = max(hi, steps[-1]) if p == len(seg.phases) - 1 else steps[seg.phases[p + 1][1]] - 1
            mean_rate = float(np.mean(rates[a:b + 1])) if len(rates) else None
            phase_rows.append({"run_id": r["run_id"], "phase_index": p, "phase": name, "start_step": int(start),
                               "end_step": int(end), "n_snapshots": last_snap - first_snap + 1,
                               "mean_rate": mean_rate})
        for k in range(len(rates)):
            rate_rows.append({"run_id": r["run_id"], "step_from": steps[k], "step_to": steps[k + 1],
                              "distance": float(r["distances"][k]),
                              "log_step_span": float(np.log1p(steps[k + 1]) - np.log1p(steps[k])),
                              "rate": float(rates[k]), "log_rate": float(x[k]),
                              "rate_per_step": float(r["distances"][k]) / (steps[k + 1] - steps[k]),
                              "n_layers": r["n_layers"][k],
                              "segment_index": int(seg.segment[k]), "phase_index": int(seg.phase[k]),
                              "phase": seg.phases[int(seg.phase[k])][0],
                              "noise_sigma": s_run if math.isfinite(s_run) else None,
                              "penalty": penalty if math.isfinite(penalty) else None})
        if r["status"] != "diverged" and n_snap >= 2 * MIN_SEGMENT + 1:
            sequences.append([name for name, _, _ in seg.phases])
            intervals.append(n_snap - 1)

    rates_schema = {"run_id": pl.Utf8, "step_from": pl.Int32, "step_to": pl.Int32, "distance": pl.Float64,
                    "log_step_span": pl.Float64, "rate": pl.Float64, "log_rate": pl.Float64,
                    "rate_per_step": pl.Float64, "n_layers": pl.Int32, "segment_index": pl.Int32,
                    "phase_index": pl.Int32, "phase": pl.Utf8,
                    "noise_sigma": pl.Float64, "penalty": pl.Float64}
    rates_frame = pl.DataFrame(rate_rows, schema=rates_schema)  # noqa: F841
    con.execute("CREATE OR REPLACE TABLE analysis_dynamics_rates AS SELECT * FROM rates_frame "
                "ORDER BY run_id, step_from")
    phase_schema = {"run_id": pl.Utf8, "phase_index": pl.Int32, "phase": pl.Utf8, "start_step": pl.Int32,
                    "end_step": pl.Int32, "n_snapshots": pl.Int32, "mean_rate": pl.Float64}
    phase_frame = pl.DataFrame(phase_rows, schema=phase_schema)  # noqa: F841
    con.execute("""CREATE OR REPLACE TABLE analysis_dynamics_phases (run_id VARCHAR, phase_index INTEGER,
                   phase VARCHAR, start_step INTEGER, end_step INTEGER, n_snapshots INTEGER, mean_rate DOUBLE)""")
    con.execute("INSERT INTO analysis_dynamics_phases SELECT * FROM phase_frame ORDER BY run_id, phase_index")

    verdicts = [four_phase_verdict(sequences, intervals)]
    for kind in ("loss", "local"):
        zero = ("AND NOT coalesce(a.local_exactly_zero, false) AND NOT coalesce(b.local_exactly_zero, false)"
                if kind == "local" else "")
        frame = con.sql(f"""
            WITH ends AS (SELECT run_id, min(step) AS s0, max(step) AS s1 FROM analysis_features_layer
                          GROUP BY run_id HAVING min(step) < max(step))
            SELECT a.run_id, a.layer_index,
                   ln(b.{kind}_effective_rank_ratio / a.{kind}_effective_rank_ratio) AS delta
            FROM ends e
            JOIN analysis_features_layer a ON a.run_id = e.run_id AND a.step = e.s0
            JOIN analysis_features_layer b ON b.run_id = e.run_id AND b.step = e.s1 AND b.layer_index = a.layer_index
            WHERE a.{kind}_effective_rank_ratio > 0 AND b.{kind}_effective_rank_ratio > 0
                  AND isfinite(a.{kind}_effective_rank_ratio) AND isfinite(b.{kind}_effective_rank_ratio) {zero}
            ORDER BY a.run_id, a.layer_index""").pl()
        verdicts.append(concentration_verdict(frame, kind))
    write_verdicts(con, "dynamics", verdicts)


# --- figures -------------------------------------------------------------------------------------

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


FIGURES = {
    "dynamics_curves": curves_figure,
    "dynamics_phase_spectra": phase_spectra_figure,
    "dynamics_phase_counts": phase_counts_figure,
}
CAPTIONS = {
    "dynamics_curves": (
        "One run per architecture: train (dashed) and test (solid) loss, the rate at which the loss-Hessian "
        "spectra change per e-fold of training time between consecutive spectral snapshots (red steps, "
        "right axis), and the phases found by change points in that rate (shaded; dotted lines are boundaries)."),
    "dynamics_phase_spectra": (
        "Eigenvalues of complete loss-Hessian (filled) and local-Hessian (outlined; layers where it is not "
        "exactly zero) spectra, each divided by its largest |λ|, pooled by training phase (columns) and layer "
        "position (rows), each spectrum weighted equally; log y. Claims 1-2 of paper 001 predict mass piling "
        "near zero as training proceeds."),
    "dynamics_phase_counts": (
        "Runs by number of phases found, stacked by the sequence of phase names (the six most common); the "
        "paper predicts initial → fast learning → fine-tuning → saturation."),
}


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Sentences from the phase and rate tables, and the phases-per-run table."""
    per_run = con.execute("""
        SELECT run_id, count(*) AS n, string_agg(phase, ' → ' ORDER BY phase_index) AS seq
        FROM analysis_dynamics_phases GROUP BY run_id""").fetchall()
    paragraphs = []
    if per_run:
        counts = Counter(n for _, n, _ in per_run)
        full = sum(seq == " → ".join(PHASES) for _, _, seq in per_run)
        dist = "; ".join(f"{counts[k]} with {k} phase{'s' if k > 1 else ''}" for k in sorted(counts))
        paragraphs.append(f"Of {len(per_run)} runs with spectral snapshots, {dist}; {full} show the paper's "
                          f"four phases in order (initial, fast learning, fine-tuning, saturation).")
        seqs = Counter(seq for _, _, seq in per_run).most_common(3)
        paragraphs.append("Most common phase sequences: " + "; ".join(f"{s} ({c} runs)" for s, c in seqs) + ".")
        starts = con.execute("""
            SELECT p.phase, count(*), median(p.start_step::DOUBLE / greatest(r.total_steps, 1))
            FROM analysis_dynamics_phases p JOIN runs r USING (run_id)
            WHERE p.phase_index > 0 GROUP BY p.phase ORDER BY min(p.phase_index), p.phase""").fetchall()
        if starts:
            paragraphs.append("Median start of each phase as a fraction of training (runs where it is not "
                              "the first phase): " + "; ".join(f"{ph} {m:.2f} (n = {n})" for ph, n, m in starts)
                              + ".")
        rate = con.execute("""SELECT any_value(noise_sigma), any_value(penalty), count(*),
                                     count(DISTINCT run_id) FROM analysis_dynamics_rates""").fetchall()[0]
        if rate[2]:
            paragraphs.append(f"The segmentation used {rate[2]} rate intervals of {rate[3]} runs; noise scale of "
                              f"the log rate σ = {rate[0]:.3g} (pooled MAD of first differences), penalty "
                              f"{PENALTY_C:g}·σ²·ln n per change point, at most {MAX_CHANGES} change points, "
                              f"segments of at least {MIN_SEGMENT} intervals."
                              if rate[0] is not None else
                              f"The segmentation used {rate[2]} rate intervals of {rate[3]} runs.")
    else:
        paragraphs.append("No run has spectral snapshots to segment.")
    tables = [
        {"caption": "Phases by architecture: runs, mean number of phases, and runs with the paper's four phases",
         "sql": f"""
            WITH n AS (SELECT run_id, count(*) AS n_phases,
                              string_agg(phase, ' → ' ORDER BY phase_index) = '{" → ".join(PHASES)}' AS four
                       FROM analysis_dynamics_phases GROUP BY run_id),
                 a AS (SELECT DISTINCT run_id, architecture FROM analysis_features)
            SELECT a.architecture, count(*) AS runs, round(avg(n.n_phases), 2) AS mean_phases,
                   sum(n.four::INTEGER) AS four_phase_runs
            FROM n JOIN a USING (run_id) GROUP BY a.architecture ORDER BY a.architecture LIMIT 60"""},
        {"caption": "Phases per run (boundaries are phase start steps; at most 60 runs)",
         "sql": """
            SELECT p.run_id, r.dataset, r.size, r.activation, r.norm, r.total_steps, count(*) AS n_phases,
                   string_agg(p.phase, ' → ' ORDER BY p.phase_index) AS phases,
                   string_agg(p.start_step::VARCHAR, ', ' ORDER BY p.phase_index) AS start_steps,
                   round(max(p.mean_rate), 3) AS peak_rate
            FROM analysis_dynamics_phases p JOIN runs r USING (run_id)
            GROUP BY ALL ORDER BY n_phases DESC, r.dataset, p.run_id LIMIT 60"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
