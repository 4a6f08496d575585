"""The any-model engine (pipeline/curvature/block_engine.py) against references written apart from it.

- curvlinops' HessianLinearOperator and GGNLinearOperator restricted to one block's parameters
  (its own flattening is torch's, like the engine's) for the loss and Gauss-Newton blocks of a 2-D
  CNN, a Transformer encoder and a residual MLP;
- torch.autograd.functional.hessian of the block's forward pass written out here with F.conv1d /
  F.conv2d and the activation, for the convolution's closed-form local Hessian, and of a
  hand-written attention sublayer for the local Hessian of attention;
- the matrix-free routes (Lanczos on products, J^T H J v) against the exact rows of the same blocks.

Tolerance: 1e-9 relative (Frobenius or max |eigenvalue|) for exact against exact; matrix-free
extremes within 2 of their stored residuals (a Ritz value's residual bounds its distance to an
eigenvalue), traces within 4 stored standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from curvlinops import GGNLinearOperator, HessianLinearOperator
from torch import nn

from pipeline.curvature import block_engine, parameter_group
from pipeline.curvature.conv_local import conv_local_spectrum
from pipeline.curvature.engine import CurvatureSettings
from pipeline.models.block_graph import trace_block_graph
from pipeline.models.cnn import ConvBlock, SmallCNN
from pipeline.models.mlp import MLP
from pipeline.models.transformer import SmallTransformer

RTOL = 1e-9


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(16, 3, (3, 2), dims=2, activation="tanh").double().eval()


def _transformer() -> SmallTransformer:
    torch.manual_seed(0)
    m = SmallTransformer(5, 3, d_model=4, heads=2, layers=1, hidden=6, activation="gelu").double().eval()
    for module in m.modules():  # layer norms away from (1, 0), so their parameters have curvature
        if isinstance(module, nn.LayerNorm):
            module.weight.data.normal_()
            module.bias.data.normal_()
    return m


def _residual_mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(4, (5, 5, 5), 3, "sigmoid", residual="every").double().eval()


def _data(d_in: int, n: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, dtype=torch.float64, generator=g), torch.randint(0, 3, (n,), generator=g)


def _graph_blocks(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    graph = trace_block_graph(model, model.block_names())
    return list(zip(graph.names, graph.params, strict=True))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / max(float(torch.linalg.norm(b)), 1e-300))


def _dense(op, p: int) -> torch.Tensor:
    return op @ torch.eye(p, dtype=torch.float64)


MODELS = {"cnn2d": (_cnn, 16), "transformer": (_transformer, 5), "residual_mlp": (_residual_mlp, 4)}


@pytest.mark.parametrize("family", list(MODELS))
def test_every_block_matches_curvlinops_loss_and_ggn(family: str) -> None:
    build, d_in = MODELS[family]
    model = build()
    X, y = _data(d_in)
    loss_fn = nn.CrossEntropyLoss()
    blocks = _graph_blocks(model)
    rows, extras = block_engine.block_curvature_snapshot(model, blocks, X, y, loss_fn, "classification",
                                                         CurvatureSettings(exact_limit=2000), seed=0, step=0)
    named = dict(model.named_parameters())
    for i, (_, names) in enumerate(blocks):
        params = [named[n] for n in names]
        p = sum(t.numel() for t in params)
        h_ref = _dense(HessianLinearOperator(model, loss_fn, params, [(X, y)]), p)
        g_ref = _dense(GGNLinearOperator(model, loss_fn, params, [(X, y)]), p)
        by_kind = {r["kind"]: r for r in rows if r["layer_index"] == i}
        for kind, ref in (("loss", h_ref), ("ggn", g_ref)):
            lam = torch.linalg.eigvalsh(0.5 * (ref + ref.T)).numpy()
            row = by_kind[kind]
            assert row["method"] in ("autograd", "gram")
            np.testing.assert_allclose(np.sort(row["eigenvalues"]), lam, rtol=0,
                                       atol=RTOL * max(np.abs(lam).max(), 1e-300))
            assert row["trace"] == pytest.approx(lam.sum(), rel=1e-8, abs=1e-12)
        # gradient pressure g^T H g / ||g||^2 and the natural-gradient norm, from the references
        theta = torch.cat([t.detach().reshape(-1) for t in params])
        grads = torch.autograd.grad(loss_fn(model(X), y), params)
        g = torch.cat([t.reshape(-1) for t in grads])
        assert extras[i]["gradient_pressure"] == pytest.approx(float(g @ h_ref @ g / (g @ g)), rel=1e-8)
        top = float(torch.linalg.eigvalsh(g_ref).max())
        damped = g_ref + 1e-3 * top * torch.eye(p, dtype=torch.float64)
        assert extras[i]["natural_gradient_norm"] == pytest.approx(float(g @ torch.linalg.solve(damped, g)),
                                                                   rel=1e-6)
        assert theta.numel() == by_kind["loss"]["n_params"]


def _conv_reference(block: ConvBlock, z: torch.Tensor, phi: str) -> torch.Tensor:
    """The local Hessian of (1/N) sum_n phi(A(conv(z_n))) by autograd on F.convNd, torch order."""
    conv = block.conv
    w0, b0 = conv.weight.detach(), conv.bias.detach()
    fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
    act = {nn.Tanh: torch.tanh, nn.Sigmoid: torch.sigmoid, nn.GELU: F.gelu}[type(block.activation)]

    def s(theta: torch.Tensor) -> torch.Tensor:
        w = theta[: w0.numel()].view_as(w0)
        b = theta[w0.numel():]
        out = act(fn(z, w, b, padding=conv.padding)).reshape(z.shape[0], -1)
        per_point = {"sum": out.sum(1), "mean": out.mean(1), "half_sq_norm": 0.5 * (out**2).sum(1)}[phi]
        return per_point.mean()

    return torch.autograd.functional.hessian(s, torch.cat([w0.reshape(-1), b0]))


@pytest.mark.parametrize(("dims", "activation", "phi"), [(1, "sigmoid", "sum"), (2, "tanh", "mean"),
                                                         (2, "gelu", "half_sq_norm"), (1, "gelu", "sum")])
def test_convolution_local_hessian_closed_form_matches_autograd(dims: int, activation: str, phi: str) -> None:
    torch.manual_seed(3)
    block = ConvBlock(2, 3, 3, dims, activation).double().eval()
    z = torch.randn(7, 2, *((5, 4) if dims == 2 else (9,)), dtype=torch.float64)
    ref = _conv_reference(block, z, phi)
    values, bias, _ = conv_local_spectrum(block, z, phi)
    lam = torch.linalg.eigvalsh(ref)
    assert float((values - lam).abs().max()) <= RTOL * float(lam.abs().max())
    mask = torch.zeros(ref.shape[0], dtype=torch.bool)
    mask[-3:] = True  # the 3 biases come last in torch order
    vals, vecs = torch.linalg.eigh(ref)
    expected = float((vals.abs() * (vecs[mask] ** 2).sum(0)).sum() / vals.abs().sum())
    assert bias == pytest.approx(expected, rel=1e-8)


def _attention_reference(attn: nn.Module, t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The local Hessian of the pre-norm attention sublayer (phi = sum), written out from F ops."""
    names = [n for n, _ in attn.named_parameters()]
    shapes = [p.shape for _, p in attn.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in attn.named_parameters()])
    heads, d_head = attn.heads, attn.d_head

    def s(theta: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (c.view(sh) for c, sh in zip(torch.split(theta, [math.prod(x) for x in shapes]),
                                                               shapes, strict=True)), strict=True))
        h = F.layer_norm(t, (t.shape[-1],), parts["norm.weight"], parts["norm.bias"], attn.norm.eps)
        qkv = h @ parts["qkv.weight"].T + parts["qkv.bias"]
        n, s_, d = t.shape
        q, k, v = qkv.reshape(n, s_, 3, heads, d_head).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d_head), dim=-1) @ v
        out = a.transpose(1, 2).reshape(n, s_, d) @ parts["out.weight"].T + parts["out.bias"]
        return out.reshape(n, -1).sum(1).mean()

    return torch.autograd.functional.hessian(s, theta0), theta0.numel()


