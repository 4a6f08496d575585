"""CCA blocks: constant and near-collinear columns are dropped."""

from __future__ import annotations

import numpy as np

from analyses.cca.blocks import select_columns


def test_select_columns_drops_constant_and_collinear() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    block = np.column_stack([a, np.ones(100), b, a - b, rng.normal(size=100)])
    assert select_columns(block, list("abcde")) == [0, 2, 4]
