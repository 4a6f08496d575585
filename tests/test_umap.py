"""The UMAP stage (001 §5.6, Figure 2): clustering scores on planted clusters, the grouped k-NN against
sklearn, and the stage on small synthetic feature tables."""

from __future__ import annotations

import os

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from analyses import snapshot_umap as su
from analyses.verdicts import decide

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", "build", "numba-cache"))


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
    s = su.cluster_scores(x, labels, groups, n_perm=100, n_boot=300)
    assert s["silhouette"] > 0.9
    assert s["knn_accuracy"] > 0.9 and s["knn_balanced_accuracy"] > 0.9
    assert s["knn_accuracy"] > s["shuffled_hi"]
    assert s["shuffled_mean"] < 0.5
    assert s["silhouette"] > s["silhouette_shuffled_hi"]
    assert s["effect_ci_low"] > 0.4 and s["knn_p"] < 0.05
    assert s["majority_rate"] == pytest.approx(0.25)
    assert s["n"] == 120 and s["n_groups"] == 20 and s["n_classes"] == 4


def test_labels_shuffled_among_groups_score_at_chance():
    x, labels, groups = _blobs()
    uniq = list(dict.fromkeys(groups))
    run_label = dict(zip(uniq, np.random.default_rng(7).permutation([labels[groups == g][0] for g in uniq]),
                         strict=True))
    shuffled = np.array([run_label[g] for g in groups])
    s = su.cluster_scores(x, shuffled, groups, n_perm=200, n_boot=300)
    assert s["shuffled_lo"] <= s["knn_accuracy"] <= s["shuffled_hi"]
    assert s["knn_accuracy"] < 0.6
    assert s["effect_ci_low"] < 0 < s["effect_ci_high"]
    assert s["knn_p"] > 0.05


def test_anti_clustered_labels_make_the_verdict_not_supported():
    """Runs on a line with alternating labels: a run's nearest other run always has the other label."""
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(16), 4)
    x = np.column_stack([10.0 * groups + rng.normal(0, 0.1, 64), rng.normal(0, 0.1, 64)])
    labels = np.where(groups % 2 == 0, "A", "B")
    s = su.cluster_scores(x, labels, groups, k=1, n_perm=200, n_boot=300)
    assert s["knn_accuracy"] == 0.0
    assert decide(s["effect_ci_low"], s["effect_ci_high"], "positive") == "not supported"


def test_group_knn_equals_sklearn_leave_one_group_out():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 5))
    groups = np.repeat(np.arange(12), 5)
    y = (x[:, 0] + rng.normal(0, 0.5, 60) > 0).astype(int)
    nb = su.group_neighbours(su._pairwise(x), groups, k=3)
    ours = su.knn_vote(nb, y, 2)
    ref = cross_val_predict(KNeighborsClassifier(n_neighbors=3), x, y, groups=groups, cv=LeaveOneGroupOut())
    np.testing.assert_array_equal(ours, ref)
    assert not np.any(groups[nb] == groups[:, None])  # never a neighbour from the own group


def test_knn_vote_breaks_ties_by_the_nearest_neighbour():
    nb = np.array([[2, 0, 1, 3], [-1, -1, -1, -1]])
    labels = np.array([0, 1, 1, 0])
    assert su.knn_vote(nb, labels, 2).tolist() == [1, -1]  # counts 2:2, nearest (index 2) has label 1


def test_standardize_imputes_drops_and_scales():
    raw = np.array([[1.0, np.nan, 5.0, np.inf], [2.0, np.nan, 5.0, 1.0], [np.nan, np.nan, 5.0, 3.0],
                    [5.0, np.nan, 5.0, 2.0]])
    z, kept, imputed = su.standardize_features(raw, ["a", "all_nan", "constant", "d"])
    assert kept == ["a", "d"]
    assert imputed == pytest.approx(2 / 8)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1)
    a = np.array([1.0, 2.0, 2.0, 5.0])  # the NaN took the median of 1, 2, 5
    np.testing.assert_allclose(z[:, 0], (a - a.mean()) / a.std())


