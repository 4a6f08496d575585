"""The train-fraction sweeps of the topology stage's correlation table (:mod:`analyses.topology.correlations`)."""

from __future__ import annotations

import polars as pl
import pytest

from analyses.topology.correlations import sweep_spearman


def test_sweeps_need_three_fractions() -> None:
    frame = pl.DataFrame({
        "sweep": ["a"] * 5 + ["b"] * 2 + ["c"] * 3,
        "dataset": ["d1"] * 5 + ["d2"] * 2 + ["d3"] * 3,
        "train_fraction": [0.05, 0.1, 0.25, 0.5, 1.0, 0.5, 1.0, 0.1, 0.5, 1.0],
        "final": [0.9, 0.8, 0.85, 0.6, 0.5, 1.0, 2.0, 1.0, 2.0, 3.0]})
    out = sweep_spearman(frame).sort("sweep")
    assert out["sweep"].to_list() == ["a", "c"]
    assert out["spearman"].to_list() == pytest.approx([-0.9, 1.0])
