"""The umap stage's verdicts: snapshots cluster by architecture (leave-one-run-out k-NN against
shuffled labels), and the pattern carries over to unseen data sets (leave-one-data-set-out)."""

from __future__ import annotations

import math

from analyses.presentation import fmt_number as _f
from analyses.stats import Estimate, Verdict
from analyses.umap.clustering import KNN_K, N_PERMUTATIONS, ClusterScores

_EFFECT = "k-NN accuracy minus shuffled-label accuracy"


def umap_verdicts(scores: dict[tuple[str, str], ClusterScores], n_datasets: int, min_datasets: int) -> list[Verdict]:
    """The two verdicts from the scores by (target, cv groups): ("architecture", "run"), ("size", "run"),
    ("activation", "run"), ("architecture", "dataset") when the corpus has at least ``min_datasets``
    data sets, ("embedding", "run") when there is an embedding."""
    run_s = scores[("architecture", "run")]
    emb = scores.get(("embedding", "run"))
    ds = scores.get(("architecture", "dataset"))
    size_s, act_s = scores[("size", "run")], scores[("activation", "run")]
    ds_text = (f"leave-one-data-set-out ({n_datasets} data sets) accuracy {_f(ds.accuracy.value)} vs shuffled "
               f"{_f(ds.shuffled.value)} [{_f(ds.shuffled.low)}, {_f(ds.shuffled.high)}]" if ds else
               f"leave-one-data-set-out not run (fewer than {min_datasets} data sets)")
    acc, base = run_s.accuracy, run_s.shuffled
    detail = (
        f"leave-one-run-out k-NN (k={KNN_K}) accuracy {_f(acc.value)} "
        f"[{_f(acc.low)}, {_f(acc.high)}], balanced {_f(run_s.balanced_accuracy)}; "
        f"shuffled-among-runs baseline {_f(base.value)} [{_f(base.low)}, "
        f"{_f(base.high)}]; majority-class rate {_f(run_s.majority_rate)}; "
        f"silhouette by architecture {_f(run_s.silhouette)} in feature space (shuffled "
        f"{_f(run_s.silhouette_shuffled.value)}), {_f(emb.silhouette if emb else math.nan)} in the UMAP plane "
        f"(shuffled {_f(emb.silhouette_shuffled.value if emb else math.nan)}); size alone "
        f"{_f(size_s.accuracy.value)} vs {_f(size_s.shuffled.value)}, activation alone "
        f"{_f(act_s.accuracy.value)} vs {_f(act_s.shuffled.value)}; {ds_text}. The paper (001 §5.6) saw "
        "clusters in UMAP but reports that classifiers trained on these patterns 'did not show good results': "
        "compare the accuracy with the baseline and the majority rate, and the data-set-grouped accuracy.")
    clusters = Verdict.of(
        run_s.effect, "umap.architecture_clusters", "001 §5.6 / Figure 2",
        "Snapshots of weights, gradients and Hessians cluster by architecture",
        f"k-NN (k={KNN_K}) predicting the architecture of each snapshot from other runs' snapshots "
        f"(leave-one-run-out), against labels permuted among runs ({N_PERMUTATIONS}x); paired bootstrap over runs",
        _EFFECT, "positive", detail=detail)
    transfer = Verdict.of(
        ds.effect if ds else Estimate.missing(n_datasets, "data sets"), "umap.architecture_transfer", "001 §5.6",
        "The architecture patterns of snapshots carry over to unseen data sets",
        f"k-NN (k={KNN_K}) predicting architecture with every run of the snapshot's data set held out "
        f"(leave-one-data-set-out), against labels permuted among runs ({N_PERMUTATIONS}x); paired "
        "bootstrap over runs",
        _EFFECT, "positive", detail=f"{ds_text}; majority-class rate {_f(ds.majority_rate)}" if ds else ds_text)
    return [clusters, transfer]
