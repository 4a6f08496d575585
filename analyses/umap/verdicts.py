"""The umap stage's verdicts: snapshots identify their architecture (activation, normalization and
widths), with whole (data set, study) groups held out, and with whole data sets held out (transfer).

Each claim has two rows. The paper's test: the k-NN accuracy of each run's last snapshot against the
accuracy with labels permuted among runs (no structure). The sharpened test: trained snapshots beyond
untrained ones, the per-run difference of correctness between the last and the step-0 snapshot (an
untrained network's spectra already carry its shape)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.kit.presentation import fmt_number as _f
from analyses.stats import ClaimData, Concordance, Estimate, Verdict
from analyses.umap.clustering import KNN_K, N_PERMUTATIONS, ClusterScores

#: An accuracy difference (over shuffled labels; trained minus step 0) below this is negligible (5 points
#: of accuracy).
NEGLIGIBLE_ACCURACY = 0.05
ACCURACY_UNITS = "k-NN accuracy (share of runs)"
#: What the baseline controls.
CONFOUND = "initialization"
_EFFECT = "k-NN accuracy on each run's last snapshot"
_BASELINE = "k-NN accuracy on each run's step-0 snapshot (untrained), same labels and hold-out groups"
_BEYOND = "share of runs classified better trained than untrained (ties count half)"
#: Band of that share around one half: it is 0.5 + (last-snapshot minus step-0 accuracy) / 2, so half the
#: accuracy band.
NEGLIGIBLE_SHARE = NEGLIGIBLE_ACCURACY / 2


def mean_of(values: np.ndarray, idx: np.ndarray) -> float:
    """Mean of values (n,) at rows idx (rows may repeat); NaN for no rows."""
    return float(values[idx].mean()) if len(idx) else math.nan


def trained_vs_init(last: ClusterScores | None, init: ClusterScores | None, last_rows: pl.DataFrame,
                    init_rows: pl.DataFrame) -> tuple[pl.DataFrame, ClaimData, ClaimData]:
    """The per-run rows of the comparison and their :class:`ClaimData`: the paper's test and the sharpened one.

    ``last_rows``, ``init_rows`` (``run_id``, ``dataset``, one row per run, in the order the k-NN scored
    them); ``last.correct``, ``init.correct`` (that many booleans) whether each run's snapshot was
    classified right. Rows: the runs with both snapshots scored. The paper's test: the share of runs whose
    last snapshot is classified right (against the shuffled accuracy); the sharpened: the share of runs
    whose last snapshot is classified right where their step-0 one is not, ties (both right, both wrong)
    counting half: 0.5 + (last minus step-0 accuracy) / 2, a sign test of the paired correctness with a
    Wilson interval (a mean of differences in {-1, 0, 1} has no spread when every run ties)."""
    def frame(rows: pl.DataFrame, s: ClusterScores | None, name: str) -> pl.DataFrame:
        ok = s is not None and len(s.correct) == rows.height
        return rows.with_columns(pl.Series(name, s.correct.astype(float) if ok else np.full(rows.height, np.nan)))

    both = frame(last_rows, last, "correct_last").join(
        frame(init_rows, init, "correct_init").select("run_id", "correct_init"), on="run_id", how="inner")
    c_last, c_init = both["correct_last"].to_numpy(), both["correct_init"].to_numpy()
    rows = both.select("run_id", "dataset")
    paper = ClaimData(rows, Concordance(2 * c_last - 1, +1))
    sharp = ClaimData(rows, Concordance(c_last - c_init, +1), confound=CONFOUND,
                      baseline=lambda idx: mean_of(c_init, idx),
                      baseline_name=_BASELINE)
    return both, paper, sharp


def _scores_text(s: ClusterScores | None, what: str) -> str:
    if s is None:
        return f"{what}: not scored"
    return (f"{what} {_f(s.accuracy.value)} [{_f(s.accuracy.low)}, {_f(s.accuracy.high)}] vs shuffled "
            f"{_f(s.shuffled.value)} [{_f(s.shuffled.low)}, {_f(s.shuffled.high)}]")


def _verdicts(claim_id: str, source: str, claim: str, holdout: str, cv: str, scores: dict,
              subsets: dict[str, pl.DataFrame], context: str) -> list[Verdict]:
    last, init = scores.get(("architecture", "last", cv)), scores.get(("architecture", "step0", cv))
    both, paper, sharp = trained_vs_init(last, init, subsets["last"], subsets["step0"])
    n = both.height
    c_last, c_init = both["correct_last"].to_numpy(), both["correct_init"].to_numpy()
    value = mean_of(c_last, np.arange(n))
    est = (Estimate(value, last.accuracy.low, last.accuracy.high, n, "runs", p=last.accuracy.p)
           if last is not None and n else Estimate.missing(n, "runs", value))
    shuffled = last.shuffled.value if last is not None else math.nan
    detail = (f"{_scores_text(last, 'last snapshot')}; {_scores_text(init, 'step-0 snapshot')} "
              f"({n} runs with both; majority rate {_f(last.majority_rate if last else math.nan)}); {context}")
    knn = (f"k-NN (k={KNN_K}) predicting the architecture (activation, normalization and widths) of each run's "
           f"snapshot from other runs' snapshots, {holdout} held out")
    common = {"negligible": NEGLIGIBLE_ACCURACY, "band_units": ACCURACY_UNITS, "detail": detail}
    return [
        Verdict.of(est, claim_id, source, claim,
                   f"{knn}: the share of runs whose last snapshot is classified right, Wilson interval on the "
                   "effective number of runs (the data sets' design effect), against the accuracy with labels permuted "
                   "among "
                   f"runs ({N_PERMUTATIONS}x; the paper's test)", _EFFECT, "positive",
                   null_value=shuffled if math.isfinite(shuffled) else 0.0, data=paper if last is not None else None,
                   **common),
        Verdict.of(Estimate.missing(n, "runs", 0.5 + mean_of(c_last - c_init, np.arange(n)) / 2),
                   f"{claim_id}.beyond_init", source, claim + " (beyond what the untrained network shows)",
                   f"{knn}: per run, last-snapshot against step-0 correctness (same labels and hold-out groups): the "
                   "share of runs better classified trained, ties half, against one half, Wilson interval on the "
                   "effective number of runs (the sharpened test)", _BEYOND, "positive", null_value=0.5,
                   data=sharp if last is not None and init is not None else None, role="sharpened", pair=claim_id,
                   detail=detail, negligible=NEGLIGIBLE_SHARE, band_units="share of runs"),
    ]


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
    clusters = _verdicts(
        "umap.architecture_clusters", "001 §5.6 / Figure 2",
        "Snapshots of weights, gradients and Hessians cluster by architecture",
        "whole (data set, study) groups", "dataset_study", scores, subsets, context)
    claim = "The architecture patterns of trained snapshots carry over to unseen data sets"
    if n_datasets >= min_datasets:
        transfer = _verdicts("umap.architecture_transfer", "001 §5.6", claim, "whole data sets", "dataset", scores,
                             subsets, context)
    else:
        missing = Estimate.missing(n_datasets, "data sets")
        why = {"negligible": NEGLIGIBLE_ACCURACY, "band_units": ACCURACY_UNITS,
               "detail": f"leave-one-data-set-out not run (fewer than {min_datasets} data sets)"}
        transfer = [Verdict.of(missing, "umap.architecture_transfer", "001 §5.6", claim,
                               "k-NN with whole data sets held out", _EFFECT, "positive", **why),
                    Verdict.of(missing, "umap.architecture_transfer.beyond_init", "001 §5.6",
                               claim + " (beyond what the untrained network shows)",
                               "k-NN with whole data sets held out, last against step-0 correctness", _BEYOND,
                               "positive", role="sharpened", pair="umap.architecture_transfer", null_value=0.5,
                               **why)]
    return [*clusters, *transfer]
