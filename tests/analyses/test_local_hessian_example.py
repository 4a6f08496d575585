"""Figure 1's local Hessian: the stored matrix against torch.autograd.functional.hessian on a tiny
corpus (float64, to 1e-8 of its largest entry), block diagonal in neuron order, the choice of layer,
the truncation of a large layer, and the empty case of an all-ReLU corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
import torch

import snapshot_loader
from analyses import local_hessian_example as lhe
from pipeline.curvature.objective import local_objective, neuron_order
from pipeline.extract.run import extract_run
from pipeline.models.mlp import Block
from pipeline.runspec import RunSpec
from snapshot_loader.ingest import ingest_shards

TOL = 1e-8


def _spec(activation: str) -> RunSpec:
    return RunSpec(dataset="iris", activation=activation, epochs=1, metric_checkpoints=3, spectral_snapshots=2,
                   probe_size=32)


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory) -> tuple[Path, str]:
    """An iris corpus of one sigmoid and one ReLU run (16 hidden units), 2 spectral snapshots each."""
    root = tmp_path_factory.mktemp("lhe")
    threads = torch.get_num_threads()
    for activation in ("sigmoid", "relu"):
        extract_run(_spec(activation), root / "shards")
    torch.set_num_threads(threads)
    ingest_shards(root / "corpus.duckdb", root / "shards")
    return root / "corpus.duckdb", _spec("sigmoid").run_id


def _run_stage(db: Path) -> list[dict]:
    con = duckdb.connect(str(db))
    try:
        lhe.STAGE.execute(con)
        return lhe._matrices(con)
    finally:
        con.close()


def test_stored_matrix_is_the_autograd_hessian_and_block_diagonal(tiny_db):
    db, sigmoid_run = tiny_db
    rows = _run_stage(db)
    assert {r["run_id"] for r in rows} == {sigmoid_run}
    with snapshot_loader.open(db) as corpus:
        steps = corpus.steps(sigmoid_run)
        assert sorted({r["step"] for r in rows}) == [steps[0], steps[-1]]
        X = corpus.probe_batch(sigmoid_run)[0].double()
        for r in rows:
            assert r["layer_index"] == 0 and r["n_blocks"] == 16 and r["block_size"] == 5 and r["phi"] == "sum"
            model = corpus.model(sigmoid_run, r["step"]).double().eval()
            block = model.blocks[0]
            obj = local_objective(block, X, "sum")
            reference = torch.autograd.functional.hessian(obj.f, obj.theta0).numpy()  # torch order
            n = r["n_rows"]
            stored = np.asarray(r["matrix"]).reshape(n, n)
            if r["neuron_order"]:
                perm = neuron_order(16, 4)
                reference = reference[perm][:, perm]
                owner = np.arange(n) // 5
                assert np.all(stored[owner[:, None] != owner[None, :]] == 0.0)  # exactly block diagonal
                assert r["off_block_max_abs"] == 0.0
            assert np.abs(reference).max() > 1e-6  # sigmoid: a real, nonzero local Hessian
            assert np.abs(stored - reference).max() <= TOL * np.abs(reference).max()


def test_figure_and_report_from_the_table(tiny_db):
    db, _ = tiny_db
    _run_stage(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        fig = lhe.figure_1(con)
        assert fig.get_suptitle() and len(fig.axes) >= 4
        plt.close(fig)
        text = lhe.report(con)["paragraphs"][0]
        assert "16 neurons" in text and "blocks of d + 1 = 5" in text
    finally:
        con.close()


def test_all_relu_corpus_gives_an_empty_table_and_a_figure_that_says_so(tiny_db, tmp_path):
    db, sigmoid_run = tiny_db
    copy = tmp_path / "relu.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    try:
        con.execute("DELETE FROM layers WHERE run_id = ?", [sigmoid_run])
        con.execute("DELETE FROM runs WHERE run_id = ?", [sigmoid_run])
        lhe.STAGE.execute(con)
        assert con.execute("SELECT count(*) FROM analysis_local_hessian_example").fetchall()[0][0] == 0
        fig = lhe.figure_1(con)
        assert "nothing to draw" in fig.get_suptitle()
        plt.close(fig)
        assert "zero local Hessian" in lhe.report(con)["paragraphs"][0]
    finally:
        con.close()


def test_choice_prefers_sigmoid_in_the_size_window_then_snapshots_then_size():
    def row(run_id, activation, d, q, n_spectral=10, norm="none", layer=0, is_output=False):
        return {"run_id": run_id, "dataset": "x", "activation": activation, "norm": norm, "layer_index": layer,
                "in_features": d, "out_features": q, "is_output": is_output, "n_spectral": n_spectral}

    frame = pl.DataFrame([
        row("a", "relu", 4, 16),                      # A'' = 0: never
        row("b", "tanh", 4, 16),                      # second choice of activation
        row("c", "sigmoid", 30, 64),                  # too large for the window
        row("d", "sigmoid", 13, 16, n_spectral=10),
        row("e", "sigmoid", 4, 16, n_spectral=10),    # smallest in the window, most snapshots
        row("f", "sigmoid", 4, 16, n_spectral=8),
        row("g", "sigmoid", 4, 16, norm="layernorm"),
        row("h", "sigmoid", 4, 3, is_output=True, layer=1),
    ])
    assert lhe.choose_example(frame)["run_id"] == "e"
    assert lhe.choose_example(frame.filter(pl.col("run_id").is_in(["a", "b", "c"])))["run_id"] == "b"
    assert lhe.choose_example(frame.filter(pl.col("run_id").is_in(["a", "c"])))["run_id"] == "c"
    assert lhe.choose_example(frame.filter(pl.col("run_id") == "a")) is None


@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_truncated_matrix_is_the_hessian_of_the_first_neurons(norm):
    torch.manual_seed(0)
    q, d = 6, 3
    block = Block(d, q, "tanh", norm, 0.0).double().eval()
    z = torch.randn(20, d, dtype=torch.float64)
    neuron, torch_order, k = lhe.local_hessian_matrices(block, z, "sum", max_rows=2 * (d + 1) + 1)
    assert k == 2 and neuron.shape == (8, 8) and torch_order.shape == (8, 8)
    obj = local_objective(block, z, "sum")
    full = torch.autograd.functional.hessian(obj.f, obj.theta0).numpy()
    kept_torch = np.concatenate([np.arange(k * d), q * d + np.arange(k)])
    assert np.abs(torch_order - full[np.ix_(kept_torch, kept_torch)]).max() <= TOL * np.abs(full).max()
    perm = neuron_order(q, d)[: k * (d + 1)]
    assert np.abs(neuron - full[np.ix_(perm, perm)]).max() <= TOL * np.abs(full).max()
    off = lhe.off_block_max_abs(neuron, d + 1)
    assert (off == 0.0) if norm == "none" else (off > 1e-8)  # layer norm couples the units
