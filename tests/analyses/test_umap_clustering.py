"""The UMAP stage's clustering scores (001 §5.6): planted clusters, labels shuffled among runs, and
anti-clustered labels."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.stats import decide
from analyses.umap.clustering import cluster_scores


def _blobs(seed: int = 0, n_labels: int = 4, groups_per_label: int = 5, per_group: int = 6, dim: int = 8,
           spread: float = 20.0):
    """Well-separated Gaussian blobs, one per label; each group (run) a small cloud inside its blob."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, size=(n_labels, dim))
    x, labels, groups = [], [], []
    for lab in range(n_labels):
        for g in range(groups_per_label):
            centre = centres[lab] + rng.normal(0, 1.0, dim)
            x.append(centre + rng.normal(0, 0.3, (per_group, dim)))
            labels += [f"arch{lab}"] * per_group
            groups += [f"run{lab}_{g}"] * per_group
    return np.vstack(x), np.array(labels), np.array(groups)


def test_planted_clusters_score_near_one_and_beat_the_shuffled_baseline():
    x, labels, groups = _blobs()
    s = cluster_scores(x, labels, groups, n_perm=100, n_boot=300)
    assert s.silhouette > 0.9
    assert s.accuracy.value > 0.9 and s.balanced_accuracy > 0.9
    assert s.accuracy.value > s.shuffled.high
    assert s.shuffled.value < 0.5
    assert s.silhouette > s.silhouette_shuffled.high
    assert s.effect.low > 0.4 and s.effect.p < 0.05
    assert s.majority_rate == pytest.approx(0.25)
    assert s.n == 120 and s.n_groups == 20 and s.n_classes == 4
    assert s.correct.shape == (120,) and s.correct.mean() == pytest.approx(s.accuracy.value)


def test_labels_shuffled_among_groups_score_at_chance():
    x, labels, groups = _blobs()
    uniq = list(dict.fromkeys(groups))
    run_label = dict(zip(uniq, np.random.default_rng(7).permutation([labels[groups == g][0] for g in uniq]),
                         strict=True))
    shuffled = np.array([run_label[g] for g in groups])
    s = cluster_scores(x, shuffled, groups, n_perm=200, n_boot=300)
    assert s.shuffled.low <= s.accuracy.value <= s.shuffled.high
    assert s.accuracy.value < 0.6
    assert s.effect.low < 0 < s.effect.high
    assert s.effect.p > 0.05


def test_anti_clustered_labels_make_the_verdict_not_supported():
    """Runs on a line with alternating labels: a run's nearest other run always has the other label."""
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(16), 4)
    x = np.column_stack([10.0 * groups + rng.normal(0, 0.1, 64), rng.normal(0, 0.1, 64)])
    labels = np.where(groups % 2 == 0, "A", "B")
    s = cluster_scores(x, labels, groups, k=1, n_perm=200, n_boot=300)
    assert s.accuracy.value == 0.0
    assert decide(s.effect.low, s.effect.high, "positive") == "not supported"
