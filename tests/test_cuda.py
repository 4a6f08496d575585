"""The curvature engines on a CUDA GPU agree with the CPU. Skipped, and reported as skipped with the
reason, on a machine without one (``make test`` prints the count; none of these can pass silently)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.curvature import block_engine, engine
from pipeline.curvature.engine import CurvatureSettings
from pipeline.models.block_graph import trace_block_graph
from pipeline.models.cnn import SmallCNN
from pipeline.models.mlp import MLP

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: not run")


def _compare(cpu_rows: list[dict], gpu_rows: list[dict]) -> None:
    assert [(r["layer_index"], r["kind"], r["method"]) for r in cpu_rows] == \
        [(r["layer_index"], r["kind"], r["method"]) for r in gpu_rows]
    for a, b in zip(cpu_rows, gpu_rows, strict=True):
        scale = max(abs(a["top_eigenvalue"]), abs(a["bottom_eigenvalue"]), 1e-300)
        if a["method"] != "lanczos":  # exact rows: float64 on both, to round-off
            np.testing.assert_allclose(a["eigenvalues"], b["eigenvalues"], rtol=0, atol=1e-9 * scale)
        else:  # the same seeded probes: the extremes within their residuals
            assert abs(a["top_eigenvalue"] - b["top_eigenvalue"]) <= 2 * (a["top_residual"] + b["top_residual"]) \
                + 1e-9 * scale


def test_the_mlp_engine_on_cuda_matches_the_cpu() -> None:
    torch.manual_seed(0)
    model = MLP(6, (40, 40), 3, "tanh").double().eval()
    X, y = torch.randn(64, 6, dtype=torch.float64), torch.randint(0, 3, (64,))
    args = (model, X, y, nn.CrossEntropyLoss(), "classification")
    cpu, _ = engine.curvature_snapshot(*args, CurvatureSettings(exact_limit=500), 0, 0)
    gpu, _ = engine.curvature_snapshot(*args, CurvatureSettings(exact_limit=500, device="cuda"), 0, 0)
    _compare(cpu, gpu)


def test_the_any_model_engine_on_cuda_matches_the_cpu() -> None:
    torch.manual_seed(0)
    model = SmallCNN(16, 3, (3, 2), dims=2, activation="tanh").double().eval()
    graph = trace_block_graph(model, model.block_names())
    blocks = list(zip(graph.names, graph.params, strict=True))
    X, y = torch.randn(32, 16, dtype=torch.float64), torch.randint(0, 3, (32,))
    args = (model, blocks, X, y, nn.CrossEntropyLoss(), "classification")
    cpu, cpu_extra = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=50), 0, 0)
    gpu, gpu_extra = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=50, device="cuda"),
                                                           0, 0)
    _compare(cpu, gpu)
    for a, b in zip(cpu_extra, gpu_extra, strict=True):
        assert a["gradient_pressure"] == pytest.approx(b["gradient_pressure"], rel=1e-8)


def test_the_any_model_engine_through_attention_on_cuda_matches_the_cpu() -> None:
    """nn.TransformerEncoderLayer with a CLS token held by the model: every block's rows, and the
    coupling map's products, on CUDA (math attention backend, fast path off) against the CPU."""
    from pipeline.curvature.attention import second_order_attention
    from pipeline.curvature.coupling import block_loss, hvp_batch
    from tests.test_attention_curvature import EncoderModel, _blocks, _data, _model

    model = _model(EncoderModel)
    X, y = _data()
    blocks = _blocks(model)
    args = (model, blocks, X, y, nn.CrossEntropyLoss(), "classification")
    cpu, _ = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=2000), 0, 0)
    gpu, _ = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=2000, device="cuda"), 0, 0)
    _compare(cpu, gpu)
    graph = trace_block_graph(model, [name for name, _ in blocks])
    cuda_model = copy.deepcopy(model).to("cuda")
    with second_order_attention():
        on_cpu = block_loss(model, graph, X, y, nn.CrossEntropyLoss())
        V = torch.randn(3, on_cpu.theta0.numel(), dtype=torch.float64)
        ref, _ = hvp_batch(on_cpu.f, on_cpu.theta0, V)
        on_gpu = block_loss(cuda_model, graph, X.cuda(), y.cuda(), nn.CrossEntropyLoss())
        got, _ = hvp_batch(on_gpu.f, on_gpu.theta0, V.cuda())
    np.testing.assert_allclose(got.cpu().numpy(), ref.numpy(), rtol=0, atol=1e-9 * float(ref.abs().max()))


