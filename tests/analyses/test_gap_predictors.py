"""The gap predictors: one fixed transform per feature column."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.gap import predictors


def test_every_feature_has_one_fixed_transform() -> None:
    for family, features, _ in predictors.SPECIFICATIONS.values():
        assert family in ("margins", "other", "combined")
        assert all(f in predictors.TRANSFORMS for f in features)
    frame = pl.DataFrame({"m_input_q1": [-2.0, 0.0, 3.0], "n_params": [10.0, 100.0, None]})
    X = predictors.design(frame, ("m_input_q1", "n_params"))
    np.testing.assert_allclose(X[:, 0], np.sign([-2, 0, 3]) * np.log1p([2, 0, 3]))
    np.testing.assert_allclose(X[:2, 1], np.log([10.0, 100.0]))
    assert np.isnan(X[2, 1])
