"""How well points cluster by a label beyond what their grouping into runs explains: silhouette and
leave-one-group-out k-NN accuracy, each against labels permuted among groups, with intervals from a
bootstrap over groups (see the stage docstring, "Scores")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import silhouette_score

from analyses.stats import N_BOOTSTRAP, Estimate, percentile_interval, permutation_p
from analyses.umap.neighbours import group_neighbours, knn_vote, pairwise_distances

#: Neighbours of the k-NN classifier.
KNN_K = 5
#: Label permutations among runs for the shuffled baseline.
N_PERMUTATIONS = 200
#: Seed of every permutation and bootstrap.
SEED = 0


@dataclass(frozen=True)
class ClusterScores:
    """The scores of :func:`cluster_scores`; NaN (or an :meth:`Estimate.missing`) where undefined.

    ``silhouette_shuffled`` and ``shuffled`` are the permutation distributions (labels permuted among
    groups) of the silhouette and the k-NN accuracy: their mean, 2.5-97.5% quantiles as ``low``/``high``
    and the permutation p of the observed value, ``(1 + #{shuffled >= observed}) / (1 + permutations)``.
    ``accuracy`` is the k-NN accuracy with a bootstrap-over-groups interval; ``effect`` the accuracy
    minus the shuffled mean with a paired bootstrap interval and the accuracy's permutation p. The
    estimates count groups (``n = n_groups``, unit "runs"). ``correct`` (n,) says whether each point's
    k-NN vote was right (empty when there was no vote): the rows a claim's bootstrap resamples.
    """

    n: int
    n_groups: int
    n_classes: int
    majority_rate: float
    silhouette: float
    silhouette_shuffled: Estimate
    accuracy: Estimate
    balanced_accuracy: float
    shuffled: Estimate
    effect: Estimate
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def _codes(values) -> tuple[np.ndarray, list]:
    uniq = sorted(set(values), key=str)
    index = {v: i for i, v in enumerate(uniq)}
    return np.array([index[v] for v in values], dtype=int), uniq


def _per_group(correct: np.ndarray, gidx: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(gidx, weights=correct.astype(float), minlength=n_groups)


def _silhouette(d: np.ndarray, labels: np.ndarray) -> float:
    k = len(np.unique(labels))
    if k < 2 or k > len(labels) - 1:
        return math.nan
    return float(silhouette_score(d, labels, metric="precomputed"))


def _group_labels(labels: np.ndarray, gidx: np.ndarray, n_groups: int) -> np.ndarray:
    """One label per group: the most common label of its rows (labels are meant to be constant)."""
    out = np.zeros(n_groups, dtype=int)
    for g in range(n_groups):
        out[g] = np.bincount(labels[gidx == g]).argmax()
    return out


def cluster_scores(x: np.ndarray, labels, groups, cv_groups=None, k: int = KNN_K,
                   n_perm: int = N_PERMUTATIONS, n_boot: int = N_BOOTSTRAP, seed: int = SEED,
                   silhouette: bool = True, unit: str = "runs") -> ClusterScores:
    """How well points cluster by label, beyond what their grouping alone explains.

    ``x`` (n, p) points (standardized features or an embedding); ``labels`` (n,) class of each
    point, constant within a group; ``groups`` (n,) the permutation and bootstrap unit (a run, counted
    in ``unit``); ``cv_groups`` (n,) the cross-validation unit (default ``groups``): a point's
    neighbours are taken only outside its cv group (exact leave-one-group-out k-NN, ``k`` neighbours).

    The permutations draw, from one generator seeded ``seed``, ``n_perm`` permutations of the group
    labels, then ``n_boot`` resamples of the groups; ``silhouette`` false skips the silhouette.
    Intervals need at least 3 groups; with fewer than 2 groups or classes only the majority rate is set.
    """
    x = np.asarray(x, dtype=float)
    y, _ = _codes(list(labels))
    gidx, gnames = _codes(list(groups))
    cv = gidx if cv_groups is None else _codes(list(cv_groups))[0]
    n, n_groups, n_classes = len(y), len(gnames), int(y.max()) + 1 if len(y) else 0
    none = Estimate.missing(n_groups, unit)
    sil, sil_null, majority = math.nan, none, math.nan
    acc, balanced, shuffled, effect = none, math.nan, none, none
    if n:
        majority = float(np.bincount(y).max() / n)
    if n == 0 or n_groups < 2 or n_classes < 2:
        return ClusterScores(n, n_groups, n_classes, majority, sil, sil_null, acc, balanced, shuffled, effect)
    rng = np.random.default_rng(seed)
    glab = _group_labels(y, gidx, n_groups)
    perms = [glab[rng.permutation(n_groups)][gidx] for _ in range(n_perm)]
    d = pairwise_distances(x)
    if silhouette:
        sil = _silhouette(d, y)
        if math.isfinite(sil):
            null = np.array([_silhouette(d, p) for p in perms[:n_perm]])
            null = null[np.isfinite(null)]
            if len(null):
                sil_null = Estimate(float(null.mean()), *percentile_interval(null), n_groups, unit,
                                    p=permutation_p(null, sil))
    nb = group_neighbours(d, cv, k)
    correct = knn_vote(nb, y, n_classes) == y
    accuracy = float(correct.mean())
    balanced = float(np.mean([correct[y == c].mean() for c in np.unique(y)]))
    null_correct = np.array([knn_vote(nb, p, n_classes) == p for p in perms]) if n_perm else np.zeros((0, n))
    knn_p, shuffled_mean = math.nan, math.nan
    if n_perm:
        null_acc = null_correct.mean(axis=1)
        shuffled_mean, knn_p = float(null_acc.mean()), permutation_p(null_acc, accuracy)
        shuffled = Estimate(shuffled_mean, *percentile_interval(null_acc), n_groups, unit, p=knn_p)
    acc_ci, effect_ci = (math.nan, math.nan), (math.nan, math.nan)
    if n_groups >= 3 and n_boot > 0:
        # resample whole groups; the shuffled accuracy is recomputed on the same resampled groups (paired)
        sizes = np.bincount(gidx, minlength=n_groups).astype(float)
        c_obs = _per_group(correct, gidx, n_groups)
        pick = rng.integers(0, n_groups, size=(n_boot, n_groups))
        tot = sizes[pick].sum(axis=1)
        boot_acc = c_obs[pick].sum(axis=1) / tot
        acc_ci = percentile_interval(boot_acc)
        if n_perm:
            c_null = np.array([_per_group(c, gidx, n_groups) for c in null_correct])  # (P, G)
            boot_null = np.stack([c_null[:, row].sum(axis=1) for row in pick]).mean(axis=1) / tot
            effect_ci = percentile_interval(boot_acc - boot_null)
    acc = Estimate(accuracy, *acc_ci, n_groups, unit, p=knn_p)
    effect = Estimate(accuracy - shuffled_mean, *effect_ci, n_groups, unit, p=knn_p)
    return ClusterScores(n, n_groups, n_classes, majority, sil, sil_null, acc, balanced, shuffled, effect,
                         correct)
