"""Pearson correlations between the internal features of each spectral snapshot (weights, gradients,
activations, local/loss Hessian and Gauss-Newton summaries) and the quality metrics at that step, by
task type and by training phase, with p-values corrected for multiple testing; then run-level tests of
the paper's rank, spectral-spread and adjacent-layer claims (001 §5.5.1, §5.5.4, §5.5.7).

Control for the data set
------------------------
Data sets differ wildly in their losses and in their spectra, so a correlation pooled over data
sets mostly says which data set a snapshot came from. Every correlation here is therefore a
*within-data-set* correlation (``CONTROL_FOR_DATASET`` in :mod:`analyses.correlations.families`):
feature and metric are z-scored within each data set (over the rows entering that correlation), and
r is the Pearson correlation of the pooled z-scores (:func:`analyses.stats.within_group_pearson`).
That equals the size-weighted mean of the per-data-set correlations,
r = Σ_g n_g r_g / Σ_g n_g, when neither variable is constant in any data set; a data set where one is
constant contributes zero to the sum and its rows leave that variable's share of the denominator,
r = Σ_g n_g r_g / √(n_x n_y) (:mod:`analyses.stats.correlation`).
Removing k data-set means costs degrees of freedom: the p-value uses t = r √(ν / (1 - r²)) with
ν = n - k - 1, the Fisher-z interval tanh(atanh r ± 1.96 / √(n - k - 2)) (a partial correlation
given k - 1 data-set indicators). Data sets with fewer than 2 rows are dropped.

``analysis_correlations``
    one row per (task, phase, feature, metric): ``phase`` is ``all`` (every spectral snapshot) or a
    phase of ``analysis_dynamics_phases`` (a snapshot at ``step`` is in the phase of its run with
    start_step <= step <= end_step); features are :data:`analyses.kit.features.FEATURES` on the
    ``analysis_features`` scale (layer mean of the transform), metrics ``features.METRICS[task]``.
    ``n`` snapshots from ``n_runs`` runs, ``r`` with its 95% Fisher-z interval ``ci_low``/``ci_high``,
    ``p_value``, and ``p_adjusted``: Benjamini-Hochberg (statsmodels ``multipletests``, ``fdr_bh``)
    within each task x phase family (every feature x metric pair of that family);
    ``significant`` = p_adjusted < ``ALPHA`` (0.05, :mod:`analyses.correlations.families`). r is NULL
    when n - k - 2 < 1 or a variable is constant. Snapshots of one run are not independent (up to ~10
    per run), so these p-values and intervals are descriptive: they treat snapshots as independent
    draws. The verdicts below use one row per run.

``analysis_correlations_verdicts``
    two rows per claim (below), each resting on one row per run: its last spectral snapshot (diverged
    runs are already excluded by the features stage). The stage's own estimate beside each
    (``stage_effect``) is the within-data-set correlation above over runs, pooled over both tasks,
    with a percentile bootstrap interval over runs (:func:`analyses.stats.within_group_r`; no interval
    below ``MIN_RUNS`` = 6 runs). The detail gives r per task and r over all snapshots (descriptive: it
    mixes training time, so early snapshots, poor in quality and in most features, can make a
    correlation the final states lack). Claims (effect r, null 0, negligible band |r| <
    ``NEGLIGIBLE_R`` = 0.1; both in :mod:`analyses.correlations.verdicts`):

    - 001 §5.5.1, lower weight rank goes with overfitting: r(weight_rank_ratio, gap_loss) < 0, with
      the numerical rank over min(d, q); and, because the numerical rank is often full everywhere, a
      second row with the stable-rank ratio (layer mean of ||W||_F² / ||W||_2² / min(d, q), from
      ``analysis_features_layer``).
    - 001 §5.5.1, lower rank of the local Hessian goes with overfitting:
      r(local_effective_rank_ratio, gap_loss) < 0. The paper speaks of the layer's *local* Hessian,
      so that is the one tested; it is NULL for ReLU layers (the local Hessian is exactly zero), so
      only runs with a non-zero local Hessian count.
    - 001 §5.5.4, a small spread of the Hessian spectrum goes with worse generalization:
      r(loss_relative_std, gap_loss) < 0. The relative std (std over mean |λ|) of the loss-Hessian
      blocks is used because the absolute std mostly tracks the overall curvature scale; a second
      row tests r(loss_std, gap_loss) < 0 with the absolute std.
    - 001 §5.5.7, adjacent layers are alike in healthy networks: r(adjacent_similarity,
      primary_metric) > 0 (primary metric test accuracy or test R², made comparable across tasks by
      the within-data-set z-scores).
    - 004, flatter minima generalize better: r(ln loss-Hessian top eigenvalue, gap_loss) > 0 and
      r(ln loss-Hessian trace, gap_loss) > 0 (the snapshot's summed blocks; logs because curvature
      spans orders of magnitude between models).

    Each claim has two rows (:mod:`analyses.stats.verdict`). The paper's test: r of feature and
    metric over runs within each data set, pooled across data sets by a random-effects meta-analysis
    on Fisher's z (Hartung-Knapp interval on k - 1 degrees of freedom; :mod:`analyses.stats.claims`).
    The sharpened test (``<claim>.beyond_time``): the same partial r given ln(1 + step), since a run
    trained longer has other spectra and a larger gap. The final train loss is not partialled out: a
    network that overfits fits its training set closely, so its train loss is a mediator of the
    effect, and partialling it would remove part of what the claim is about. The two readings of
    §5.5.4 (absolute and relative std) stay two claims: the absolute std follows the spectrum's
    scale, the relative one does not.

gap_loss = test_loss - train_loss at the checkpoint (pipeline/extract/checkpoint.py). The paper's
pair plot of key features against the quality metrics is the ``correlations_pairplot`` figure.
"""

from analyses.correlations.figures import FIGURES
from analyses.correlations.report import report
from analyses.correlations.schema import TABLES
from analyses.correlations.stage import run
from analyses.kit.stage import Stage

STAGE = Stage(
    name="correlations", title="Correlations between internal features and quality", doc=__doc__,
    reads=("analysis_features", "analysis_features_layer", "analysis_dynamics_phases"), tables=TABLES, run=run,
    figures=FIGURES, report=report, verdicts=True,
)
