"""The dynamics stage's verdicts: the four-phase sequence (001 §5.3) and the concentration of the
Hessian spectra over training (001 Claim 1 / §5.1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import polars as pl

from analyses.dynamics.phases import PHASES
from analyses.dynamics.segmentation import MIN_SEGMENT
from analyses.stats import Estimate, Verdict, cluster_bootstrap, wilson_ci

#: Null share of runs with the four-phase sequence ("most runs show four phases").
FOUR_PHASE_NULL = 0.5
#: Fewer runs than this give no interval (a bootstrap over 3-4 clusters has too few distinct
#: resamples to mean anything, and a share of so few runs says as little).
MIN_VERDICT_RUNS = 5
#: Snapshot intervals a run needs for the four-phase verdict: four phases of at least MIN_SEGMENT + 1
#: intervals each, so that every phase has more than the minimum and its level can be told apart.
MIN_INTERVALS_FOUR_PHASES = 4 * (MIN_SEGMENT + 1)


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


def concentration_verdict(frame: pl.DataFrame, kind: str) -> Verdict:
    """Mean Δ = ln(er_last / er_first) over the (run, layer) rows of ``frame`` (columns run_id, delta),
    cluster bootstrap by run; predicted negative. ``kind``: "loss" or "local"."""
    frame = frame.filter(pl.col("delta").is_finite())
    what = {"loss": "loss-Hessian block", "local": "local Hessian (layers where it is not exactly zero)"}[kind]
    if frame.height:
        # per run the sum and count of Δ, so a resample of runs gives the mean over its pairs
        per_run = frame.group_by("run_id", maintain_order=True).agg(
            pl.col("delta").sum().alias("s"), pl.len().alias("c"))
        mean = cluster_bootstrap(per_run, "run_id", lambda f: float(f["s"].sum() / f["c"].sum()), unit="runs")
        if mean.n < MIN_VERDICT_RUNS:
            mean = Estimate.missing(mean.n, "runs", mean.value)
    else:
        mean = Estimate.missing(0, "runs")
    return Verdict.of(
        mean, f"dynamics.concentration_{kind}", "001 Claim 1 / §5.1",
        ("Eigenvalues become more concentrated as training proceeds (early spectra are more uniform)"
         + (" — tested on the loss-Hessian block, an analogue of the paper's local Hessian" if kind == "loss"
            else "")),
        (f"per (run, layer), log change of the {what} effective-rank ratio Σ|λ|/max|λ|/dim from the first "
         "to the last spectral snapshot; mean over pairs, 95% cluster bootstrap by run"),
        "mean ln(effective rank last / first)", "negative",
        detail=(f"{frame.height} (run, layer) pairs; {int((frame['delta'] < 0).sum())} decrease"
                if frame.height else "no (run, layer) pair with positive effective rank at both ends"))
