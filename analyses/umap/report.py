"""The umap stage's report text, from ``analysis_umap_scores``."""

from __future__ import annotations

import duckdb

from analyses.kit.presentation import fmt_number as _f
from analyses.umap.clustering import KNN_K


def stored_score(con: duckdb.DuckDBPyConnection, what: str, target: str = "architecture",
                 cv: str | None = None, snapshots: str = "all") -> tuple:
    """``(value, ci_low, ci_high, n, n_runs)`` of one ``analysis_umap_scores`` row (all None if absent)."""
    q = ("SELECT value, ci_low, ci_high, n, n_runs FROM analysis_umap_scores WHERE what = ? AND target = ? "
         "AND snapshots = ?")
    args = [what, target, snapshots]
    if cv:
        q += " AND cv_groups = ?"
        args.append(cv)
    rows = con.execute(q, args).fetchall()
    return rows[0] if rows else (None, None, None, None, None)


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """The report's paragraphs (snapshot vector, k-NN against the baseline, silhouettes, data-set transfer)
    and the scores table."""
    acc = stored_score(con, "knn_accuracy", cv="run")
    base = stored_score(con, "knn_shuffled", cv="run")
    p = stored_score(con, "knn_permutation_p", cv="run")[0]
    maj = stored_score(con, "majority_rate")[0]
    sil = stored_score(con, "silhouette_features")
    sil0 = stored_score(con, "silhouette_features_shuffled")
    sil_e = stored_score(con, "silhouette_embedding")[0]
    ds = stored_score(con, "knn_accuracy", cv="dataset")
    ds0 = stored_score(con, "knn_shuffled", cv="dataset")
    grp = stored_score(con, "knn_accuracy", cv="dataset_study")
    grp0 = stored_score(con, "knn_shuffled", cv="dataset_study")
    subset = {(snap, cv): (stored_score(con, "knn_accuracy", cv=cv, snapshots=snap),
                           stored_score(con, "knn_shuffled", cv=cv, snapshots=snap))
              for snap in ("last", "step0") for cv in ("dataset_study", "dataset")}
    vec = con.execute("SELECT detail FROM analysis_umap_scores WHERE what = 'snapshot_vector'").fetchall()
    paragraphs = []
    if vec:
        paragraphs.append(f"Snapshot vector: {vec[0][0]}.")
    if acc[0] is not None:
        paragraphs.append(
            f"Predicting the architecture of a snapshot from the snapshots of other runs (k-NN, k = {KNN_K}) is "
            f"right for {100 * acc[0]:.1f}% of {acc[3]} snapshots from {acc[4]} runs (95% CI "
            f"{_f(acc[1])} to {_f(acc[2])}), against {100 * base[0]:.1f}% (95% of shuffles within "
            f"{_f(base[1])} to {_f(base[2])}) when the labels are shuffled among runs (permutation p = "
            f"{_f(p)}); always guessing the most common architecture scores {100 * maj:.1f}%.")
    if sil[0] is not None:
        paragraphs.append(
            f"The silhouette by architecture is {_f(sil[0])} in the standardized feature space (shuffled "
            f"labels: {_f(sil0[0])}) and {_f(sil_e)} in the UMAP plane.")
    if grp[0] is not None:
        paragraphs.append(
            f"Leave-one-run-out lets a run's twins (same architecture and data set, another seed, regularizer "
            f"or train fraction of the same study) be its neighbours. With every (data set, study) group held out "
            f"the accuracy is {100 * grp[0]:.1f}% against {100 * grp0[0]:.1f}% for shuffled labels.")
    if ds[0] is not None:
        paragraphs.append(
            f"With every run of the snapshot's data set held out, the accuracy is {100 * ds[0]:.1f}% against "
            f"{100 * ds0[0]:.1f}% for shuffled labels.")
    for cv, held in (("dataset_study", "(data set, study) groups"), ("dataset", "data sets")):
        (la, ls), (ia, is_) = subset[("last", cv)], subset[("step0", cv)]
        if la[0] is not None and ia[0] is not None:
            paragraphs.append(
                f"Initialization baseline, {held} held out: on each run's last snapshot the k-NN is right for "
                f"{100 * la[0]:.1f}% of {la[4]} runs ({_f(la[1])} to {_f(la[2])}; shuffled {100 * ls[0]:.1f}%), on "
                f"its untrained step-0 snapshot for {100 * ia[0]:.1f}% ({_f(ia[1])} to {_f(ia[2])}; shuffled "
                f"{100 * is_[0]:.1f}%): training changes the accuracy by {100 * (la[0] - ia[0]):+.1f} points.")
    return {"paragraphs": paragraphs, "tables": [{
        "caption": "Clustering scores (value with its interval; n snapshots, n_runs runs)",
        "sql": "SELECT what, target, snapshots, cv_groups, round(value, 3) AS value, round(ci_low, 3) AS ci_low, "
               "round(ci_high, 3) AS ci_high, n, n_runs, detail FROM analysis_umap_scores "
               "ORDER BY target = 'architecture' DESC, target, snapshots, cv_groups, what"}]}
