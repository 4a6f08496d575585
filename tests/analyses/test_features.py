"""The features stage's helpers."""

from __future__ import annotations

import numpy as np

from analyses.kit.features import layer_position


def test_layer_position() -> None:
    idx = np.array([0, 1, 0, 1, 2, 0, 1, 2, 3])
    n = np.array([2, 2, 3, 3, 3, 4, 4, 4, 4])
    out = np.array([False, True, False, False, True, False, False, False, True])
    assert layer_position(idx, n, out).tolist() == [
        "first", "output", "first", "last", "output", "first", "middle", "last", "output"]