def test_attention_and_layer_norm_local_hessians_match_autograd_exact_and_matrix_free() -> None:
    model = _transformer()
    X, _ = _data(5)
    blocks = _graph_blocks(model)
    index = [name for name, _ in blocks].index("layers.0.attn")
    attn = model.get_submodule("layers.0.attn")
    t = model.embed(X).detach()
    ref, p = _attention_reference(attn, t)
    lam = torch.linalg.eigvalsh(ref).numpy()
    exact, _ = block_engine.block_curvature_snapshot(model, blocks, X, _data(5)[1], nn.CrossEntropyLoss(),
                                                     "classification", CurvatureSettings(exact_limit=2000), 0, 0)
    row = next(r for r in exact if r["layer_index"] == index and r["kind"] == "local")
    assert row["method"] == "autograd"
    np.testing.assert_allclose(row["eigenvalues"], lam, rtol=0, atol=RTOL * np.abs(lam).max())
    # above the exact limit: Lanczos on local products, extremes within their residuals, trace in its error
    est, _ = block_engine.block_curvature_snapshot(model, blocks, X, _data(5)[1], nn.CrossEntropyLoss(),
                                                   "classification", CurvatureSettings(exact_limit=10,
                                                                                      hvp_budget=640), 0, 0)
    row = next(r for r in est if r["layer_index"] == index and r["kind"] == "local")
    assert row["method"] == "lanczos" and row["converged"] and row["bottom_converged"]
    assert abs(row["top_eigenvalue"] - lam.max()) <= 2 * row["top_residual"] + 1e-9 * np.abs(lam).max()
    assert abs(row["bottom_eigenvalue"] - lam.min()) <= 2 * row["bottom_residual"] + 1e-9 * np.abs(lam).max()
    assert abs(row["trace"] - lam.sum()) <= 4 * row["trace_stderr"]
    assert p == row["n_params"]


