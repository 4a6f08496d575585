"""The UMAP stage (001 §5.6, Figure 2) on small synthetic feature tables: architectures that training
separates, no structure, and a corpus too small to embed."""

from __future__ import annotations

import os

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from analyses.umap import STAGE
from analyses.umap.figures import snapshots_figure

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build", "numba-cache"))


#: (size, activation, widths) of the synthetic architectures: the first two share the preset "custom-relu"
#: and differ only in their widths.
ARCHS = (("custom", "relu", [8]), ("custom", "relu", [32, 16]), ("small", "sigmoid", [16]),
         ("medium", "sigmoid", [64, 64]), ("medium", "tanh", [64, 64]))


def _feature_db(n_arch: int, runs_per_arch: int, snapshots: int, separated: bool = True,
                with_runs: bool = True) -> duckdb.DuckDBPyConnection:
    """Synthetic analysis_features(_layer, _catalog), and ``runs`` (widths) and ``studies`` when
    ``with_runs``: when separated, training moves each architecture's features away from a common
    start (offset x progress), so the trained snapshots identify it and the untrained ones do not."""
    rng = np.random.default_rng(11)
    catalog = [("weight_norm", "weights", "slog"), ("grad_norm", "gradients", "slog"),
               ("loss_top", "loss_hessian", "identity"), ("local_trace", "local_hessian", "identity"),
               ("saturation_fraction", "activations", "identity")]
    feats = [f for f, _, _ in catalog]
    centres = rng.normal(0, 8, size=(n_arch, len(feats)))
    snap_rows, layer_rows, run_rows, study_rows = [], [], [], []
    datasets = ["iris", "wine", "digits"]
    for a in range(n_arch):
        for r in range(runs_per_arch):
            run_id = f"r{a}_{r}"
            offset = centres[a] if separated else np.zeros(len(feats))
            base = rng.normal(0, 0.5, len(feats))
            size, act, widths = ARCHS[a]
            run_rows.append({"run_id": run_id, "widths": widths})
            study_rows.append({"run_id": run_id, "study": f"s{r % 2}"})
            for s in range(snapshots):
                progress = s / max(snapshots - 1, 1)
                v = base + offset * progress + rng.normal(0, 0.2, len(feats)) + 0.1 * s
                ctx = {"run_id": run_id, "step": 10 * s, "snapshot_index": s, "progress": progress,
                       "dataset": datasets[r % 3], "task": "classification" if r % 2 else "regression",
                       "architecture": f"{size}-{act}", "size": size, "activation": act, "norm": "none",
                       "optimizer": "adam"}
                snap_rows.append({**ctx, **dict(zip(feats, v.tolist(), strict=True))})
                for layer in range(2):
                    lv = v + rng.normal(0, 0.1, len(feats))
                    row = {"run_id": run_id, "step": 10 * s, "layer_index": layer, "is_output": layer == 1,
                           **dict(zip(feats, np.abs(lv).tolist(), strict=True))}
                    if layer == 1 and s == 0:
                        row["loss_top"] = None  # a NULL the imputation must fill
                    layer_rows.append(row)
    con = duckdb.connect()
    frames = {"analysis_features": pl.DataFrame(snap_rows), "analysis_features_layer": pl.DataFrame(layer_rows),
              "analysis_features_catalog": pl.DataFrame(catalog, schema=["feature", "group", "transform"],
                                                        orient="row")}
    if with_runs:
        frames |= {"runs": pl.DataFrame(run_rows), "studies": pl.DataFrame(study_rows)}
    for name, frame in frames.items():
        con.register("tmp_frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM tmp_frame")
        con.unregister("tmp_frame")
    return con


def test_stage_on_a_synthetic_database_finds_planted_architectures():
    con = _feature_db(n_arch=4, runs_per_arch=4, snapshots=4)
    STAGE.execute(con)
    umap_rows = con.execute("SELECT count(*), count(x), count(DISTINCT run_id) FROM analysis_umap").fetchall()[0]
    assert umap_rows == (64, 64, 16)
    vec = con.execute("SELECT value, detail FROM analysis_umap_scores WHERE what = 'snapshot_vector'").fetchall()[0]
    assert vec[0] == 8  # 4 non-activation features, layer mean and output layer
    assert "3.1% of their entries imputed" in vec[1]  # out_loss_top at 1 of 4 snapshots: 1/4 of 1/8 columns
    labels = con.execute("SELECT DISTINCT architecture, preset, widths FROM analysis_umap ORDER BY ALL").fetchall()
    assert labels == [("relu 32x16", "custom-relu", "32x16"), ("relu 8", "custom-relu", "8"),
                      ("sigmoid 16", "small-sigmoid", "16"), ("sigmoid 64x64", "medium-sigmoid", "64x64")]
    acc = dict(con.execute("SELECT snapshots || '/' || cv_groups, value FROM analysis_umap_scores "
                           "WHERE what = 'knn_accuracy' AND target = 'architecture'").fetchall())
    assert acc["last/dataset_study"] > 0.9 and acc["step0/dataset_study"] < 0.6
    assert set(acc) == {"all/run", "all/dataset_study", "all/dataset", "last/dataset_study", "last/dataset",
                        "step0/dataset_study", "step0/dataset"}
    rows = {r["claim_id"]: r for r in con.sql("SELECT * FROM analysis_umap_verdicts").pl().to_dicts()}
    assert set(rows) == {"umap.architecture_clusters", "umap.architecture_transfer",
                         "umap.architecture_clusters.beyond_init", "umap.architecture_transfer.beyond_init"}
    clusters, beyond = rows["umap.architecture_clusters"], rows["umap.architecture_clusters.beyond_init"]
    assert clusters["verdict"] == beyond["verdict"] == "supported" and beyond["confound"] == "initialization"
    assert clusters["effect"] == acc["last/dataset_study"] and beyond["baseline_effect"] == acc["step0/dataset_study"]
    fig = snapshots_figure(con)
    assert "64 snapshots from 16 runs" in fig.get_suptitle()
    plt.close(fig)
    assert STAGE.report(con)["paragraphs"]


def test_stage_without_structure_is_not_supported_and_tiny_corpora_do_not_crash():
    con = _feature_db(n_arch=3, runs_per_arch=6, snapshots=2, separated=False)
    STAGE.execute(con)  # 36 snapshots: embedded; architecture unrelated to the features
    verdict = con.execute("SELECT verdict FROM analysis_umap_verdicts "
                          "WHERE claim_id = 'umap.architecture_clusters'").fetchall()[0][0]
    assert verdict != "supported"
    tiny = _feature_db(n_arch=3, runs_per_arch=1, snapshots=3, with_runs=False)
    STAGE.execute(tiny)  # 9 snapshots: no embedding, 3 runs of 3 distinct labels, no runs or studies tables
    assert tiny.execute("SELECT count(*), count(x) FROM analysis_umap").fetchall()[0] == (9, 0)
    assert tiny.execute("SELECT count(*) FROM analysis_umap_verdicts").fetchall()[0][0] == 4
    for fig in STAGE.figures:
        plt.close(fig.draw(tiny))
