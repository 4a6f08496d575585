"""The paper's practical guide (001 §5.2, §5.5 items 1-7 and its "generalized practical guide") as
explicit rules with named thresholds, applied to every layer snapshot of the corpus. Each rule that
fires writes a finding that names the run, step and layer, a severity, and the values the rule looked
at beside its thresholds. Normalized runs are compared with their unnormalized twins (§5.2), and seven
verdicts test the claims the rules rest on.

Tables
------
``findings``
    One row per finding. ``layer_index`` is NULL for a run-level finding (``normalization_effect``,
    whose ``step`` is NULL too); ``evidence`` holds every value the rule looked at and its thresholds
    (``<quantity>_threshold`` for the warning level, ``<quantity>_critical_threshold`` for the critical
    one).
``analysis_diagnostics_summary``
    One row per rule and severity the rule can give, zero counts included, so a rule that never fired
    is visible; ``threshold`` states the rule's conditions.
``analysis_diagnostics_normalization``
    For each run with a normalization layer and its unnormalized twin (the run whose configuration is
    identical but for ``norm``, ignoring only measurement settings: ``TWIN_IGNORED_FIELDS`` of
    ``normalization.py``), the run-level value of each metric of ``NORMALIZATION_METRICS`` (mean over
    hidden-layer rows of every spectral snapshot) with and without, and difference = with - without.
``analysis_diagnostics_verdicts``
    the verdict rows (see ``analyses.stats.verdict``).

Derived quantities (``derived.derive_columns``)
-----------------------------------------------
- ``local_eligible``: a hidden layer whose activation has A'' != 0 (not ReLU or identity) and whose
  local Hessian is not identically zero. Elsewhere the local Hessian with phi = sum is exactly zero by
  construction (DESIGN 1): structural, not saturation, so no local-Hessian rule looks at it.
- ``local_structural_zero_fraction`` s = max(0, 1 - N / (d + 1)) (each block has rank <= min(N, d + 1),
  N probe points, d inputs) and ``local_excess_near_zero`` = (near_zero_fraction - s) / (1 - s): the
  near-zero share among eigenvalues that are not forced to zero (= the raw fraction when N > d).
- ``relative_grad_norm`` = ||grad W|| at the snapshot / ||grad W|| of the same layer at the run's first
  spectral snapshot (NULL when that is 0): how far the gradient has fallen since initialization.
- ``loss_effective_rank`` = loss_effective_rank_ratio x q (d + 1): sum|lambda| / max|lambda| itself.
- ``adjacent_chance`` = E|cos angle| between two independent uniformly random directions in R^n,
  Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)) ~ sqrt(2 / (pi n)), n = the layer's output width (the space
  the two layers share): what ``adjacent_similarity`` would be for unrelated layers with k = 1 (larger k
  give larger chance values, so the rule is conservative).

Rules
-----
One pure function per rule (frame in, finding rows out; ``rules.py``, ``normalization.py``), whose
docstring states its conditions; the thresholds are named constants beside them, each with its reason.
A rule with several conditions fires when every condition reaches its warning threshold. Warning
(critical) thresholds:

- ``saturated_layer`` (§5.2, Claim 2): local_excess_near_zero >= 0.5 (0.8) and saturation_fraction
  >= 0.5 (0.8), on ``local_eligible`` layers only;
- ``saddle`` (§5.5.6): loss_symmetry < 0.25 (0.1), loss_negative_mass >= 0.3 (0.4) and
  relative_grad_norm < 0.1 (0.01); the first snapshot never fires;
- ``low_rank_weights`` (§5.5.1): weight_rank_ratio < 0.5 (0.25);
- ``low_rank_hessian`` (§5.5.1): loss_effective_rank < 2 (1.25), an absolute count, since the corpus'
  effective ranks are O(1-30) whatever the layer's size;
- ``small_spectral_std`` (§5.5.4): loss_relative_std below the corpus' 5th percentile for the same layer
  position (hidden / output, given 20 reference rows) is a warning, below 1 critical;
- ``small_eigenvalues_last_layers`` (§5.5.2): the last hidden layer's local_excess_near_zero exceeds
  layer 0's by 0.2 (0.4), in networks of >= 2 hidden layers whose first and last are ``local_eligible``;
- ``bias_dominated`` (§5.5.5): the bias share over its no-structure baseline 1/(d+1) >= 4 (8) in the
  local (``local_eligible`` layers) or loss Hessian;
- ``rigid_direction`` (§5.5.3): weight-gradient alignment >= 0.5 (0.75);
- ``adjacent_dissimilarity`` (§5.5.7): adjacent_similarity / adjacent_chance < 1 (0.5);
- ``normalization_effect`` (§5.2, run level, ``info``): a normalized run whose mean hidden-layer
  saturation is not lower than its unnormalized twin's.

Severity: each condition has a warning and a critical threshold (``findings.Threshold``, the critical
one further from healthy values). A finding is ``critical`` when every condition reaches its critical
threshold, ``warning`` otherwise; ``info`` marks a comparison, not a fault (``normalization_effect``).

Verdicts
--------
- ``diagnostics.saturation_near_zero`` (Claim 2 / §5.2): r(saturation_fraction, local_excess_near_zero)
  over ``local_eligible`` layer snapshots, predicted positive; ``.beyond_time``: the partial r given
  ln(1 + step) (snapshots of all training times are pooled, and both sides drift with training);
- ``diagnostics.normalization_saturation`` (§5.2): mean saturation difference with - without
  normalization, averaged per unnormalized twin, predicted negative (the twins control the rest);
- ``diagnostics.bias_share_local`` and ``diagnostics.bias_share_loss`` (§5.5.5): mean over runs of the
  run-mean bias share ratio of the trained layers (snapshots after the first) against the no-structure
  null 1, predicted positive (the paper's test); ``.beyond_init``: trained minus untrained (the same
  layers at the first snapshot) per run, null 0, since an untrained layer already scores far above 1
  (a random layer's structure); band 0.1 of the ratio;
- ``diagnostics.symmetry_gradient`` (§5.5.6): r(loss_symmetry, log10 relative_grad_norm) over
  ``local_eligible`` layers after the first snapshot, predicted positive; ``.beyond_time`` as above;
- ``diagnostics.last_layer_near_zero_gap`` (§5.5.2): r(last minus first hidden layer local_excess_near_zero,
  gap_loss) at each run's last snapshot, predicted positive; ``.beyond_time``: the partial r given ln
  steps (the final train loss, a mediator of overfitting, is not partialled out);
- ``diagnostics.alignment_progress`` (§5.5.3): r(layer-mean alignment at snapshot k, relative train-loss
  decrease per e-fold of steps from k to k + 1), both z-scored across runs at the same snapshot index
  (training time held by design), predicted negative.

Every verdict is decided within data sets and pooled across them by a random-effects meta-analysis
(:mod:`analyses.stats.claims`); correlations over layer snapshots take their within-data-set variance
from leaving whole runs out (a run's snapshots are not independent), so n counts runs, and their band
is |r| < 0.1. The stage's own estimate beside each row pools the snapshots with a percentile bootstrap
over whole runs.
"""

from analyses.diagnostics.figures import FIGURES
from analyses.diagnostics.report import report
from analyses.diagnostics.schema import TABLES
from analyses.diagnostics.stage import run
from analyses.kit.stage import Stage

STAGE = Stage(
    name="diagnostics", title="Diagnostics: the practical guide as rules", doc=__doc__,
    reads=("analysis_features_layer", "analysis_features", "runs"), tables=TABLES, run=run, figures=FIGURES,
    report=report, verdicts=True,
)
