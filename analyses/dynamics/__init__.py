"""Training dynamics: how every measured quantity of a run moves over its checkpoints, and a
segmentation of each run into training phases (initial, fast learning, fine-tuning, saturation;
paper 001 §5.3) by change points in the rate at which the shape of its loss-Hessian spectra changes
(a scale-free distance), with fewer phases where the data show fewer, and a population-level test
that this rate rises then falls. Phase boundaries are stored per run and drawn on the curves.

The code: ``stage.py`` (the SQL and the run), ``spectral_change.py`` (distance and rate),
``segmentation.py`` (change points), ``phases.py`` (naming), ``verdicts.py``, ``figures.py`` and
``report.py``; each constant named below lives in the module that uses it.

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
    ``step_to``, ``distance`` (layer mean of the scale-free d_l below), ``relative_distance`` and
    ``relative_rate`` (the same with the scale-relative distance r_l below, for comparison; not
    segmented), ``log_step_span`` = ln(s_{k+1}+1) - ln(s_k+1),
    ``rate``, ``log_rate``, ``rate_per_step`` = distance / (s_{k+1} - s_k) (for reference; not
    segmented), ``n_layers`` averaged, the raw segment (``segment_index``) and the phase it
    falls in (``phase_index``, ``phase``), and the ``noise_sigma`` and ``penalty`` the segmentation used.
``analysis_dynamics_phases``
    (run_id, phase_index, phase, start_step, end_step, n_snapshots, mean_rate): the phases of each run
    in order; they tile the run's steps (end_step = next start_step - 1; the first phase starts at the
    run's first checkpoint, the last ends at its last), so a snapshot (or checkpoint) at ``step`` is in
    the phase with start_step <= step <= end_step. ``mean_rate`` is the mean ``rate`` of the phase's
    intervals (NULL when it has none).
``analysis_dynamics_rise_fall``
    one row per non-diverged run with >= :data:`MIN_INTERVALS_HUMP` = 6 rate intervals: ``dataset``,
    ``n_intervals``, ``early``, ``middle``, ``late`` (the mean log rate x_k over the first, middle and
    last third of its intervals), ``hump`` (below) and ``hump_relative`` (the same on the
    scale-relative rate).
``analysis_dynamics_verdicts``
    the claims below.

Spectral change rate
--------------------
For layer l and consecutive snapshots k, k+1 with loss-Hessian block spectra (``hessian_spectra``
kind = :data:`SPECTRUM_KIND`) sorted in descending order, a = λ_k, b = λ_{k+1}, each spectrum is divided
by its own scale and the two shapes are compared (:func:`shape_distance`):

    d_l = || a[:m] / max|a[:m]| - b[:m] / max|b[:m]| ||_2 / (2 √m)      (d_l in [0, 1])

with m the common length when both spectra are complete (every eigenvalue stored), else the common
top part m = min(len a, len b, :data:`PARTIAL_TOP_K` = 8) (Lanczos rows store the top-k Ritz values
and a few bottom ones). d_l is scale-free: d(c·a, c'·b) = d(a, b) for any c, c' > 0, so a spectrum
that only shrinks does not change. It replaces the scale-relative distance
r_l = ||b[:m] - a[:m]||_2 / (||a[:m]||_2 + ||b[:m]||_2), which moves by |c - 1| / (c + 1) when a spectrum
is multiplied by c: the spectra's scale shrinks over training, so r_l counted the shrinkage as change
and its rate per e-fold rose late in most runs. The snapshot distance is the mean of d_l over the
layers present at both snapshots (a snapshot with no such layer is dropped), and

    rate_k = d / (ln(s_{k+1} + 1) - ln(s_k + 1)),

the change per e-fold of training time. Snapshots are log-spaced, so each interval is an equal slice
of log-time; a spectrum that has stopped changing has rate -> 0 whenever that happens, whereas a rate
per optimizer step falls like 1/step for a spectrum that keeps changing at a steady pace in log-time
(the usual shape of training curves), and would call every long run saturated. ``rate_per_step`` is
stored beside it for comparison.

Change points (exact optimal partitioning)
------------------------------------------
The series x_k = ln(max(rate_k, :data:`RATE_FLOOR` = 1e-6)) (multiplicative changes and noise
become additive) is split into at most :data:`MAX_CHANGES` + 1 = 4 segments of at least
:data:`MIN_SEGMENT` = 2 intervals, each fitted by its mean, by dynamic programming over all
segmentations:

    minimize over k <= MAX_CHANGES and τ_1 < ... < τ_k:  Σ_segments Σ_t (x_t - mean_seg)² + k β,
    β = PENALTY_C · σ² · ln(n),

n the series length, :data:`PENALTY_C` = 5. σ is the noise scale of x: σ = 1.4826 · median|x_{t+1} -
x_t| / √2 (the MAD of first differences, uncentred, so that a smooth drift counts as variation
rather than a staircase), pooled over the first differences of every non-diverged run's series
(:func:`noise_sigma`); a single short series (about 10 points) gives too noisy a σ for a stable
penalty, so each run uses the pooled σ, and its own only when fewer than :data:`MIN_POOLED_DIFFS` =
20 differences exist in all. Calibration by simulation (Gaussian noise, C = 5, min segment 2): with
the noise σ known, a change point is found in pure noise in 0.3 % of series at n = 9, 0.2 % at n =
12, < 0.1 % at n >= 20 (with a per-series σ: 6 %, 4 %, 2 %); shifts of 5σ (1-3 of them, segments of
2-15 points) are recovered exactly, each within one index, in >= 98 % of series, shifts of 4σ in
86-98 %. Series shorter than 2·MIN_SEGMENT have no change point. This assumes the noise of the log
rate is alike across runs; an unusually noisy run can get spurious phases.

Naming (pure rule, :func:`name_segments`)
-----------------------------------------
Segments are compared by their mean rate r_j. The segment with the highest r_j is
"fast learning"; every segment before it is "initial"; a segment after it is "saturation" if
r_j < :data:`SATURATION_FRACTION` (0.25) · max r, else "fine-tuning". Adjacent segments with the same name
are merged into one phase. No change point gives one phase, "single phase". Snapshot k belongs to
the phase of the interval starting at it (k -> k+1); the last snapshot to the last phase.

Verdicts
--------
- 001 §5.3 (four phases), kept as it was, now on the scale-free rate: the share of runs whose phases
  are exactly (initial, fast learning, fine-tuning, saturation), over non-diverged runs with at least
  :data:`MIN_INTERVALS_FOUR_PHASES` = 4·(MIN_SEGMENT + 1) = 12 intervals between snapshots, so that each
  of four phases has more than the minimum segment; Wilson 95% interval on the effective number of
  runs (n over the design effect of the data sets) against the null 0.5 ("most runs show four phases"),
  predicted above; no interval (inconclusive) with fewer than
  :data:`MIN_VERDICT_RUNS` = 5 such runs, since a run too short to resolve four phases is no evidence
  against them. It asks for the exact sequence of one segmentation rule.
- 001 §5.3 (rise then fall), the population-level reading: the phases' order says the spectra change
  slowly at first, fastest in fast learning and slower after. Per run (non-diverged, >= 6 intervals),
  with x_k its log rate and thirds by interval index (``np.array_split``; near-equal slices of
  log-time),

      hump = min(mean x[middle] - mean x[first], mean x[middle] - mean x[last]),

  > 0 only when the middle third is faster than both outer thirds (a rise and a fall); a monotone
  series has hump <= 0 whatever its curvature. Pure noise gives E[hump] = -sigma / sqrt(pi m) < 0 (the
  min of two centred differences, m intervals a third), which would err against the claim, so the
  verdict reads the **centred** hump, hump minus ``hump_null``, its mean over 2,000 random orders of
  the run's own intervals (:func:`analyses.dynamics.verdicts.permuted_hump`, seeded by the run id):
  0 in expectation when the rates carry no order in time. Effect: mean over runs per data set, pooled
  across data sets by random effects; predicted positive, negligible band :data:`HUMP_NEGLIGIBLE` = 0.1
  (a 10 % faster middle third). The confound of the raw rate, the shrinking scale, is removed by the
  distance itself (named in ``confound``); the plain hump and the hump on the scale-relative rate are in
  the detail.
- 001 Claim 1 / §5.1 (concentration): for every (run, layer), Δ = ln(er_last / er_first), the log
  change of the effective-rank ratio Σ|λ|/max|λ|/dim from the first to the last snapshot, for the
  loss-Hessian block and for the local Hessian (layers where it is not exactly zero at either
  snapshot; above the exact limit the engine's effective rank is its SLQ-density estimate).
  Concentration predicts Δ < 0. Effect: per run the mean Δ over its layers, then the mean over
  runs (every run counts once, whatever its depth: pooled (run, layer) pairs let the deep networks
  decide), per data set, pooled across data sets by random effects, with the leave-one-study-out
  range beside it; no interval (inconclusive) with fewer than :data:`MIN_VERDICT_RUNS` runs; band 0.05
  of the log ratio. No confound: the claim is about what training does, so training time is its
  variable.

The verdicts' numbers on each built corpus are in ``docs/verdicts/``.
"""

from analyses.dynamics.figures import FIGURES
from analyses.dynamics.report import report
from analyses.dynamics.schema import TABLES
from analyses.dynamics.stage import run
from analyses.kit.stage import Stage

STAGE = Stage(
    name="dynamics", title="Training dynamics and phases", doc=__doc__,
    reads=("runs", "checkpoints", "layers", "layer_stats", "hessian_spectra", "analysis_features",
           "analysis_features_layer"),
    tables=TABLES, run=run, figures=FIGURES, report=report, verdicts=True,
)