def test_a_run_trained_on_cuda_matches_the_cpu_run() -> None:
    """--device cuda: the optimizer steps run on the GPU (the measurements on the CPU); float32
    steps reduce in another order there, so a short run agrees to a loose tolerance, not bitwise."""
    from pipeline.extract.run import train_and_measure
    from pipeline.runspec import RunSpec

    spec = RunSpec(dataset="iris", epochs=3, metric_checkpoints=4, spectral_snapshots=2, probe_size=32,
                   optimizer="adam", lr=0.01)
    cpu, gpu = train_and_measure(spec, device="cpu"), train_and_measure(spec, device="cuda")
    assert gpu["runs"][0]["device"] == "cuda" and gpu["runs"][0]["status"] == "complete"
    cpu_loss = [r["train_loss"] for r in cpu["checkpoints"]]
    gpu_loss = [r["train_loss"] for r in gpu["checkpoints"]]
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=1e-3)


def test_a_cuda_run_with_dropout_and_a_regularizer_matches_the_cpu_run() -> None:
    """Dropout masks come from the CPU generator on either device (HostDrawnDropout) and the trace
    penalty's Hutchinson probes from the run's CPU generator, so the GPU run draws what the CPU run
    draws; only float32 reduction order differs."""
    from pipeline.extract.run import train_and_measure
    from pipeline.runspec import RunSpec

    spec = RunSpec(dataset="iris", epochs=3, metric_checkpoints=4, spectral_snapshots=2, probe_size=32,
                   optimizer="adam", lr=0.01, dropout=0.2, regularizer="hessian_trace", penalty=0.01)
    cpu, gpu = train_and_measure(spec, device="cpu"), train_and_measure(spec, device="cuda")
    assert gpu["runs"][0]["status"] == "complete"
    np.testing.assert_allclose([r["train_loss"] for r in gpu["checkpoints"]],
                               [r["train_loss"] for r in cpu["checkpoints"]], rtol=1e-3)


def test_a_cuda_run_with_synthesis_adds_the_cpu_runs_edges() -> None:
    """Synthesis runs on the CPU in both (the model and its optimizer state move there at the
    checkpoint, and its new edges' parameters move to the GPU with the rest after): the same edges
    are chosen and training continues with them on the device."""
    from pipeline.extract.run import train_and_measure
    from pipeline.runspec import RunSpec

    # a deep sigmoid net whose CPU run adds an edge (an adapter 6 -> 8 on this machine)
    spec = RunSpec(dataset="wine", epochs=4, metric_checkpoints=8, spectral_snapshots=2, probe_size=128,
                   activation="sigmoid", size="custom", widths=(16,) * 8, augment="synthesized",
                   coupling_probes=8, lr=0.01, seed=1)
    cpu, gpu = train_and_measure(spec, device="cpu"), train_and_measure(spec, device="cuda")
    assert gpu["runs"][0]["status"] == "complete"
    edges = [[(r["src"], r["dst"], r["kind"]) for r in run["augmentations"]] for run in (cpu, gpu)]
    assert edges[0], "the CPU run added no edge: the test would not compare synthesis"
    assert edges[0] == edges[1]
    np.testing.assert_allclose([r["train_loss"] for r in gpu["checkpoints"]],
                               [r["train_loss"] for r in cpu["checkpoints"]], rtol=1e-3)
