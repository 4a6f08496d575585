"""The UMAP stage's snapshot vector: imputation, pruning and standardization."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from analyses.umap.snapshot_vector import label_sql, standardize_features


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


def test_architecture_labels_name_the_widths():
    """activation[-norm] and widths; more than two equal widths shortened to w(xL); no widths: the preset."""
    con = duckdb.connect()
    con.execute("CREATE TABLE a AS SELECT * FROM (VALUES ('r1', 'relu', 'none', 'custom-relu'), "
                "('r2', 'sigmoid', 'batchnorm', 'medium-sigmoid-batchnorm'), "
                "('r3', 'sigmoid', 'none', 'custom-sigmoid'), "
                "('r4', 'relu', 'none', 'large-relu'), ('r5', 'tanh', 'none', 'small-tanh')) "
                "t(run_id, activation, norm, architecture)")
    con.execute("CREATE TABLE r AS SELECT * FROM (VALUES ('r1', [32, 16]), ('r2', [64, 64]), "
                "('r3', [16, 16, 16, 16, 16, 16, 16, 16]), ('r4', [256, 256, 256]), ('r5', NULL::INTEGER[])) "
                "t(run_id, widths)")
    arch, widths = label_sql()
    got = con.execute(f"SELECT {arch}, {widths} FROM a LEFT JOIN r USING (run_id) ORDER BY a.run_id").fetchall()
    assert got == [("relu 32x16", "32x16"), ("sigmoid-batchnorm 64x64", "64x64"), ("sigmoid 16(x8)", "16(x8)"),
                   ("relu 256(x3)", "256(x3)"), ("small-tanh", None)]
