"""Canonical correlation analysis (CCA) between a block of spectral features of each snapshot and the
block of its quality metrics, per task: the canonical correlations with Wilks' lambda tests, the
loadings that say which variables carry each canonical pair, and a held-out estimate in which whole
data sets (or, with fewer than three data sets, whole runs) are never seen by the fit they score.

Blocks
------
X is a fixed subset of ``analysis_features`` (layer means on the features' scale), the 12 columns
of ``X_FEATURES`` (:mod:`analyses.cca.blocks`): spectra of the weights (weight_stable_rank,
weight_spectral_norm, adjacent_similarity), saturation (saturation_fraction), the local Hessian
(local_top, local_std) and the loss Hessian (loss_top, loss_effective_rank_ratio, loss_relative_std,
loss_skewness, loss_near_zero_fraction, loss_negative_mass). Gradient-derived features (gradient
norms, natural-gradient norm, pressure, alignment) are left out on purpose: the loss gradient is a
function of the loss itself, so they would relate to the metrics by construction.
Y is ``features.METRICS[task]`` with the primary metric (test accuracy, test R²) moved first.
For each task: a column with any NULL in the task's snapshots is dropped (ReLU layers have no
local-Hessian ratios); each column is z-scored within each data set (``STANDARDIZE_WITHIN_DATASET``:
data sets differ wildly in loss and spectra, so the CCA describes variation inside data sets); then,
in the listed order, a column is dropped when its spread is below ``MIN_STD`` = 1e-8 (constant) or
its R² on the block's columns kept so far exceeds ``MAX_R2`` = 0.98 (near-collinear; e.g.
test_r2 = 1 - test MSE / var within a data set). A task is fitted only when
n - k_datasets >= p + q + ``MIN_EXTRA_DOF`` (10, :mod:`analyses.cca.task_analysis`).

Tables
------
``analysis_cca``
    per task and component c: canonical correlation ρ_c (statsmodels
    ``statsmodels.multivariate.cancorr.CanCorr``), Wilks' Λ_c = Π_{j>=c} (1 - ρ_j²) testing
    ρ_c = ... = ρ_k = 0 with Rao's F approximation (``CanCorr.corr_test()``: ``f_stat``, ``df_num``,
    ``df_den``, ``p_value``), n snapshots, n_runs, n_datasets. The test treats snapshots as
    independent and ignores the data-set means removed, so its p-value is descriptive; the held-out
    estimate below is the one the verdict uses. A task too small to fit has one row with NULLs.
``analysis_cca_loadings``
    structure correlations corr(variable, own-block canonical variate) for the first
    ``N_LOADING_COMPONENTS`` = 2 components, block 'X' (features) or 'Y' (metrics). Each component's
    sign is fixed so that its Y variate correlates positively with the task's primary metric (test
    accuracy, test R²) when that column is in Y.
``analysis_cca_heldout``
    per task and fold: the CCA is fitted on the training folds (columns standardized with the
    training rows' mean and sd), both blocks of the held-out rows are projected with the training
    canonical weights a_1, b_1, and ``heldout_correlation`` = corr(X_test a_1, Y_test b_1) (NULL when
    the training fit fails, a projection is constant, or the fold holds fewer than ``MIN_TEST_ROWS``
    = 5 rows). The sign is kept from the training fit (where the pair correlates positively), so a
    reversed relation shows as a negative value. Folds: sklearn ``GroupKFold`` with groups = data set
    (``grouped_by`` = 'dataset', at most ``MAX_FOLDS`` = 5 folds, :mod:`analyses.cca.heldout`), which
    also keeps every run's snapshots together; with fewer than 3 data sets, groups = run ('run').
``analysis_cca_scores``
    per snapshot of a fitted task: the in-sample first canonical variates (u1, v1) and the held-out
    ones (heldout_u1, heldout_v1, from the fold that held it out): the points of ``cca_scores``.
``analysis_cca_verdicts``
    001 §4.4/§5 (CCA of spectral features and quality metrics): per task, the held-out first
    canonical correlation averaged over folds on the Fisher-z scale, tanh(mean atanh r_f), with a t
    interval over folds (back-transformed, so it stays within [-1, 1]) and the one-sample t p-value,
    predicted positive (null 0, negligible band ``NEGLIGIBLE_R`` = 0.1); the detail gives the
    in-sample ρ_1 and its Wilks p. Folds are few (at most 5), so the interval is wide. Folds grouped
    by run (fewer than 3 data sets) let runs of the held-out run's data set train the fit, so that
    task's estimate has no interval and its verdict is inconclusive: on the default corpus the
    regression task, whose runs come from 2 data sets.
"""

from analyses.cca.figures import FIGURES
from analyses.cca.report import report
from analyses.cca.schema import TABLES
from analyses.cca.stage import run
from analyses.stage import Stage

STAGE = Stage(
    name="cca", title="Canonical correlation: spectral features vs quality metrics", doc=__doc__,
    reads=("analysis_features",), tables=TABLES, run=run, figures=FIGURES, report=report, verdicts=True,
)
