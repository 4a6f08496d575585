"""The UMAP stage's grouped k-NN: exact leave-one-group-out against sklearn, and its tie rule."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from analyses.umap.neighbours import group_neighbours, knn_vote, pairwise_distances


def test_group_knn_equals_sklearn_leave_one_group_out():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 5))
    groups = np.repeat(np.arange(12), 5)
    y = (x[:, 0] + rng.normal(0, 0.5, 60) > 0).astype(int)
    nb = group_neighbours(pairwise_distances(x), groups, k=3)
    ours = knn_vote(nb, y, 2)
    ref = cross_val_predict(KNeighborsClassifier(n_neighbors=3), x, y, groups=groups, cv=LeaveOneGroupOut())
    np.testing.assert_array_equal(ours, ref)
    assert not np.any(groups[nb] == groups[:, None])  # never a neighbour from the own group


def test_knn_vote_breaks_ties_by_the_nearest_neighbour():
    nb = np.array([[2, 0, 1, 3], [-1, -1, -1, -1]])
    labels = np.array([0, 1, 1, 0])
    assert knn_vote(nb, labels, 2).tolist() == [1, -1]  # counts 2:2, nearest (index 2) has label 1
