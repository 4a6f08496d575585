"""Curvature through attention: ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer`` and ``nn.TransformerDecoderLayer``, whose fused kernels have no second
derivatives (pipeline/curvature/attention.py).

References, written apart from the engine:
- curvlinops' GGNLinearOperator for every block, and its HessianLinearOperator for every block that
  holds no layer norm fed by its own parameters: curvlinops' Hessian-vector products are ``jvp`` of
  ``jacrev``, and in torch 2.13 the forward-mode derivative of a layer norm's backward pass taken
  under ``jacrev``'s vmap is wrong (see ``test_jvp_of_jacrev_through_a_layer_norm_is_wrong_in_torch``;
  functorch#534 reports the batching rule of that backward pass), so on such a block (a whole
  TransformerEncoderLayer) it is not a reference. The engine's products (reverse-over-reverse, and
  the coupling map's ``jvp`` of ``grad``) are not affected;
- the dense Hessian by torch.autograd.functional.hessian (reverse-over-reverse) of the loss as a
  function of the block's parameters, for every block;
- the encoder model's forward pass written out by hand (layer norm from means and variances,
  projections, softmax(Q K^T / sqrt(d)) V, GELU feed-forward: no torch.nn module, no attention or
  layer-norm kernel), and its dense Hessian by torch.func.hessian, for the loss, local and coupling
  blocks.
Tolerance: 1e-10 of the largest |eigenvalue| (exact against exact); matrix-free extremes within 2
of their stored residuals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from curvlinops import GGNLinearOperator, HessianLinearOperator
from torch import nn

from pipeline.curvature import block_engine
from pipeline.curvature.attention import second_order_attention
from pipeline.curvature.coupling import block_loss, exact_coupling, hvp_batch
from pipeline.curvature.coupling_rows import measure_coupling
from pipeline.curvature.engine import CurvatureSettings
from pipeline.curvature.sharpness import loss_sharpness_row
from pipeline.models.block_graph import default_blocks, trace_block_graph

RTOL = 1e-10
D, HEADS, T, N, CLASSES = 4, 2, 3, 6, 3


class SDPAModel(nn.Module):
    """Features as tokens, hand-projected Q, K, V into ``F.scaled_dot_product_attention`` (causal)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(1, D)
        self.qkv = nn.Linear(D, 3 * D)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x.unsqueeze(-1))
        q, k, v = self.qkv(t).reshape(x.shape[0], T, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(torch.tanh(a.transpose(1, 2).reshape(x.shape[0], T, D)).mean(1))


class MHAModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(1, D)
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x.unsqueeze(-1))
        return self.head(self.attn(t, t, t, need_weights=False)[0].mean(1))


class EncoderModel(nn.Module):
    """A ViT-style classifier: a CLS token and a positional embedding held by the model itself."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(1, D)
        self.cls_token = nn.Parameter(torch.randn(1, 1, D))
        self.pos_embed = nn.Parameter(torch.randn(1, T + 1, D))
        self.encoder = nn.TransformerEncoderLayer(D, HEADS, 2 * D, dropout=0.0, activation="gelu",
                                                  batch_first=True, norm_first=True)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x.unsqueeze(-1))
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], 1) + self.pos_embed
        return self.head(self.encoder(t)[:, 0])


class DecoderModel(nn.Module):
    """A learned query attending to the feature tokens through ``nn.TransformerDecoderLayer``."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(1, D)
        self.query = nn.Parameter(torch.randn(1, 2, D))
        self.decoder = nn.TransformerDecoderLayer(D, HEADS, 2 * D, dropout=0.0, batch_first=True)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.tokens(x.unsqueeze(-1))
        return self.head(self.decoder(self.query.expand(x.shape[0], -1, -1), memory).mean(1))


MODELS = {"sdpa": SDPAModel, "mha": MHAModel, "encoder_layer": EncoderModel, "decoder_layer": DecoderModel}


