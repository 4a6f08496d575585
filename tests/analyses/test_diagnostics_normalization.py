"""Diagnostics, normalization: twins are matched exactly (measurement settings ignored), the comparison
is with - without, and the run-level finding is ``info``."""

from __future__ import annotations

import polars as pl
import pytest

from analyses.diagnostics import normalization
from analyses.diagnostics.derived import derive_columns
from tests.analyses.diagnostics_inputs import FLOATS, HEALTHY, runs_with_configs


def test_normalization_twins_comparison_and_info_finding():
    runs = runs_with_configs()
    twins = normalization.normalization_twins(runs)
    assert twins.rows() == [("bn", "plain"), ("ln", "plain")]
    layer = pl.DataFrame([{**HEALTHY, "run_id": r, "norm": n, "saturation_fraction": s}
                          for r, n, s in (("plain", "none", 0.3), ("bn", "batchnorm", 0.1),
                                          ("ln", "layernorm", 0.4), ("ln_other_lr", "layernorm", 0.0))])
    layer = layer.with_columns(pl.col(FLOATS).cast(pl.Float64))
    comparison = normalization.normalization_comparison(derive_columns(layer, runs), twins)
    sat = comparison.filter(pl.col("metric") == "saturation_fraction").sort("run_id")
    assert sat["difference"].to_list() == pytest.approx([-0.2, 0.1])
    found = normalization.rule_normalization_effect(comparison)
    assert found["run_id"].to_list() == ["ln"] and found["severity"].to_list() == ["info"]
    assert found["step"].to_list() == [None] and found["layer_index"].to_list() == [None]

