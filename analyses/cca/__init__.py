"""Canonical correlation analysis (CCA) between a block of spectral features and the block of quality
metrics, per task, tested as the paper states it and beyond training time: the verdict's CCA is fitted
on each run's last snapshot with the loss-defined metrics left out of Y and scored on held-out data
sets; the sharpened test asks what the spectral block adds to ln(1 + step) in a nested held-out CCA.
Tables give the canonical correlations with Wilks' lambda tests, the loadings, the held-out folds and
variates, and the comparison of designs.

Confound, nested estimand, two rows
-----------------------------------
Over all snapshots both blocks move with training time: losses fall, accuracy rises and the spectra
change along the run, and ln(1 + step) alone relates to the metrics as strongly as the spectral block
does (``analysis_cca_designs``). The verdicts therefore

- use one row per run, its **last snapshot**, so the trajectory within a run cannot drive the
  relation and runs weigh equally. Training time is not constant there (train fraction and batch size
  change a run's number of steps);
- keep **no loss-defined metric** in Y (``LOSS_DEFINED_METRICS``: train_loss, test_loss, gap_loss,
  test_rmse = sqrt(test MSE)): for classification Y = test_accuracy, gap_accuracy, test_f1, test_auc;
  for regression test_r2, test_mae (within a data set test R² is still an affine function of the test
  MSE, so the regression Y cannot be wholly free of the loss);
- read the **out-of-fold** first canonical variates (u, v of each row from the fold that held its data
  set out, stored in ``analysis_cca_scores``): each held-out data set's correlation of u and v over its
  runs is its estimate (variance by leaving runs out), pooled across data sets by random effects
  (:mod:`analyses.stats.claims`);
- ``cca.<task>`` (the paper's test): that held-out correlation for the spectral block, predicted
  positive (null 0, negligible band ``NEGLIGIBLE_R`` = 0.1);
- ``cca.<task>.beyond_time`` (the sharpened test, confound "training time"): the **nested** fit, the
  CCA with X = [spectral block, ln(1 + step)] on the same rows, Y and folds; per held-out data set, the
  partial correlation of its out-of-fold first variates given ln(1 + step), pooled on Fisher's z. A
  spectral block that adds nothing to ln step leaves variates that share nothing beyond it (the old
  decisive quantity, spectral minus ln step, compared two fits that did not contain each other:
  "spectra beat time", not "spectra add to time"). The ln-step-only fit's held-out correlation is shown
  beside it.

The other reading the issue allows, training time partialled out, is a descriptive row of
``analysis_cca_designs``, not the verdict (the verdict's design was fixed before its result was seen):
all snapshots, quality metrics, each column of both blocks residualized on [1, ln(1 + step)] within its
data set (:func:`analyses.cca.blocks.partial_within`). It removes the linear trend in ln step only; what
is left within a run still moves with training, and runs weigh by their number of snapshots, so it is
no substitute for the last-snapshot test; it has no ln-step comparison (ln step is 0 there).

Blocks
------
X is a fixed subset of ``analysis_features`` (layer means on the features' scale), the 12 columns
of ``X_FEATURES`` (:mod:`analyses.cca.blocks`): spectra of the weights (weight_stable_rank,
weight_spectral_norm, adjacent_similarity), saturation (saturation_fraction), the local Hessian
(local_top, local_std) and the loss Hessian (loss_top, loss_effective_rank_ratio, loss_relative_std,
loss_skewness, loss_near_zero_fraction, loss_negative_mass). Gradient-derived features (gradient
norms, natural-gradient norm, pressure, alignment) are left out on purpose: the loss gradient is a
function of the loss itself, so they would relate to the metrics by construction. The baseline's X is
``TIME_FEATURE`` = ln_step = ln(1 + step).
Y is ``features.METRICS[task]`` (all-metrics designs) or those without ``LOSS_DEFINED_METRICS``, with
the primary metric (test accuracy, test R²) moved first.
For each task: a column with any NULL in the task's rows is dropped (ReLU layers have no
local-Hessian ratios); each column is z-scored within each data set (``STANDARDIZE_WITHIN_DATASET``:
data sets differ wildly in loss and spectra, so the CCA describes variation inside data sets); then,
in the listed order, a column is dropped when its spread is below ``MIN_STD`` = 1e-8 (constant) or
its R² on the block's columns kept so far exceeds ``MAX_R2`` = 0.98 (near-collinear; e.g.
test_r2 = 1 - test MSE / var within a data set). A task is fitted only when
n - k_datasets >= p + q + ``MIN_EXTRA_DOF`` (10, :mod:`analyses.cca.task_analysis`).

Held-out folds: the CCA is fitted on the training folds (columns standardized with the training rows'
mean and sd; the fold fits skip the Wilks tests), both blocks of the held-out rows are projected with
the training canonical weights a_1, b_1. The sign is kept from the training fit (oriented so the metric
variate rises with the primary metric), so a reversed relation shows as a negative value. Folds: sklearn
``GroupKFold`` with groups = data set (at most ``MAX_FOLDS`` = 5 folds, :mod:`analyses.cca.heldout`),
which also keeps every run's rows together; with fewer than 3 data sets, groups = run. GroupKFold
depends on the groups alone, so the spectral CCA and its baseline share the folds.

Tables
------
``analysis_cca``
    the verdict's design (last snapshots, quality metrics), per task and component c: canonical
    correlation ρ_c (statsmodels ``statsmodels.multivariate.cancorr.CanCorr``), Wilks' Λ_c =
    Π_{j>=c} (1 - ρ_j²) testing ρ_c = ... = ρ_k = 0 with Rao's F approximation (``CanCorr.corr_test()``:
    ``f_stat``, ``df_num``, ``df_den``, ``p_value``), n rows, n_runs, n_datasets. The test treats rows as
    independent and ignores the data-set means removed, so its p-value is descriptive. A task too small
    to fit has one row with NULLs.
``analysis_cca_loadings``
    structure correlations corr(variable, own-block canonical variate) for the first
    ``N_LOADING_COMPONENTS`` = 2 components, block 'X' (features) or 'Y' (metrics), signs oriented by the
    primary metric.
``analysis_cca_heldout``
    per task, X block (``x_block``: 'spectral', or 'ln_step' for the time-only fit) and fold:
    ``heldout_correlation`` = corr(X_test a_1, Y_test b_1) within the fold (NULL when the training fit
    fails, a projection is constant, or the fold holds fewer than ``MIN_TEST_ROWS`` = 5 rows), the groups
    it held out (``grouped_by`` 'dataset' or 'run').
``analysis_cca_scores``
    per row of a fitted task (each run's last snapshot): the in-sample first canonical variates (u1,
    v1), the held-out ones (heldout_u1, heldout_v1) and the time-only fit's held-out ones (time_u1,
    time_v1): the paper's row reads corr(heldout_u1, heldout_v1) per held-out data set.
``analysis_cca_designs``
    per task and design (``DESIGNS``: all snapshots with all metrics, the verdict's design before issue
    18; all snapshots with quality metrics; the same with ln step partialled out of both blocks
    (``time_partialled``, no time-only fit: ``time_r`` NULL); last snapshot with quality metrics, the
    verdict's, ``is_verdict``): the held-out correlation of the spectral block (``spectral_r``, and the
    Fisher-z mean over folds ``spectral_fold_mean`` the verdict used before), of ln(1 + step) alone
    (``time_r``), and their (descriptive, not nested) difference, each per held-out data set pooled by
    random effects (``interval_level`` names the method; in the all-snapshot designs a run's snapshots
    are left out together, so longer runs weigh more there).
``analysis_cca_verdicts``
    001 §4.4/§5 (CCA of spectral features and quality metrics), two rows per task (above): the stage's
    own estimate beside each is the correlation of the out-of-fold variates over every row (a Fisher-z
    interval over runs as if independent). Folds grouped by run (fewer than 3 data sets) let runs of the
    held-out run's data set train the fit, so such a task is not decided (no interval); the regression
    task of the default corpus (10 runs in 2 data sets) is also too small for the last-snapshot CCA.
"""

from analyses.cca.figures import FIGURES
from analyses.cca.report import report
from analyses.cca.schema import TABLES
from analyses.cca.stage import run
from analyses.kit.stage import Stage

STAGE = Stage(
    name="cca", title="Canonical correlation: spectral features vs quality metrics", doc=__doc__,
    reads=("analysis_features",), tables=TABLES, run=run, figures=FIGURES, report=report, verdicts=True,
)
