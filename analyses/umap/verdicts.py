"""The umap stage's verdicts: trained snapshots identify their architecture (activation, normalization
and widths) better than untrained ones do, with whole (data set, study) groups held out; and the same
with whole data sets held out (transfer)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.presentation import fmt_number as _f
from analyses.stats import ClaimData, Estimate, Verdict
from analyses.umap.clustering import KNN_K, N_PERMUTATIONS, ClusterScores

#: An accuracy difference (trained minus step 0) below this is negligible (5 points of accuracy).
NEGLIGIBLE_ACCURACY = 0.05
#: What the baseline controls.
CONFOUND = "initialization"
_EFFECT = "k-NN accuracy on each run's last snapshot"
_BASELINE = "k-NN accuracy on each run's step-0 snapshot (untrained), same labels and hold-out groups"
_BEYOND = "last-snapshot accuracy minus step-0 accuracy"


def mean_of(values: np.ndarray, idx: np.ndarray) -> float:
    """Mean of values (n,) at rows idx (rows may repeat); NaN for no rows."""
    return float(values[idx].mean()) if len(idx) else math.nan


def trained_vs_init(last: ClusterScores | None, init: ClusterScores | None, last_rows: pl.DataFrame,
                    init_rows: pl.DataFrame) -> tuple[pl.DataFrame, ClaimData]:
    """The per-run rows of the comparison and their :class:`ClaimData`.

    ``last_rows``, ``init_rows`` (``run_id``, ``dataset``, one row per run, in the order the k-NN scored
    them); ``last.correct``, ``init.correct`` (that many booleans) whether each run's snapshot was
    classified right. Rows: the runs with both snapshots scored; statistic = mean last-snapshot
    correctness, baseline = mean step-0 correctness over the rows drawn, decisive = their difference."""
    def frame(rows: pl.DataFrame, s: ClusterScores | None, name: str) -> pl.DataFrame:
        ok = s is not None and len(s.correct) == rows.height
        return rows.with_columns(pl.Series(name, s.correct.astype(float) if ok else np.full(rows.height, np.nan)))

    both = frame(last_rows, last, "correct_last").join(
        frame(init_rows, init, "correct_init").select("run_id", "correct_init"), on="run_id", how="inner")
    c_last, c_init = both["correct_last"].to_numpy(), both["correct_init"].to_numpy()
    data = ClaimData(both.select("run_id", "dataset"), lambda idx: mean_of(c_last, idx), confound=CONFOUND,
                     baseline=lambda idx: mean_of(c_init, idx), baseline_name=_BASELINE, beyond_name=_BEYOND)
    return both, data


def _scores_text(s: ClusterScores | None, what: str) -> str:
    if s is None:
        return f"{what}: not scored"
    return (f"{what} {_f(s.accuracy.value)} [{_f(s.accuracy.low)}, {_f(s.accuracy.high)}] vs shuffled "
            f"{_f(s.shuffled.value)} [{_f(s.shuffled.low)}, {_f(s.shuffled.high)}]")


def _verdict(claim_id: str, source: str, claim: str, holdout: str, cv: str, scores: dict,
             subsets: dict[str, pl.DataFrame], context: str) -> Verdict:
    last, init = scores.get(("architecture", "last", cv)), scores.get(("architecture", "step0", cv))
    both, data = trained_vs_init(last, init, subsets["last"], subsets["step0"])
    n = both.height
    value = mean_of(both["correct_last"].to_numpy(), np.arange(n))
    est = (Estimate(value, last.accuracy.low, last.accuracy.high, n, "runs", p=last.accuracy.p)
           if last is not None and n else Estimate.missing(n, "runs", value))
    detail = (f"{_scores_text(last, 'last snapshot')}; {_scores_text(init, 'step-0 snapshot')} "
              f"({n} runs with both; majority rate {_f(last.majority_rate if last else math.nan)}); {context}")
    return Verdict.of(
        est, claim_id, source, claim,
        f"k-NN (k={KNN_K}) predicting the architecture (activation, normalization and widths) of each run's last "
        f"snapshot from other runs' last snapshots, {holdout} held out; baseline: the same on step-0 snapshots; "
        "decisive: the difference (null 0), two-level bootstrap over per-run correctness; beside each accuracy "
        f"the accuracy with labels permuted among runs ({N_PERMUTATIONS}x)",
        _EFFECT, "positive", null_value=0.0, negligible=NEGLIGIBLE_ACCURACY, detail=detail, data=data)


def umap_verdicts(scores: dict[tuple[str, str, str], ClusterScores], subsets: dict[str, pl.DataFrame],
                  n_datasets: int, min_datasets: int) -> list[Verdict]:
    """The two verdicts from the scores by (target, snapshots, cv groups) (:mod:`analyses.umap.stage`)
    and the ``run_id``, ``dataset`` rows of each subset ("last", "step0") in scoring order."""
    def acc(key: tuple[str, str, str]) -> str:
        s = scores.get(key)
        return f"{_f(s.accuracy.value)} (shuffled {_f(s.shuffled.value)})" if s is not None else "not scored"

    emb = scores.get(("embedding", "all", "run"))
    run_s = scores.get(("architecture", "all", "run"))
    context = (
        f"all snapshots: leave-one-run-out {acc(('architecture', 'all', 'run'))}, (data set, study) groups held "
        f"out {acc(('architecture', 'all', 'dataset_study'))}, data sets held out "
        f"{acc(('architecture', 'all', 'dataset'))}; with the size-preset labels of before (custom-relu lumping "
        f"five widths) leave-one-run-out {acc(('preset', 'all', 'run'))}; widths alone "
        f"{acc(('widths', 'all', 'dataset_study'))}, activation alone {acc(('activation', 'all', 'dataset_study'))}"
        f"; silhouette by architecture {_f(run_s.silhouette if run_s else math.nan)} in feature space (shuffled "
        f"{_f(run_s.silhouette_shuffled.value if run_s else math.nan)}), "
        f"{_f(emb.silhouette if emb else math.nan)} in the UMAP plane. The paper (001 §5.6) saw clusters in UMAP "
        "but reports that classifiers trained on these patterns 'did not show good results'; an untrained "
        "network's spectra already carry its shape")
    clusters = _verdict(
        "umap.architecture_clusters", "001 §5.6 / Figure 2",
        "Snapshots of weights, gradients and Hessians cluster by architecture (beyond what initialization gives)",
        "whole (data set, study) groups", "dataset_study", scores, subsets, context)
    if n_datasets >= min_datasets:
        transfer = _verdict(
            "umap.architecture_transfer", "001 §5.6",
            "The architecture patterns of trained snapshots carry over to unseen data sets (beyond initialization)",
            "whole data sets", "dataset", scores, subsets, context)
    else:
        transfer = Verdict.of(
            Estimate.missing(n_datasets, "data sets"), "umap.architecture_transfer", "001 §5.6",
            "The architecture patterns of trained snapshots carry over to unseen data sets (beyond initialization)",
            "k-NN with whole data sets held out", _EFFECT, "positive", negligible=NEGLIGIBLE_ACCURACY,
            detail=f"leave-one-data-set-out not run (fewer than {min_datasets} data sets)")
    return [clusters, transfer]
