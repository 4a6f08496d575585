"""Margins and the generalization gap (paper 004; Jiang, Krishnan, Mobahi, Bengio, ICLR 2019).

Paper 004 reports that a linear model on statistics of the training-set margin distribution predicts
the generalization gap (train accuracy - test accuracy) of 377 trained models with R^2 = 0.89, but
only late in training, and that the fitted model does not carry over to models trained for fewer
iterations. This stage repeats the three tests and sets other predictors of the gap beside margins.

Margins
-------
Margins (definition 7) are computed in the extraction worker at every spectral snapshot, for every
training point (labels as trained on, so label noise counts against a point) and every test point,
at the input, every hidden block's output and the logits, in float64 with the model in eval mode.
Each margin is divided by the total variation of its representation over the split. The ``margins``
table keeps the signatures over all points and over correctly classified ones; a set with no correct
point, a constant representation (a dead ReLU layer) and a regression run are rows with a status and
NULL statistics, never NaN. A single-class batch is not a status: its margins are defined (j is the
best other class) and stored as ``ok``.

Models and stages
-----------------
A *model* is a classification run that completed (diverged runs are left out and counted). Its
*stages* are three of its spectral snapshots: ``late`` = the last one (the trained model), and
``early`` / ``middle`` = the snapshots closest to 20 % and 50 % of the run's optimizer steps
(:data:`analyses.gap.models.TRAINING_STAGE_FRACTIONS`), each a snapshot of its own within 0.1 of its target
(:data:`~analyses.gap.models.STAGE_TOLERANCE`); a run without one has no such stage. The learning
rate is constant and the batch order seeded, so the snapshot at step t is the model a run of t steps
would have produced: a "shorter-trained model" is the same run's earlier snapshot, equal in law to a
shorter run, not a separate run. The gap at a stage is train accuracy (on the labels trained on,
noisy ones included) - test accuracy at that step.

Features (``analysis_gap_models``, one row per (run, stage), raw values)
------------------------------------------------------------------------
- margin signatures on the training set at the representations every network has (input, h0 = the
  first hidden block's output, output; deeper layers are in ``margins`` but in no specification, so
  Jiang et al.'s four-layer signature is not reproduced as such): Q1, median, Q3 and the two fences,
  over correctly classified points (Jiang et al.'s choice; ``m_<rep>_<stat>``) and over all points
  (``m_all_<rep>_<stat>``); ``margin_status`` lists the non-``ok`` statuses of the snapshot's rows;
- ``hessian_trace``: the sum of the loss-Hessian block traces of the Linear layers (the trace of
  the full Hessian restricted to them, ``hessian_spectra``; NULL unless every block's trace is exact,
  i.e. for a snapshot with a 256-wide layer, whose trace is estimated); norm-layer parameters are left
  out of it, but not of the next two;
- ``hessian_top_eigenvalue`` (NULL unless its Lanczos run converged) and ``sharpness`` (SAM's
  worst-case loss increase in an L2 ball of radius rho; ``sharpness`` table), both on the probe batch
  over every parameter;
- ``grad_norm`` (the probe-batch gradient norm), ``log_spectral_norm_product`` (sum over layers of
  ln ||W_l||_2), ``distance_from_init`` (||theta_t - theta_0||_2 over every trained parameter, from
  the stored weights) and ``n_params``.

Regression (``analysis_gap_regression``, one row per specification)
-------------------------------------------------------------------
Each column enters under one fixed transform (:data:`analyses.gap.predictors.TRANSFORMS`):
slog(x) = sign(x) ln(1 + |x|) for margin statistics (the lower fence is often negative) and the
scale-like predictors, ln for the parameter count, none for the already logarithmic spectral-norm
product. The specifications (``spec``, :data:`~analyses.gap.predictors.SPECIFICATIONS`) are the margin
signature at input, h0 and output (``margins_all_layers``, the main one, 15 columns), at each of them
alone, over all points, each other predictor alone, the other predictors together, and margins and
the other predictors (22 columns). OLS with an intercept (statsmodels, :mod:`analyses.gap.regression`):
R^2, adjusted R^2, and R^2 of out-of-fold predictions with 5 folds grouped by data set (``r2_cv``; a
fit never saw the data set it predicts), with a 95% percentile interval from 400 resamples of models
within data sets; Kendall's tau over model pairs between the fitted (``kendall_tau``) or out-of-fold
(``kendall_tau_cv``) prediction and the gap (``kendall_tau_feature``: the single predictor's own).
The main specification is also fitted with 10 random folds of models (``cv_scheme``
``random_10_fold``: Jiang et al.'s setting, a model's own data set is in the fit).
``stage`` says where the features (and the gap) are taken; ``fit_stage`` where the model was fitted
(a transfer row fits on ``late`` and predicts the held-out data sets' ``middle`` or ``early``
models); ``target`` is the gap at the stage (``gap``) or at the end of training (``final_gap``).
``sample`` is ``all`` (every model with the features at that stage) or ``all_stages`` (models
with the main features at all three stages: the stage and transfer comparisons use these, paired).

``analysis_gap_predictions`` holds the main specification's out-of-fold predictions (folds grouped by
data set) per model and row (stage, fit_stage, target, sample).

Jiang et al.'s fit (``analysis_gap_jiang``, ``analysis_gap_jiang_predictions``)
------------------------------------------------------------------------------
Estimators in :mod:`analyses.gap.jiang`, the fits in :mod:`analyses.gap.fits`. The regression above is kept
as description; the verdicts rest on a fit closer to Jiang et al. (2019):

- **exclusions, stated before any fit**: a *stalled* model (final training loss above
  :data:`~analyses.gap.jiang.STALL_LOSS_RATIO` = 0.5 times its step-0 loss: it never left the initial
  plateau) is left out; on the default corpus these are the deep sigmoid networks whose normalized margins
  of 400-2,600 (0.3-1 elsewhere) made 95 % of the old fit's cross-validated squared error. A model with label
  noise is left out too: its train accuracy is scored on the labels as trained on and no clean-label train
  accuracy is stored, so its gap is not the clean-label gap (label noise cannot be a factor of its own here;
  ``configs/gap_per_dataset.toml`` trains without it). ``n_stalled``, ``n_noisy`` and ``n_missing`` count them;
- **features**: ln Q1, ln median, ln Q3 of the normalized margins over correctly classified training points
  at input, h0 and output (9 columns, a true log: those margins are positive). The fences are dropped: they
  are exact linear combinations of the quartiles (Q1 - 1.5 IQR, Q3 + 1.5 IQR), which is what gave the old
  fit VIFs of 400-13,000. The quartiles of one layer stay strongly correlated with each other (``max_vif``
  reports it); OLS with the minimum-norm solution tolerates that, and the verdicts score predictions, not
  coefficients;
- **fits** (``predictors``): ``indicators`` (the data-set-mean model), ``log_quartiles`` and
  ``log_quartiles+indicators``, pooled (``scope = 'pooled'``) and per data set (``log_quartiles`` on one
  data set's models, for data sets with at least :data:`~analyses.gap.jiang.MIN_MODELS` = 30 kept models);
- **cross-validation**: 10 repeats of 10 random folds of models (a model's data set is in the fit, as in the
  paper); a model's prediction is the mean of its 10 out-of-fold predictions; ``r2_cv`` and ``tau_cv``
  score those, and ``r2_cv_repeat_min``/``max`` (``tau_cv_repeat_*``) give the spread over the 10 repeats
  (one 10-fold split's R^2_cv swung from -4.5 to -20 with its seed on the default corpus);
- **stages**: ``sample = 'all_stages'`` rows refit the pooled model at the early and middle snapshots, and
  the transfer rows (``fit_stage = 'late'``, stage early or middle) fit on the training folds' late
  snapshots and score the held-out models' earlier snapshots against their gap there.

Claims tested (``analysis_gap_verdicts``)
-----------------------------------------
Every row on a random-fold fit hands the core its models and a statistic that redoes the whole
cross-validation on the models it is given (:mod:`analyses.gap.resample`): its interval is a bootstrap
of the whole procedure (400 draws of the models within their data sets, folds refitted in each; a model
drawn twice stays in one fold), normal on the bootstrap SE (a percentile interval would inherit the
lower score of fits on a resample's ~63 % distinct models). The data sets are fixed: the pooled fits
carry data-set indicators, and a per-data-set fit is about that data set.

- ``gap.margins_predict_gap`` (the paper's test): R^2_cv of the margin model alone, pooled over data
  sets, predicted positive, band 0.02; ``.beyond_datasets`` (sharpened, confound "data-set identity"):
  R^2_cv of margins + indicators minus that of the indicators alone, same folds (nested);
- ``gap.margins_rank_gap``: tau_cv of the margin model alone; ``.beyond_datasets``: Kendall's tau of the
  margins + indicators predictions within data sets, pair-weighted (the data-set mean ranks no pair
  within a data set, so identity alone scores 0). Band 0.02;
- ``gap.r2_reaches_paper`` (pooled, margins + indicators) and ``gap.r2_reaches_paper.<dataset>`` (margins
  on one data set): a magnitude, ``predicted = "at_least"`` 0.89 with a band of 0.05 (supported when the
  interval's lower end reaches 0.84, not supported when its upper end stays below it);
- ``gap.late_only`` / ``gap.late_only_tau``: R^2_cv (tau within data sets) at the last snapshot minus at
  the 20 % one, same models and folds; predicted positive;
- ``gap.no_transfer`` / ``gap.no_transfer_tau``: the late fit's R^2 (tau within data sets) on held-out
  models' 50 % snapshots minus its R^2_cv (tau) at their last ones; predicted negative. R^2 drops when the
  middle gap is only a rescaled copy of the late one (calibration alone: a test plants it); tau does not,
  so only the tau row says the ranking fails to carry over;
- ``gap.margins_predict_unseen_datasets``: the old 15-column slog fit with folds grouped by data set: per
  held-out data set, the R^2 of its models' predictions from a fit that never saw it (variance by
  leaving models out), pooled across data sets by random effects (the claim is about new data sets, so
  data sets are the replicates here).

The verdicts' numbers on each built corpus are in ``docs/verdicts/``; paper 004 reports R^2 = 0.89 on
377 models, and Jiang et al. (2019) fitted networks of one data set at a time (CIFAR-10 or CIFAR-100).

Caveats
-------
- The refit bootstrap is conservative: in simulation (``benchmarks/calibration.py``) its 95 % interval
  of a cross-validated R^2 covered the procedure's expected R^2 in about 99 % of samples of 60 and 200
  models: a supported call is safe, an inconclusive one may lack power.
- On ``gap.toml``'s schedule the spectral snapshots sit at about 6 %, 20 % and 48 % of the steps (and
  at the end): the early stage there is the 20 % snapshot, the middle one the 48 % snapshot.
"""

from analyses.gap.figures import FIGURES
from analyses.gap.report import report
from analyses.gap.schema import TABLES
from analyses.gap.stage import run
from analyses.kit.stage import Stage

STAGE = Stage(
    name="gap", title="Margins and the generalization gap", doc=__doc__,
    reads=("runs", "checkpoints", "margins", "sharpness", "hessian_spectra", "layer_stats", "weights"),
    tables=TABLES, run=run, figures=FIGURES, report=report, verdicts=True,
)
