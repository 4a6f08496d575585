"""The statistics every analysis stage shares, written once.

- :mod:`.estimate`: :class:`Estimate`, the named result (value, interval, p, n and its unit) every
  interval estimator returns;
- :mod:`.standardize`: z-scores and ranks within groups (one data set, one architecture);
- :mod:`.correlation`: Pearson, Spearman and partial correlations, plain and within groups, with
  their intervals;
- :mod:`.bootstrap`: percentile intervals by resampling rows or whole clusters;
- :mod:`.intervals`: means, proportions (Wilson, design effects) and multiple-testing adjustment;
- :mod:`.meta`: the random-effects pool of per-data-set estimates (HKSJ intervals);
- :mod:`.estimands`: what a claim estimates, and each data set's estimate with its variance;
- :mod:`.claims`: a claim's rows and estimand, pooled across data sets, with leave-one-group-out ranges;
- :mod:`.verdict`: the verdict rule (with equivalence), the paper/sharpened pairing, Holm, and the
  verdict table's declaration.

Every interval is two-sided at :data:`CONFIDENCE`.
"""

from analyses.stats.bootstrap import (
    N_BOOTSTRAP,
    bootstrap_mean_interval,
    cluster_bootstrap,
    percentile_interval,
    permutation_p,
    row_bootstrap,
    stratified_bootstrap,
    stratified_resamples,
)
from analyses.stats.claims import ClaimData, Inference, assess
from analyses.stats.correlation import (
    partial_r,
    partial_residuals,
    pearson,
    pearson_ci,
    pearson_rows,
    spearman,
    within_group_pearson,
    within_group_r,
    within_partial_r,
    within_r,
    within_run_ranks,
)
from analyses.stats.estimands import Concordance, Correlation, Estimand, Jackknifed, Mean, Resampled
from analyses.stats.estimate import CONFIDENCE, Estimate
from analyses.stats.intervals import bh_adjust, mean_ci, mean_t_p, wilson_ci
from analyses.stats.meta import Pooled, random_effects
from analyses.stats.standardize import rank_within, standardize_batched, standardize_within
from analyses.stats.verdict import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    VERDICT_COLUMNS,
    Direction,
    Verdict,
    decide,
)

__all__ = [
    "CONFIDENCE", "ClaimData", "Concordance", "Correlation", "Direction", "Estimand", "Estimate", "INCONCLUSIVE",
    "Inference", "Jackknifed", "Mean", "Resampled", "NOT_SUPPORTED", "N_BOOTSTRAP", "Pooled", "SUPPORTED",
    "VERDICT_COLUMNS", "Verdict", "assess", "bh_adjust", "bootstrap_mean_interval", "cluster_bootstrap", "decide",
    "mean_ci", "mean_t_p", "partial_r", "partial_residuals", "pearson", "pearson_ci", "pearson_rows",
    "percentile_interval", "permutation_p", "random_effects", "rank_within", "row_bootstrap", "spearman",
    "standardize_batched", "standardize_within", "stratified_bootstrap", "stratified_resamples", "wilson_ci",
    "within_group_pearson", "within_group_r", "within_partial_r", "within_r", "within_run_ranks",
]
