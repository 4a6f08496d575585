"""The UMAP stage's snapshot vector: imputation, pruning and standardization."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.umap.snapshot_vector import standardize_features


def test_standardize_imputes_drops_and_scales():
    raw = np.array([[1.0, np.nan, 5.0, np.inf], [2.0, np.nan, 5.0, 1.0], [np.nan, np.nan, 5.0, 3.0],
                    [5.0, np.nan, 5.0, 2.0]])
    z, kept, imputed = standardize_features(raw, ["a", "all_nan", "constant", "d"])
    assert kept == ["a", "d"]
    assert imputed == pytest.approx(2 / 8)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1)
    a = np.array([1.0, 2.0, 2.0, 5.0])  # the NaN took the median of 1, 2, 5
    np.testing.assert_allclose(z[:, 0], (a - a.mean()) / a.std())
