"""The propagation stage's verdicts: paper 002's claims, tested on paired differences within cells."""

from __future__ import annotations

import polars as pl

from analyses.propagation.cells import lr_range_units, paired_difference_units
from analyses.stats import ClaimData, Mean, Verdict, mean_ci
from pipeline.curvature.shadows import SHADOW_RATIO, SHADOW_WINDOW

SOURCE = "002"
#: Effects smaller than these are negligible (the verdict rule's band): test metric, coherence.
NEGLIGIBLE_METRIC, NEGLIGIBLE_COHERENCE = 0.005, 0.01
METRIC_UNITS = "test metric (accuracy or R^2)"
_LR_UNITS, _SEED_UNITS = "(data set, lr) units", "(data set, seed) units"


def unit_claim_data(units: pl.DataFrame) -> ClaimData:
    """The paired differences ``d`` of ``units`` (one row per unit, with ``dataset``) as claim rows: each
    unit is its own replicate (``run_id`` names it), the statistic their mean, and the confound "twins":
    the arms of a cell share initialization and batches until synthesis, so the paired difference
    already removes what the twins have in common; no further baseline."""
    keys = [c for c in units.columns if c != "d"]
    rows = units.with_columns(run_id=pl.concat_str([pl.col(k).cast(pl.Utf8) for k in keys], separator="/"))
    return ClaimData(rows.select("run_id", "dataset"), Mean(rows["d"].to_numpy().astype(float)),
                     confound="twins (paired within cells, by design)")


def _mean_verdict(claim_id: str, claim: str, test: str, effect_name: str, units: pl.DataFrame, unit: str,
                  negligible: float, band_units: str) -> Verdict:
    """The claim that the mean of the units' paired differences is positive: the stage's t interval beside
    it, and the units handed over (their mean per data set, pooled across data sets by random effects)."""
    values = units["d"].to_numpy().astype(float)
    return Verdict.of(mean_ci(values, unit), claim_id, SOURCE, claim, test + "; mean per data set, pooled by random "
                      "effects", effect_name, "positive", negligible=negligible, band_units=band_units,
                      detail=f"SHADOW_RATIO {SHADOW_RATIO}, window {SHADOW_WINDOW}",
                      data=unit_claim_data(units) if units.height else None)


def verdicts(frame: pl.DataFrame) -> list[Verdict]:
    """The four verdicts from ``analysis_propagation_runs`` rows (``frame``)."""
    by_lr = ["dataset", "lr"]
    return [
        _mean_verdict(
            "propagation.synthesis_beats_plain", "Skip-connections synthesized where the coupling map shows shadows "
            "improve the final test metric of deep plain networks",
            "paired difference synthesized - plain within cells, seeds averaged per (data set, lr); t interval",
            "final test metric difference",
            paired_difference_units(frame, "synthesized", "plain", "final_test_metric", by_lr), _LR_UNITS,
            NEGLIGIBLE_METRIC, METRIC_UNITS),
        _mean_verdict(
            "propagation.synthesis_beats_random", "Synthesized edges improve the final test metric more than the "
            "same number of randomly placed gated edges",
            "paired difference synthesized - random within cells, seeds averaged per (data set, lr); t interval",
            "final test metric difference",
            paired_difference_units(frame, "synthesized", "random", "final_test_metric", by_lr), _LR_UNITS,
            NEGLIGIBLE_METRIC, METRIC_UNITS),
        _mean_verdict(
            "propagation.synthesis_lowers_lr_sensitivity", "Synthesized edges lower the dependence on the learning "
            "rate",
            "per (data set, seed): range over learning rates of the final test metric, plain - synthesized; "
            "t interval",
            "reduction of the learning-rate range", lr_range_units(frame, "synthesized", "plain"), _SEED_UNITS,
            NEGLIGIBLE_METRIC, METRIC_UNITS),
        _mean_verdict(
            "propagation.synthesis_restores_coherence",
            "Synthesized edges restore the coherence of curvature between blocks",
            "paired difference of the final global coherence (mean kappa over path pairs), synthesized - plain, "
            "seeds averaged per (data set, lr); t interval", "final coherence difference",
            paired_difference_units(frame, "synthesized", "plain", "coherence_last", by_lr), _LR_UNITS,
            NEGLIGIBLE_COHERENCE, "coherence (mean kappa)"),
    ]
