"""The umap stage's run: the snapshot vectors in, the embedding, the clustering scores and the
verdicts out."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from analyses.presentation import fmt_number as _f
from analyses.stats import write_verdicts
from analyses.tables import write_table
from analyses.umap.clustering import KNN_K, N_PERMUTATIONS, ClusterScores, cluster_scores
from analyses.umap.embedding import embed, n_neighbors_for
from analyses.umap.schema import TABLES
from analyses.umap.snapshot_vector import snapshot_matrix, standardize_features
from analyses.umap.verdicts import umap_verdicts

#: Leave-one-data-set-out needs at least this many data sets.
MIN_DATASETS = 3
#: The targets the k-NN predicts; the first is the claim's.
TARGETS = ("architecture", "size", "activation")

_POLARS = {"VARCHAR": pl.Utf8, "DOUBLE": pl.Float64, "BIGINT": pl.Int64}


def _score_rows(s: ClusterScores, target: str, cv: str, space: str) -> list[dict]:
    """The ``analysis_umap_scores`` rows of one scoring: the silhouette rows when ``space`` names the
    space scored ("features", "embedding"), the k-NN rows unless it is the embedding."""
    base = {"target": target, "cv_groups": cv, "n": s.n, "n_runs": s.n_groups}
    rows = []
    if space:
        rows.append({**base, "what": f"silhouette_{space}", "value": s.silhouette, "cv_groups": "-",
                     "ci_low": None, "ci_high": None,
                     "detail": "Euclidean silhouette by label; no interval (resampling duplicates points)"})
        null = s.silhouette_shuffled
        rows.append({**base, "what": f"silhouette_{space}_shuffled", "value": null.value,
                     "cv_groups": "-", "ci_low": null.low, "ci_high": null.high,
                     "detail": f"labels permuted among runs ({N_PERMUTATIONS}x): mean and 2.5-97.5% quantiles; "
                               f"permutation p of the observed silhouette = {_f(null.p)}"})
    if space != "embedding":
        rows += [
            {**base, "what": "knn_accuracy", "value": s.accuracy.value, "ci_low": s.accuracy.low,
             "ci_high": s.accuracy.high,
             "detail": f"k-NN (k={KNN_K}) accuracy over snapshots, neighbours only from other {cv}s; "
                       "interval: bootstrap over runs"},
            {**base, "what": "knn_shuffled", "value": s.shuffled.value, "ci_low": s.shuffled.low,
             "ci_high": s.shuffled.high,
             "detail": f"the same with labels permuted among runs ({N_PERMUTATIONS}x): mean, 2.5-97.5% quantiles"},
            {**base, "what": "knn_minus_shuffled", "value": s.effect.value, "ci_low": s.effect.low,
             "ci_high": s.effect.high, "detail": "paired bootstrap over runs"},
            {**base, "what": "knn_permutation_p", "value": s.effect.p, "ci_low": None, "ci_high": None,
             "detail": "(1 + #{shuffled >= observed}) / (1 + permutations)"},
            {**base, "what": "knn_balanced_accuracy", "value": s.balanced_accuracy, "ci_low": None,
             "ci_high": None, "detail": "mean per-class recall"},
        ]
        if cv == "run":
            rows.append({**base, "what": "majority_rate", "value": s.majority_rate, "ci_low": None,
                         "ci_high": None, "cv_groups": "-", "detail": "share of snapshots in the most common class"})
    return rows


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_umap``, ``analysis_umap_scores`` and ``analysis_umap_verdicts``."""
    ctx, raw, names = snapshot_matrix(con)
    z, kept, imputed = standardize_features(raw, names)
    emb = embed(z)
    frame = ctx.with_columns(pl.Series("x", emb[:, 0] if len(emb) else [], dtype=pl.Float64),
                             pl.Series("y", emb[:, 1] if len(emb) else [], dtype=pl.Float64))
    write_table(con, "analysis_umap", frame.with_columns(pl.col("x").fill_nan(None), pl.col("y").fill_nan(None)))

    runs = ctx["run_id"].to_list()
    datasets = ctx["dataset"].to_list()
    n_datasets = len(set(datasets))
    embedded = bool(len(emb)) and bool(np.isfinite(emb).all())
    rows: list[dict] = [{"what": "snapshot_vector", "target": "-", "cv_groups": "-", "value": float(len(kept)),
                         "ci_low": None, "ci_high": None, "n": len(runs), "n_runs": len(set(runs)),
                         "detail": f"{len(kept)} of {len(names)} feature columns kept; {100 * imputed:.1f}% of "
                                   f"their entries imputed by the median; UMAP n_neighbors = "
                                   f"{n_neighbors_for(len(runs))}"
                                   + ("" if embedded else " (no embedding: too few snapshots)")}]
    scores: dict[tuple[str, str], ClusterScores] = {}
    for target in TARGETS:
        labels = ctx[target].to_list()
        s = cluster_scores(z, labels, runs, silhouette=target == "architecture")
        scores[(target, "run")] = s
        rows += _score_rows(s, target, "run", "features" if target == "architecture" else "")
        if n_datasets >= MIN_DATASETS:
            s = cluster_scores(z, labels, runs, cv_groups=datasets, silhouette=False)
            scores[(target, "dataset")] = s
            rows += _score_rows(s, target, "dataset", "")
    if embedded:
        s = cluster_scores(emb, ctx["architecture"].to_list(), runs, n_boot=0)
        rows += _score_rows(s, "architecture", "run", "embedding")[:2]
        scores[("embedding", "run")] = s
    schema = {c: _POLARS[t] for c, t in TABLES["analysis_umap_scores"]}
    write_table(con, "analysis_umap_scores", pl.DataFrame(rows, schema=schema).with_columns(
        pl.col(c).fill_nan(None) for c in ("value", "ci_low", "ci_high")))
    write_verdicts(con, "umap", umap_verdicts(scores, n_datasets, MIN_DATASETS))
