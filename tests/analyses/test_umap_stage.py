"""The UMAP stage (001 §5.6, Figure 2) on small synthetic feature tables: planted architectures, no
structure, and a corpus too small to embed."""

from __future__ import annotations

import os

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from analyses.umap import STAGE
from analyses.umap.figures import snapshots_figure

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build", "numba-cache"))


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
    frames = {"analysis_features": pl.DataFrame(snap_rows), "analysis_features_layer": pl.DataFrame(layer_rows),
              "analysis_features_catalog": pl.DataFrame(catalog, schema=["feature", "group", "transform"],
                                                        orient="row")}
    for name, frame in frames.items():
        con.register("tmp_frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM tmp_frame")
        con.unregister("tmp_frame")
    return con


def test_stage_on_a_synthetic_database_finds_planted_architectures():
    con = _feature_db(n_arch=4, runs_per_arch=4, snapshots=4)
    STAGE.run(con)
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
    fig = snapshots_figure(con)
    assert "64 snapshots from 16 runs" in fig.get_suptitle()
    plt.close(fig)
    assert STAGE.report(con)["paragraphs"]


def test_stage_without_structure_is_not_supported_and_tiny_corpora_do_not_crash():
    con = _feature_db(n_arch=3, runs_per_arch=6, snapshots=2, separated=False)
    STAGE.run(con)  # 36 snapshots: embedded; architecture unrelated to the features
    verdict = con.execute("SELECT verdict FROM analysis_umap_verdicts "
                          "WHERE claim_id = 'umap.architecture_clusters'").fetchall()[0][0]
    assert verdict != "supported"
    tiny = _feature_db(n_arch=3, runs_per_arch=1, snapshots=3)
    STAGE.run(tiny)  # 9 snapshots: no embedding, 3 runs of 3 distinct labels
    assert tiny.execute("SELECT count(*), count(x) FROM analysis_umap").fetchall()[0] == (9, 0)
    assert tiny.execute("SELECT count(*) FROM analysis_umap_verdicts").fetchall()[0][0] == 2
    for fig in STAGE.figures:
        plt.close(fig.draw(tiny))