def _model(cls) -> nn.Module:
    torch.manual_seed(0)
    model = cls().double().eval()
    for module in model.modules():  # layer norms away from (1, 0), so their parameters have curvature
        if isinstance(module, nn.LayerNorm):
            module.weight.data.normal_()
            module.bias.data.normal_()
    return model


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, T, dtype=torch.float64, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def _blocks(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    graph = trace_block_graph(model, default_blocks(model))
    return list(zip(graph.names, graph.params, strict=True))


def _eigenvalues_match(row: dict, ref: torch.Tensor) -> None:
    lam = torch.linalg.eigvalsh(0.5 * (ref + ref.T)).detach().numpy()
    np.testing.assert_allclose(np.sort(row["eigenvalues"]), lam, rtol=0, atol=RTOL * max(np.abs(lam).max(), 1e-300))


def test_the_models_own_parameters_form_a_block_of_their_own() -> None:
    assert default_blocks(_model(EncoderModel)) == ["tokens", "(own)", "encoder", "head"]
    assert default_blocks(_model(DecoderModel)) == ["tokens", "(own)", "decoder", "head"]
    graph = trace_block_graph(_model(EncoderModel), ["tokens", "(own)", "encoder", "head"])
    assert graph.params[1] == ("cls_token", "pos_embed") and graph.successors == ((2,), (2,), (3,), ())


#: Blocks holding a layer norm whose input depends on the block's own parameters.
NORMED = {"encoder", "decoder"}


def _autograd_hessian(model: nn.Module, names: tuple[str, ...], X: torch.Tensor, y: torch.Tensor,
                      loss_fn: nn.Module) -> torch.Tensor:
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    theta0 = torch.cat([named[n].detach().reshape(-1) for n in names])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, [math.prod(s) for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(torch.func.functional_call(model, params, (X,)), y)

    with second_order_attention():
        return torch.autograd.functional.hessian(loss, theta0)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_block_through_attention_matches_curvlinops_and_autograd(name: str) -> None:
    model = _model(MODELS[name])
    X, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    blocks = _blocks(model)
    rows, _ = block_engine.block_curvature_snapshot(model, blocks, X, y, loss_fn, "classification",
                                                    CurvatureSettings(exact_limit=2000), seed=0, step=0)
    named = dict(model.named_parameters())
    for i, (block, names) in enumerate(blocks):
        params = [named[n] for n in names]
        p = sum(t.numel() for t in params)
        by_kind = {r["kind"]: r for r in rows if r["layer_index"] == i}
        assert by_kind["loss"]["method"] == "autograd" and by_kind["ggn"]["method"] == "gram"
        _eigenvalues_match(by_kind["loss"], _autograd_hessian(model, names, X, y, loss_fn))
        with second_order_attention():  # the reference differentiates twice through attention too
            g_ref = GGNLinearOperator(model, loss_fn, params, [(X, y)]) @ torch.eye(p, dtype=torch.float64)
            if block not in NORMED:
                h_ref = HessianLinearOperator(model, loss_fn, params, [(X, y)]) @ torch.eye(p, dtype=torch.float64)
                _eigenvalues_match(by_kind["loss"], h_ref)
        _eigenvalues_match(by_kind["ggn"], g_ref)


def test_jvp_of_jacrev_through_a_layer_norm_is_wrong_in_torch() -> None:
    """Why curvlinops is no reference on NORMED blocks: ``jvp`` of ``jacrev`` (curvlinops' product, and
    torch.func.hessian) through F.layer_norm, as a function of its input and its weight, differs from
    the same layer norm written from means and variances, while reverse-over-reverse and ``jvp`` of
    ``grad`` (the engine's routes) agree with it. If torch fixes it, this test says so and NORMED can go."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3 * 4 + 4, dtype=torch.float64, generator=g)

    def kernel(th: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(th[:12].view(3, 4), (4,), th[12:], None).sin().sum()

    def by_hand(th: torch.Tensor) -> torch.Tensor:
        x = th[:12].view(3, 4)
        mu = x.mean(-1, keepdim=True)
        return ((x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5) * th[12:]).sin().sum()

    exact = torch.func.hessian(by_hand)(theta)
    v = torch.randn(theta.shape, dtype=torch.float64, generator=g)
    assert torch.allclose(torch.autograd.functional.hessian(kernel, theta), exact, rtol=0, atol=1e-12)
    assert torch.allclose(torch.func.jvp(torch.func.grad(kernel), (theta,), (v,))[1], exact @ v, rtol=0, atol=1e-12)
    assert not torch.allclose(torch.func.jvp(torch.func.jacrev(kernel), (theta,), (v,))[1], exact @ v, rtol=0,
                              atol=1e-3)


def _encoder_by_hand(model: EncoderModel, x: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple:
    """(logits, the encoder layer's input, its output) from plain tensor operations."""
    P = {n: params.get(n, p.detach()) for n, p in model.named_parameters()}
    e = model.encoder

    def layer_norm(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
        mu = t.mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(((t - mu) ** 2).mean(-1, keepdim=True) + eps) * w + b

    t = x.unsqueeze(-1) @ P["tokens.weight"].T + P["tokens.bias"]
    t = torch.cat([P["cls_token"].expand(x.shape[0], -1, -1), t], 1) + P["pos_embed"]

    def layer(t: torch.Tensor) -> torch.Tensor:
        h = layer_norm(t, P["encoder.norm1.weight"], P["encoder.norm1.bias"], e.norm1.eps)
        qkv = h @ P["encoder.self_attn.in_proj_weight"].T + P["encoder.self_attn.in_proj_bias"]
        q, k, v = qkv.reshape(x.shape[0], T + 1, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // HEADS), dim=-1) @ v
        a = a.transpose(1, 2).reshape(x.shape[0], T + 1, D)
        t = t + a @ P["encoder.self_attn.out_proj.weight"].T + P["encoder.self_attn.out_proj.bias"]
        h = layer_norm(t, P["encoder.norm2.weight"], P["encoder.norm2.bias"], e.norm2.eps)
        h = F.gelu(h @ P["encoder.linear1.weight"].T + P["encoder.linear1.bias"])
        return t + h @ P["encoder.linear2.weight"].T + P["encoder.linear2.bias"]

    out = layer(t)
    return out[:, 0] @ P["head.weight"].T + P["head.bias"], t, layer


def test_the_encoder_layer_equals_a_hand_written_attention_in_every_route() -> None:
    model = _model(EncoderModel)
    X, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    blocks = _blocks(model)
    names = [n for n, _ in blocks]
    i = names.index("encoder")
    group = blocks[i][1]
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in group]
    theta0 = torch.cat([named[n].detach().reshape(-1) for n in group])

    def unflat(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(theta, [math.prod(s) for s in shapes])
        return {n: c.view(s) for n, c, s in zip(group, parts, shapes, strict=True)}

    logits, t, layer = _encoder_by_hand(model, X, {})
    with torch.no_grad():
        np.testing.assert_allclose(logits.detach().numpy(), model(X).detach().numpy(), rtol=0, atol=1e-12)
    loss_ref = torch.func.hessian(lambda th: loss_fn(_encoder_by_hand(model, X, unflat(th))[0], y))(theta0)
    local_ref = torch.func.hessian(
        lambda th: _encoder_by_hand(model, X, unflat(th))[2](t.detach()).reshape(N, -1).sum(1).mean())(theta0)

    exact, _ = block_engine.block_curvature_snapshot(model, blocks, X, y, loss_fn, "classification",
                                                     CurvatureSettings(exact_limit=2000), 0, 0)
    by_kind = {r["kind"]: r for r in exact if r["layer_index"] == i}
    _eigenvalues_match(by_kind["loss"], loss_ref)
    assert by_kind["local"]["method"] == "autograd"
    _eigenvalues_match(by_kind["local"], local_ref)

    # Lanczos on products (forward-over-reverse through attention), extremes within their residuals
    est, _ = block_engine.block_curvature_snapshot(model, blocks, X, y, loss_fn, "classification",
                                                   CurvatureSettings(exact_limit=10, hvp_budget=800), 0, 0)
    lam = torch.linalg.eigvalsh(loss_ref).numpy()
    row = next(r for r in est if r["layer_index"] == i and r["kind"] == "loss")
    assert row["method"] == "lanczos" and row["converged"]
    assert abs(row["top_eigenvalue"] - lam.max()) <= 2 * row["top_residual"] + 1e-9 * np.abs(lam).max()

    # the coupling map's exact reference: Frobenius norms of the whole Hessian's blocks, by hand
    all_names = [n for _, g in blocks for n in g]
    all_shapes = [named[n].shape for n in all_names]
    theta_all = torch.cat([named[n].detach().reshape(-1) for n in all_names])

    def loss_all(th: torch.Tensor) -> torch.Tensor:
        parts = torch.split(th, [math.prod(s) for s in all_shapes])
        return loss_fn(_encoder_by_hand(model, X, {n: c.view(s) for n, c, s in
                                                   zip(all_names, parts, all_shapes, strict=True)})[0], y)

    full = torch.func.hessian(loss_all)(theta_all).detach().numpy()
    sizes = np.cumsum([0] + [sum(named[n].numel() for n in g) for _, g in blocks])
    frob_ref = np.array([[np.linalg.norm(full[sizes[a]:sizes[a + 1], sizes[b]:sizes[b + 1]])
                          for b in range(len(blocks))] for a in range(len(blocks))])
    graph = trace_block_graph(model, names)
    loss = block_loss(model, graph, X, y, loss_fn)
    with second_order_attention():
        _, frob = exact_coupling(loss)
        V = torch.from_numpy(np.random.default_rng(0).choice([-1.0, 1.0], size=(5, theta_all.numel())))
        hv, _ = hvp_batch(loss.f, loss.theta0, V)  # the coupling map's products, through two layer norms
    hv_ref = V.numpy() @ full
    np.testing.assert_allclose(hv.detach().numpy(), hv_ref, rtol=0, atol=RTOL * np.abs(hv_ref).max())
    np.testing.assert_allclose(frob, frob_ref, rtol=0, atol=RTOL * frob_ref.max())
    _, cmap = measure_coupling(model, X.float(), y, loss_fn, "classification", 64, np.random.default_rng(0))
    assert np.isfinite(cmap.frobenius).all() and np.isfinite(cmap.trace).all()
    assert np.all(np.abs(cmap.frobenius - frob_ref) <= 5 * np.maximum(cmap.stderr * frob_ref, 1e-9) + 0.5 * frob_ref)


def test_the_matrix_free_gauss_newton_and_sharpness_run_through_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(MHAModel)
    X, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    blocks = _blocks(model)
    args = (model, blocks, X, y, loss_fn, "classification")
    exact, _ = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=2000), 0, 0)
    monkeypatch.setattr(block_engine, "jacobian_factor_fits", lambda n, m, p: False)
    est, _ = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=10, hvp_budget=800), 0, 0)
    i = [n for n, _ in blocks].index("attn")
    e = next(r for r in exact if r["layer_index"] == i and r["kind"] == "ggn")
    m = next(r for r in est if r["layer_index"] == i and r["kind"] == "ggn")
    assert m["method"] == "lanczos" and m["converged"]
    assert abs(m["top_eigenvalue"] - e["top_eigenvalue"]) <= 2 * m["top_residual"] + 1e-9 * e["top_eigenvalue"]
    row = loss_sharpness_row(model.float(), X.float(), y, loss_fn, "classification", np.random.default_rng(0))
    assert row["hessian_top_converged"] and math.isfinite(row["sharpness"])


def test_the_attention_flags_are_kept_until_the_last_thread_leaves() -> None:
    """The flags are process-wide: a thread leaving its window while another is still inside must not
    restore the fused kernels under it; the last to leave restores what the first found."""
    import threading
    import time

    def flags() -> tuple[bool, bool]:
        return torch.backends.mha.get_fastpath_enabled(), torch.backends.cuda.flash_sdp_enabled()

    before, seen = flags(), []

    def short() -> None:
        with second_order_attention():
            time.sleep(0.05)

    def long() -> None:
        with second_order_attention():
            time.sleep(0.2)
            seen.append(flags())

    threads = [threading.Thread(target=long), threading.Thread(target=short)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert seen == [(False, False)] and flags() == before
    with pytest.raises(ValueError), second_order_attention():
        raise ValueError
    assert flags() == before
