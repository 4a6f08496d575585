"""The propagation stage's verdicts: paper 002's claims, tested on paired differences within cells."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.propagation.cells import lr_range_difference, paired_differences
from analyses.stats import Verdict, mean_ci
from pipeline.propagation.shadows import SHADOW_RATIO, SHADOW_WINDOW

SOURCE = "002"
#: Effects smaller than these are negligible (the verdict rule's band): test metric, coherence.
NEGLIGIBLE_METRIC, NEGLIGIBLE_COHERENCE = 0.005, 0.01
_LR_UNITS, _SEED_UNITS = "(data set, lr) units", "(data set, seed) units"


def _mean_verdict(claim_id: str, claim: str, test: str, effect_name: str, values: np.ndarray, unit: str,
                  negligible: float) -> Verdict:
    """The claim that the mean of ``values`` (one per unit) is positive: t interval, one-sample t p."""
    return Verdict.of(mean_ci(values, unit), claim_id, SOURCE, claim, test, effect_name, "positive",
                      negligible=negligible, detail=f"SHADOW_RATIO {SHADOW_RATIO}, window {SHADOW_WINDOW}")


def verdicts(frame: pl.DataFrame) -> list[Verdict]:
    """The four verdicts from ``analysis_propagation_runs`` rows (``frame``)."""
    by_lr = ["dataset", "lr"]
    return [
        _mean_verdict(
            "propagation.synthesis_beats_plain", "Skip-connections synthesized where the coupling map shows shadows "
            "improve the final test metric of deep plain networks",
            "paired difference synthesized - plain within cells, seeds averaged per (data set, lr); t interval",
            "final test metric difference",
            paired_differences(frame, "synthesized", "plain", "final_test_metric", by_lr), _LR_UNITS,
            NEGLIGIBLE_METRIC),
        _mean_verdict(
            "propagation.synthesis_beats_random", "Synthesized edges improve the final test metric more than the "
            "same number of randomly placed gated edges",
            "paired difference synthesized - random within cells, seeds averaged per (data set, lr); t interval",
            "final test metric difference",
            paired_differences(frame, "synthesized", "random", "final_test_metric", by_lr), _LR_UNITS,
            NEGLIGIBLE_METRIC),
        _mean_verdict(
            "propagation.synthesis_lowers_lr_sensitivity", "Synthesized edges lower the dependence on the learning "
            "rate",
            "per (data set, seed): range over learning rates of the final test metric, plain - synthesized; "
            "t interval",
            "reduction of the learning-rate range", lr_range_difference(frame, "synthesized", "plain"), _SEED_UNITS,
            NEGLIGIBLE_METRIC),
        _mean_verdict(
            "propagation.synthesis_restores_coherence",
            "Synthesized edges restore the coherence of curvature between blocks",
            "paired difference of the final global coherence (mean kappa over path pairs), synthesized - plain, "
            "seeds averaged per (data set, lr); t interval", "final coherence difference",
            paired_differences(frame, "synthesized", "plain", "coherence_last", by_lr), _LR_UNITS,
            NEGLIGIBLE_COHERENCE),
    ]