def _feature_db(n_arch: int, runs_per_arch: int, snapshots: int, separated: bool = True) -> duckdb.DuckDBPyConnection:
    """Synthetic analysis_features(_layer, _catalog): architecture shifts the features when separated."""
    rng = np.random.default_rng(11)
    catalog = [("weight_norm", "weights", "slog"), ("grad_norm", "gradients", "slog"),
               ("loss_top", "loss_hessian", "identity"), ("local_trace", "local_hessian", "identity"),
               ("saturation_fraction", "activations", "identity")]
    feats = [f for f, _, _ in catalog]
    centres = rng.normal(0, 8, size=(n_arch, len(feats)))
    snap_rows, layer_rows = [], []
    datasets = ["iris", "wine", "digits"]
    for a in range(n_arch):
        for r in range(runs_per_arch):
            run_id = f"r{a}_{r}"
            offset = centres[a] if separated else np.zeros(len(feats))
            base = offset + rng.normal(0, 0.5, len(feats))
            for s in range(snapshots):
                v = base + rng.normal(0, 0.2, len(feats)) + 0.1 * s
                ctx = {"run_id": run_id, "step": 10 * s, "snapshot_index": s, "progress": s / max(snapshots - 1, 1),
                       "dataset": datasets[r % 3], "task": "classification" if r % 2 else "regression",
                       "architecture": f"arch{a}", "size": "small" if a % 2 else "medium",
                       "activation": "relu" if a < 2 else "sigmoid", "norm": "none", "optimizer": "adam"}
                snap_rows.append({**ctx, **dict(zip(feats, v.tolist(), strict=True))})
                for layer in range(2):
                    lv = v + rng.normal(0, 0.1, len(feats))
                    row = {"run_id": run_id, "step": 10 * s, "layer_index": layer, "is_output": layer == 1,
                           **dict(zip(feats, np.abs(lv).tolist(), strict=True))}
                    if layer == 1 and s == 0:
                        row["loss_top"] = None  # a NULL the imputation must fill
                    layer_rows.append(row)
    con = duckdb.connect()
    snaps, layers = pl.DataFrame(snap_rows), pl.DataFrame(layer_rows)  # noqa: F841
    cat = pl.DataFrame(catalog, schema=["feature", "group", "transform"], orient="row")  # noqa: F841
    con.execute("CREATE TABLE analysis_features AS SELECT * FROM snaps")
    con.execute("CREATE TABLE analysis_features_layer AS SELECT * FROM layers")
    con.execute("CREATE TABLE analysis_features_catalog AS SELECT * FROM cat")
    return con


def test_stage_on_a_synthetic_database_finds_planted_architectures():
    con = _feature_db(n_arch=4, runs_per_arch=4, snapshots=4)
    su.run(con)
    umap_rows = con.execute("SELECT count(*), count(x), count(DISTINCT run_id) FROM analysis_umap").fetchall()[0]
    assert umap_rows == (64, 64, 16)
    vec = con.execute("SELECT value, detail FROM analysis_umap_scores WHERE what = 'snapshot_vector'").fetchall()[0]
    assert vec[0] == 8  # 4 non-activation features, layer mean and output layer
    assert "3.1% of their entries imputed" in vec[1]  # out_loss_top at 1 of 4 snapshots: 1/4 of 1/8 columns
    acc = con.execute("SELECT value FROM analysis_umap_scores WHERE what = 'knn_accuracy' "
                      "AND target = 'architecture' AND cv_groups = 'run'").fetchall()[0][0]
    assert acc > 0.9
    verdicts = dict(con.execute("SELECT claim_id, verdict FROM analysis_umap_verdicts").fetchall())
    assert verdicts["umap.architecture_clusters"] == "supported"
    assert set(verdicts) == {"umap.architecture_clusters", "umap.architecture_transfer"}
    fig = su.snapshots_figure(con)
    assert "64 snapshots from 16 runs" in fig.get_suptitle()
    plt.close(fig)
    assert su.report(con)["paragraphs"]


def test_stage_without_structure_is_not_supported_and_tiny_corpora_do_not_crash():
    con = _feature_db(n_arch=3, runs_per_arch=6, snapshots=2, separated=False)
    su.run(con)  # 36 snapshots: embedded; architecture unrelated to the features
    verdict = con.execute("SELECT verdict FROM analysis_umap_verdicts "
                          "WHERE claim_id = 'umap.architecture_clusters'").fetchall()[0][0]
    assert verdict != "supported"
    tiny = _feature_db(n_arch=3, runs_per_arch=1, snapshots=3)
    su.run(tiny)  # 9 snapshots: no embedding, 3 runs of 3 distinct labels
    assert tiny.execute("SELECT count(*), count(x) FROM analysis_umap").fetchall()[0] == (9, 0)
    assert tiny.execute("SELECT count(*) FROM analysis_umap_verdicts").fetchall()[0][0] == 2
    plt.close(su.snapshots_figure(tiny))
