"""The dynamics stage's verdicts: the four-phase sequence and the rise-then-fall of the spectral change
rate (001 §5.3), and the concentration of the Hessian spectra over training (001 Claim 1 / §5.1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl

from analyses.dynamics.phases import PHASES
from analyses.dynamics.segmentation import MIN_SEGMENT
from analyses.stats import ClaimData, Estimate, Verdict, mean_ci, wilson_ci

#: Null share of runs with the four-phase sequence ("most runs show four phases").
FOUR_PHASE_NULL = 0.5
#: Fewer runs than this give no interval (a bootstrap over 3-4 clusters has too few distinct
#: resamples to mean anything, and a share of so few runs says as little).
MIN_VERDICT_RUNS = 5
#: Snapshot intervals a run needs for the four-phase verdict: four phases of at least MIN_SEGMENT + 1
#: intervals each, so that every phase has more than the minimum and its level can be told apart.
MIN_INTERVALS_FOUR_PHASES = 4 * (MIN_SEGMENT + 1)
#: Snapshot intervals a run needs for the rise-then-fall test: thirds of at least 2 intervals each.
MIN_INTERVALS_HUMP = 6
#: |hump| below this (a log ratio: the middle third's rate within ~10 % of the outer thirds') is negligible.
HUMP_NEGLIGIBLE = 0.1


def hump(x: np.ndarray) -> float:
    """Rise-then-fall of one run's log change-rate series x (n,), n >= 3, in time order:

        hump = min(mean(x[middle third]) - mean(x[first third]), mean(x[middle third]) - mean(x[last third])),

    thirds by interval index (``np.array_split(x, 3)``: sizes differ by at most one, the first ones
    larger). Snapshots are log-spaced, so the thirds are near-equal slices of log-time. x is a log rate,
    so each difference is the log ratio of (geometric-mean) rates: hump > 0 only when the middle third is
    faster than both the first (a rise) and the last (a fall); a monotone series has hump <= 0 whatever
    its curvature (a concave fall, flat then dropping, is no rise). For pure noise E[hump] < 0 (the min
    of two centred differences), so the test errs against the claim."""
    first, mid, last = (float(t.mean()) for t in np.array_split(np.asarray(x, float), 3))
    return min(mid - first, mid - last)


def rise_fall_verdict(runs: pl.DataFrame) -> Verdict:
    """Mean over runs of :func:`hump` (``runs``: one row per non-diverged run with >= MIN_INTERVALS_HUMP
    intervals: run_id, dataset, hump, and optionally hump_relative, the same on the scale-relative
    distance), t interval over runs, predicted positive; the run rows go to the two-level assessment.
    No baseline: the confound the raw rate carried, the shrinking scale of the spectra, is removed by
    the scale-free distance itself (a spectrum that only shrinks has rate 0)."""
    h = runs["hump"].to_numpy().astype(float) if runs.height else np.empty(0)
    mean = mean_ci(h, "runs")
    enough = runs.height >= MIN_VERDICT_RUNS
    if not enough:
        mean = Estimate.missing(mean.n, "runs", mean.value)
    data = (ClaimData(runs.select("run_id", "dataset"), lambda idx: float(h[idx].mean()),
                      confound="spectral scale (removed by the scale-free distance)") if enough else None)
    rel = ""
    if runs.height and "hump_relative" in runs.columns:
        hr = runs["hump_relative"].to_numpy().astype(float)
        rel = f"; on the scale-relative distance instead: mean {np.nanmean(hr):+.3f}, {int((hr > 0).sum())} runs > 0"
    return Verdict.of(
        mean, "dynamics.rise_then_fall", "001 §5.3",
        ("The spectra change slowly at first, fastest during fast learning, then slower in fine-tuning and "
         "saturation: the change rate rises then falls"),
        ("per run, the mean log scale-free change rate of the loss-Hessian spectra over the middle third of "
         "its snapshot intervals minus the larger of the first- and last-third means (> 0: rises, then "
         f"falls); mean over runs (each run once, >= {MIN_INTERVALS_HUMP} intervals), t interval"),
        "mean hump of the log change rate (middle third minus the faster outer third)", "positive",
        negligible=HUMP_NEGLIGIBLE, with_p=False, data=data,
        detail=(f"{runs.height} runs; {int((h > 0).sum())} have a positive hump{rel}" if runs.height
                else f"no non-diverged run with >= {MIN_INTERVALS_HUMP} intervals between spectral snapshots"))


def four_phase_verdict(sequences: Sequence[Sequence[str]], n_intervals: Sequence[int] | None = None) -> Verdict:
    """Share of runs whose phase sequence is exactly PHASES, Wilson interval, null FOUR_PHASE_NULL, over
    the runs with at least :data:`MIN_INTERVALS_FOUR_PHASES` snapshot intervals (``n_intervals``, one per
    sequence; all runs when None). With fewer than MIN_VERDICT_RUNS such runs there is no interval: a
    run too short to resolve four phases is no evidence against them."""
    n_intervals = [MIN_INTERVALS_FOUR_PHASES] * len(sequences) if n_intervals is None else list(n_intervals)
    resolved = [s for s, m in zip(sequences, n_intervals, strict=True) if m >= MIN_INTERVALS_FOUR_PHASES]
    n = len(resolved)
    k = sum(tuple(s) == PHASES for s in resolved)
    share = wilson_ci(k, n, unit="runs")
    counts = Counter(len(s) for s in sequences)
    dist = ", ".join(f"{c} phase{'s' if c > 1 else ''}: {counts[c]}" for c in sorted(counts))
    short = ""
    if n < MIN_VERDICT_RUNS:
        share = Estimate.missing(n, "runs", share.value)
        short = (f"; only {n} runs have >= {MIN_INTERVALS_FOUR_PHASES} intervals between spectral snapshots "
                 f"(max here {max(n_intervals, default=0)}): too few to resolve four phases of >= "
                 f"{MIN_SEGMENT} intervals with this rule; raise spectral_snapshots to >= "
                 f"{MIN_INTERVALS_FOUR_PHASES + 1}")
    return Verdict.of(
        share, "dynamics.four_phases", "001 §5.3",
        "Training passes through four phases: initial, fast learning, fine-tuning, saturation",
        ("share of runs whose change-point segmentation of the loss-Hessian spectral change rate gives "
         "exactly the four phases in order; Wilson 95% interval vs 0.5 (most runs)"),
        "share of runs with the four phases", "positive", null_value=FOUR_PHASE_NULL,
        detail=f"{k} of {n} resolved runs; phases per run (all runs): {dist or 'none'}{short}")


def per_run_delta(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per run (run_id, dataset, delta, n_layers): the mean Δ over the run's layers with a finite
    Δ, so a deep run counts once, as a shallow one does. ``dataset`` is "" when ``frame`` has none."""
    frame = frame.filter(pl.col("delta").is_finite())
    if "dataset" not in frame.columns:
        frame = frame.with_columns(dataset=pl.lit(""))
    return (frame.group_by("run_id", maintain_order=True)
            .agg(pl.col("dataset").first(), pl.col("delta").mean(), pl.len().alias("n_layers")))