def test_matrix_free_ggn_and_loss_rows_agree_with_the_exact_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CNN's head (p = 2 x 16 x 3 + 3 = 99) through Lanczos on J^T H J v and on H v."""
    model = _cnn()
    X, y = _data(16, n=12)
    blocks = _graph_blocks(model)
    args = (model, blocks, X, y, nn.CrossEntropyLoss(), "classification")
    exact, exact_extras = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=2000), 0, 0)
    monkeypatch.setattr(block_engine, "jacobian_factor_fits", lambda n, m, p: False)
    est, est_extras = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=10, hvp_budget=800),
                                                            0, 0)
    head = len(blocks) - 1
    for kind in ("loss", "ggn"):
        e = next(r for r in exact if r["layer_index"] == head and r["kind"] == kind)
        m = next(r for r in est if r["layer_index"] == head and r["kind"] == kind)
        assert m["method"] == "lanczos" and m["converged"]
        assert abs(m["top_eigenvalue"] - e["top_eigenvalue"]) <= 2 * m["top_residual"] + 1e-9 * e["top_eigenvalue"]
        assert abs(m["trace"] - e["trace"]) <= 4 * m["trace_stderr"]
    assert est_extras[head]["natural_gradient_converged"]
    assert est_extras[head]["natural_gradient_norm"] == pytest.approx(exact_extras[head]["natural_gradient_norm"],
                                                                      rel=1e-4)
    assert est_extras[head]["gradient_pressure"] == pytest.approx(exact_extras[head]["gradient_pressure"], rel=1e-9)


def test_a_relu_convolution_and_a_linear_head_have_exactly_zero_local_hessians() -> None:
    torch.manual_seed(0)
    model = SmallCNN(16, 3, (2,), dims=1, activation="relu").double().eval()
    X, y = _data(16)
    rows, _ = block_engine.block_curvature_snapshot(model, _graph_blocks(model), X, y, nn.CrossEntropyLoss(),
                                                    "classification", CurvatureSettings(), 0, 0)
    local = [r for r in rows if r["kind"] == "local"]
    assert [r["method"] for r in local] == ["closed_form", "closed_form"]
    assert all(r["exactly_zero"] and r["top_eigenvalue"] == 0 for r in local)


def test_a_block_that_runs_twice_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(self.a(x))

    with pytest.raises(ValueError, match="runs 2 times"):
        parameter_group.record_block_inputs(Twice(), "a", torch.randn(2, 3))
