"""Dynamics verdicts: four phases and concentration, supported on planted effects, not supported on the
reversed ones, inconclusive on too little data."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.dynamics.phases import PHASES
from analyses.dynamics.verdicts import concentration_verdict, four_phase_verdict
from analyses.stats import assess


def test_verdicts_planted_and_reversed():
    four = four_phase_verdict([list(PHASES)] * 12)
    assert four.verdict == "supported"
    # handed over with their runs: a share with a Wilson interval on the runs' effective number
    runs = [(f"r{i}", f"d{i % 3}") for i in range(12)]
    pooled = four_phase_verdict([list(PHASES)] * 9 + [["initial"]] * 3, None, runs)
    row = pooled.row("dynamics", assess(pooled.data, pooled.predicted, pooled.null_value))
    assert row["effect"] == 0.75 and "Wilson" in row["interval_method"] and row["n_datasets"] == 3
    two = four_phase_verdict([["initial", "fast learning"]] * 12)
    assert two.verdict == "not supported" and two.effect == 0.0
    # runs too short to resolve four phases are no evidence either way
    short = four_phase_verdict([["initial", "fast learning"]] * 12, [9] * 12)
    assert short.verdict == "inconclusive" and "too few to resolve" in short.detail
    rng = np.random.default_rng(0)
    runs = np.repeat([f"r{i}" for i in range(10)], 3)
    delta = -0.4 + 0.1 * rng.normal(size=30)
    planted = concentration_verdict(pl.DataFrame({"run_id": runs, "delta": delta}), "loss")
    assert planted.verdict == "supported" and planted.effect < 0 and planted.n == 10
    reversed_ = concentration_verdict(pl.DataFrame({"run_id": runs, "delta": -delta}), "loss")
    assert reversed_.verdict == "not supported"
    empty = concentration_verdict(pl.DataFrame({"run_id": [], "delta": []},
                                               schema={"run_id": pl.Utf8, "delta": pl.Float64}), "local")
    assert empty.verdict == "inconclusive"
