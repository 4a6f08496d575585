"""The statistics every analysis stage shares, written once.

- :mod:`.estimate`: :class:`Estimate`, the named result (value, interval, p, n and its unit) every
  interval estimator returns;
- :mod:`.standardize`: z-scores and ranks within groups (one data set, one architecture);
- :mod:`.correlation`: Pearson, Spearman and partial correlations, plain and within groups, with
  their intervals;
- :mod:`.bootstrap`: percentile intervals by resampling rows or whole clusters;
- :mod:`.intervals`: means, proportions and multiple-testing adjustment;
- :mod:`.claims`: a claim's rows and statistics, and their two-level bootstrap, baseline and
  leave-one-group-out assessment;
- :mod:`.verdict`: the verdict rule and the verdict table's declaration.

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
from analyses.stats.claims import ClaimData, assess, two_level_resamples
from analyses.stats.correlation import (
    partial_residuals,
    pearson,
    pearson_ci,
    pearson_rows,
    spearman,
    within_group_pearson,
    within_group_r,
    within_partial_r,
    within_r,
)
from analyses.stats.estimate import CONFIDENCE, Estimate
from analyses.stats.intervals import bh_adjust, mean_ci, mean_t_p, wilson_ci
from analyses.stats.standardize import rank_within, standardize_batched, standardize_within
from analyses.stats.verdict import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    VERDICT_COLUMNS,
    Direction,
    Verdict,
    decide,
    write_verdicts,
)

__all__ = [
    "CONFIDENCE", "ClaimData", "Direction", "Estimate", "INCONCLUSIVE", "NOT_SUPPORTED", "N_BOOTSTRAP", "SUPPORTED",
    "VERDICT_COLUMNS", "Verdict", "assess", "bh_adjust", "bootstrap_mean_interval", "cluster_bootstrap", "decide",
    "mean_ci", "mean_t_p", "partial_residuals", "pearson", "pearson_ci", "pearson_rows", "percentile_interval",
    "permutation_p", "rank_within", "row_bootstrap", "spearman", "standardize_batched", "standardize_within",
    "stratified_bootstrap", "stratified_resamples", "two_level_resamples", "wilson_ci", "within_group_pearson",
    "within_group_r", "within_partial_r", "within_r", "write_verdicts",
]
