"""CCA held-out estimate: folds recover a planted canonical correlation and keep the training sign; the
Fisher-z mean over folds."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.cca.heldout import fisher_mean_ci, heldout_first_correlations
from tests.analyses.test_cca_canonical import RHO, planted_blocks


def test_heldout_recovers_planted_correlation_with_training_sign() -> None:
    x, y = planted_blocks(2000, RHO, seed=1)
    groups = np.repeat(np.arange(5), 400)
    folds = heldout_first_correlations(x, y, groups, n_splits=5)
    r = np.array([f.heldout_correlation for f in folds])
    assert len(folds) == 5 and np.all(np.abs(r - RHO) < 0.05)
    assert sorted(np.concatenate([f.test_index for f in folds]).tolist()) == list(range(2000))
    # a held-out group whose relation is reversed scores negative: the sign comes from the training fit
    y2 = y.copy()
    y2[groups == 4] *= -1
    folds = heldout_first_correlations(x, y2, groups, n_splits=5)
    reversed_fold = next(f for f in folds if set(groups[f.test_index]) == {4})
    assert reversed_fold.heldout_correlation < -0.8


def test_fisher_mean_ci() -> None:
    est = fisher_mean_ci(np.array([0.5, 0.6, np.nan, 0.7]))
    assert est.n == 3 and est.low < est.value < est.high < 1 and est.p < 0.05
    assert est.value == pytest.approx(np.tanh(np.arctanh([0.5, 0.6, 0.7]).mean()))
    assert np.isnan(fisher_mean_ci(np.array([0.5])).low)
