"""The dynamics stage's verdicts: the four-phase sequence and the rise-then-fall of the spectral change
rate (001 §5.3), and the concentration of the Hessian spectra over training (001 Claim 1 / §5.1)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl

from analyses.dynamics.phases import PHASES
from analyses.dynamics.segmentation import MIN_SEGMENT
from analyses.stats import ClaimData, Concordance, Estimate, Mean, Verdict, mean_ci, wilson_ci

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
#: Random orders of a run's intervals for its null hump (:func:`permuted_hump`).
HUMP_PERMUTATIONS = 2000
#: Band of the four-phase share around one half, and of the concentration's mean log ratio (a 5 % change
#: of the effective rank).
NEGLIGIBLE_SHARE, NEGLIGIBLE_LOG_RATIO = 0.05, 0.05


def hump(x: np.ndarray) -> float:
    """Rise-then-fall of one run's log change-rate series x (n,), n >= 3, in time order:

        hump = min(mean(x[middle third]) - mean(x[first third]), mean(x[middle third]) - mean(x[last third])),

    thirds by interval index (``np.array_split(x, 3)``: sizes differ by at most one, the first ones
    larger). Snapshots are log-spaced, so the thirds are near-equal slices of log-time. x is a log rate,
    so each difference is the log ratio of (geometric-mean) rates: hump > 0 only when the middle third is
    faster than both the first (a rise) and the last (a fall); a monotone series has hump <= 0 whatever
    its curvature (a concave fall, flat then dropping, is no rise). For pure noise E[hump] < 0 (the min
    of two centred differences: -sigma / sqrt(pi m) for iid noise of m per third), so the verdict
    subtracts :func:`permuted_hump`."""
    first, mid, last = (float(t.mean()) for t in np.array_split(np.asarray(x, float), 3))
    return min(mid - first, mid - last)


def permuted_hump(x: np.ndarray, key: str = "", n_perm: int = HUMP_PERMUTATIONS) -> float:
    """The mean of :func:`hump` over ``n_perm`` random orders of the series x (n,) (the generator seeded
    from ``key``, the run id): the hump the run's own rates give when their order carries no time. Under
    the null of exchangeable rates hump(x) has this mean, so hump - permuted_hump is centred at 0 (the
    plain hump is biased against the claim); a monotone series keeps a negative difference."""
    x = np.asarray(x, float)
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, len(x))), axis=1)
    parts = np.array_split(np.arange(len(x)), 3)
    thirds = [x[perms[:, p]].mean(axis=1) for p in parts]
    return float(np.minimum(thirds[1] - thirds[0], thirds[1] - thirds[2]).mean())


def rise_fall_verdict(runs: pl.DataFrame) -> Verdict:
    """Mean over runs of the centred hump, :func:`hump` minus :func:`permuted_hump` (``runs``: one row per
    non-diverged run with >= MIN_INTERVALS_HUMP intervals: run_id, dataset, hump, hump_null, and optionally
    hump_relative, the hump on the scale-relative distance), predicted positive; per data set, pooled by
    random effects. No baseline: the confound the raw rate carried, the shrinking scale of the spectra, is
    removed by the scale-free distance itself (a spectrum that only shrinks has rate 0)."""
    h = (runs["hump"] - runs["hump_null"]).to_numpy().astype(float) if runs.height else np.empty(0)
    mean = mean_ci(h, "runs")
    enough = runs.height >= MIN_VERDICT_RUNS
    if not enough:
        mean = Estimate.missing(mean.n, "runs", mean.value)
    data = (ClaimData(runs.select("run_id", "dataset"), Mean(h),
                      confound="spectral scale (removed by the scale-free distance)") if enough else None)
    rel = ""
    if runs.height and "hump_relative" in runs.columns:
        hr = runs["hump_relative"].to_numpy().astype(float)
        rel = (f"; on the scale-relative distance instead: mean hump {np.nanmean(hr):+.3f}, "
               f"{int((hr > 0).sum())} runs > 0")
    raw = runs["hump"].to_numpy().astype(float) if runs.height else np.empty(0)
    return Verdict.of(
        mean, "dynamics.rise_then_fall", "001 §5.3",
        ("The spectra change slowly at first, fastest during fast learning, then slower in fine-tuning and "
         "saturation: the change rate rises then falls"),
        ("per run, the mean log scale-free change rate of the loss-Hessian spectra over the middle third of "
         "its snapshot intervals minus the larger of the first- and last-third means (> 0: rises, then "
         f"falls), centred by the same over {HUMP_PERMUTATIONS} random orders of the run's intervals (the "
         f"plain hump is negative for noise); mean over runs (each run once, >= {MIN_INTERVALS_HUMP} intervals) "
         "per data set, pooled by random effects"),
        "mean centred hump of the log change rate", "positive",
        negligible=HUMP_NEGLIGIBLE, band_units="log ratio of change rates", with_p=False, data=data,
        detail=(f"{runs.height} runs; {int((h > 0).sum())} have a positive centred hump; plain hump mean "
                f"{raw.mean():+.3f} ({int((raw > 0).sum())} runs > 0){rel}" if runs.height
                else f"no non-diverged run with >= {MIN_INTERVALS_HUMP} intervals between spectral snapshots"))


def four_phase_verdict(sequences: Sequence[Sequence[str]], n_intervals: Sequence[int] | None = None,
                       runs: Sequence[tuple[str, str]] | None = None) -> Verdict:
    """Share of runs whose phase sequence is exactly PHASES, over the runs with at least
    :data:`MIN_INTERVALS_FOUR_PHASES` snapshot intervals (``n_intervals``, one per sequence; all runs when
    None), against FOUR_PHASE_NULL. ``runs`` ((run_id, dataset) per sequence) hands the runs over: the
    share with a Wilson interval on the effective number of runs (the data sets' design effect); without
    them, the plain Wilson interval. With fewer than MIN_VERDICT_RUNS such runs there is no interval: a run
    too short to resolve four phases is no evidence against them."""
    n_intervals = [MIN_INTERVALS_FOUR_PHASES] * len(sequences) if n_intervals is None else list(n_intervals)
    keep = [i for i, m in enumerate(n_intervals) if m >= MIN_INTERVALS_FOUR_PHASES]
    resolved = [sequences[i] for i in keep]
    n = len(resolved)
    hits = np.array([tuple(s) == PHASES for s in resolved], float)
    k = int(hits.sum())
    share = wilson_ci(k, n, unit="runs")
    counts = Counter(len(s) for s in sequences)
    dist = ", ".join(f"{c} phase{'s' if c > 1 else ''}: {counts[c]}" for c in sorted(counts))
    short, data = "", None
    if n < MIN_VERDICT_RUNS:
        share = Estimate.missing(n, "runs", share.value)
        short = (f"; only {n} runs have >= {MIN_INTERVALS_FOUR_PHASES} intervals between spectral snapshots "
                 f"(max here {max(n_intervals, default=0)}): too few to resolve four phases of >= "
                 f"{MIN_SEGMENT} intervals with this rule; raise spectral_snapshots to >= "
                 f"{MIN_INTERVALS_FOUR_PHASES + 1}")
    elif runs is not None:
        rows = pl.DataFrame({"run_id": [runs[i][0] for i in keep], "dataset": [runs[i][1] for i in keep]},
                            schema={"run_id": pl.Utf8, "dataset": pl.Utf8})
        data = ClaimData(rows, Concordance(2 * hits - 1, +1))
    return Verdict.of(
        share, "dynamics.four_phases", "001 §5.3",
        "Training passes through four phases: initial, fast learning, fine-tuning, saturation",
        ("share of runs whose change-point segmentation of the loss-Hessian spectral change rate gives "
         "exactly the four phases in order; Wilson 95% interval on the effective number of runs vs 0.5 (most "
         "runs)"),
        "share of runs with the four phases", "positive", null_value=FOUR_PHASE_NULL, data=data,
        negligible=NEGLIGIBLE_SHARE, band_units="share of runs",
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
    data = (ClaimData(runs.select("run_id", "dataset"), Mean(delta)) if runs.height >= MIN_VERDICT_RUNS else None)
    n_pairs = int(runs["n_layers"].sum()) if runs.height else 0
    return Verdict.of(
        mean, f"dynamics.concentration_{kind}", "001 Claim 1 / §5.1",
        ("Eigenvalues become more concentrated as training proceeds (early spectra are more uniform)"
         + (" — tested on the loss-Hessian block, an analogue of the paper's local Hessian" if kind == "loss"
            else "")),
        (f"per run, the mean over its layers of the log change of the {what} effective-rank ratio "
         "Σ|λ|/max|λ|/dim from the first to the last spectral snapshot; mean over runs (each run once) per data set, "
         "pooled by random effects"),
        "mean ln(effective rank last / first)", "negative", with_p=False, data=data,
        negligible=NEGLIGIBLE_LOG_RATIO, band_units="log ratio of effective ranks",
        detail=(f"{runs.height} runs, {n_pairs} (run, layer) pairs; {int((delta < 0).sum())} runs decrease"
                if runs.height else "no (run, layer) pair with positive effective rank at both ends"))