def concentration_verdict(frame: pl.DataFrame, kind: str) -> Verdict:
    """Mean over runs of the run-mean Δ = ln(er_last / er_first) over its layers (``frame``: run_id,
    delta per (run, layer), optionally dataset), t interval over runs; predicted negative. Runs weigh
    equally whatever their depth (pooled (run, layer) pairs let the deep networks decide). The run rows
    go to the claim assessment for the two-level interval and the leave-one-study-out range. No
    baseline: the claim is about training itself (training time is the variable, not a confound).
    ``kind``: "loss" or "local"."""
    runs = per_run_delta(frame)
    what = {"loss": "loss-Hessian block", "local": "local Hessian (layers where it is not exactly zero)"}[kind]
    delta = runs["delta"].to_numpy().astype(float)
    mean = mean_ci(delta, "runs")
    if mean.n < MIN_VERDICT_RUNS:
        mean = Estimate.missing(mean.n, "runs", mean.value)
    data = (ClaimData(runs.select("run_id", "dataset"), lambda idx: float(delta[idx].mean()))
            if runs.height >= MIN_VERDICT_RUNS else None)
    n_pairs = int(runs["n_layers"].sum()) if runs.height else 0
    return Verdict.of(
        mean, f"dynamics.concentration_{kind}", "001 Claim 1 / §5.1",
        ("Eigenvalues become more concentrated as training proceeds (early spectra are more uniform)"
         + (" — tested on the loss-Hessian block, an analogue of the paper's local Hessian" if kind == "loss"
            else "")),
        (f"per run, the mean over its layers of the log change of the {what} effective-rank ratio "
         "Σ|λ|/max|λ|/dim from the first to the last spectral snapshot; mean over runs (each run once), t interval"),
        "mean ln(effective rank last / first)", "negative", with_p=False, data=data,
        detail=(f"{runs.height} runs, {n_pairs} (run, layer) pairs; {int((delta < 0).sum())} runs decrease"
                if runs.height else "no (run, layer) pair with positive effective rank at both ends"))
