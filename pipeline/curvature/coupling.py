"""Curvature coupling between blocks of the loss Hessian, from Hessian-vector products only (002).

For blocks i, j with parameters theta_i, theta_j and the loss Hessian H (definition 2: mean training
loss on the probe batch, eval mode), the coupling is (definition 9)

    kappa_ij = ||H_ij||_F / sqrt(||H_ii||_F ||H_jj||_F),

unbounded above because H is indefinite; kappa_ii = 1. Estimator: a Rademacher vector v supported on
block j (v_j uniform on {-1, +1}^{p_j}, zero elsewhere) gives, in one product, H v = H_{:,j} v_j, so
``(H v)_i`` is H_ij v_j for every block i at once, and E ||H_ij v_j||^2 = ||H_ij||_F^2 (also
E v_j^T H_jj v_j = tr H_jj: the Hutchinson trace of every diagonal block comes from the same
products). With m probes per block a whole map costs B x m products, exactly what the Hutchinson
traces of the B diagonal blocks cost at the same m. Since ||H_ij||_F = ||H_ji||_F, the
off-diagonal estimate averages the 2m squares from probes on j and on i. Standard errors are
jackknife over probes (leaving out the k-th probe of every block at once).

Products are forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``), ``vmap``-ed over
chunks of probes sized to a memory budget (reverse-over-reverse, one row at a time, where
forward-mode AD refuses a graph).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from pipeline.models.block_graph import BlockGraph

#: Most probes per vmap-ed batch of Hessian-vector products.
HVP_CHUNK = 32
#: Memory a vmap-ed batch may take: each probe carries its own copy of the activations the backward
#: pass saves (and their tangents), so wide batches of attention maps would otherwise take gigabytes.
HVP_CHUNK_BYTES = 256 * 2**20
#: Forward-over-reverse keeps about this many copies of the saved activations per probe.
_COPIES_PER_PROBE = 4


@dataclass(frozen=True)
class BlockLoss:
    """f: (P,) -> scalar, the loss as a function of the blocks' parameters concatenated in block
    order (each block's parameters in ``named_parameters`` order, flattened), around theta0;
    ``slices[i]`` is block i's range. Every other parameter and buffer is held fixed."""

    f: Callable[[torch.Tensor], torch.Tensor]
    theta0: torch.Tensor
    slices: tuple[slice, ...]

    @property
    def n_blocks(self) -> int:
        return len(self.slices)


def block_loss(model: nn.Module, graph: BlockGraph, X: torch.Tensor, y: torch.Tensor,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> BlockLoss:
    """The BlockLoss of ``model`` (in the dtype and device it is in) on the batch (X, y)."""
    named = dict(model.named_parameters())
    names = [n for block in graph.params for n in block]
    shapes = [named[n].shape for n in names]
    sizes = [named[n].numel() for n in names]
    in_blocks = set(names)
    fixed = {k: v.detach() for k, v in named.items() if k not in in_blocks}
    buffers = dict(model.named_buffers())
    slices, start = [], 0
    for block in graph.params:
        p = sum(named[n].numel() for n in block)
        slices.append(slice(start, start + p))
        start += p

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, ({**fixed, **params}, buffers), (X,)), y)

    theta0 = torch.cat([named[n].detach().reshape(-1) for n in names])
    return BlockLoss(f, theta0, tuple(slices))


def saved_activation_bytes(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> int:
    """Bytes of the tensors one backward pass of f at theta saves (counted with saved-tensor hooks)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    t = theta.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f(t)
    return total


def hvp_chunk(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> int:
    """Probes per vmap-ed batch: at most HVP_CHUNK, and within HVP_CHUNK_BYTES."""
    per_probe = _COPIES_PER_PROBE * max(1, saved_activation_bytes(f, theta))
    return int(max(1, min(HVP_CHUNK, HVP_CHUNK_BYTES // per_probe)))


def hvp_batch(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
              V: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(H V, products evaluated) for the rows of V (k, P): forward-over-reverse products, vmap-ed in
    chunks sized by :func:`hvp_chunk`; a chunk forward-mode AD refuses is redone row by row."""
    def one(v: torch.Tensor) -> torch.Tensor:
        return jvp(grad(f), (theta,), (v,))[1]

    chunk, parts, products = hvp_chunk(f, theta), [], 0
    for start in range(0, V.shape[0], chunk):
        rows = V[start:start + chunk]
        try:
            parts.append(vmap(one)(rows))
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            # forward-mode AD refuses some graphs (a batched tangent meeting one of its immutable
            # ZeroTensors, seen on a gated edge into the output under an MSE loss); reverse-over-reverse
            # gives the same products
            parts.append(hvp_loop(f, theta, rows))
        products += rows.shape[0]
    return torch.cat(parts), products


def hvp_loop(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """H V by one backward pass per row through a gradient graph built once (reverse-over-reverse)."""
    t = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(t), t, create_graph=True)
    if not g.requires_grad:
        return torch.zeros_like(V)
    rows = []
    for v in V:
        (hv,) = torch.autograd.grad(g, t, grad_outputs=v, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(v) if hv is None else hv.detach())
    return torch.stack(rows)


@dataclass(frozen=True)
class CouplingMap:
    """kappa, stderr, frobenius: (B, B) symmetric; trace, trace_stderr: (B,) Hutchinson traces of
    the diagonal blocks; n_probes per block; n_hvp Hessian-vector products evaluated (B x n_probes)."""

    kappa: np.ndarray
    stderr: np.ndarray
    frobenius: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    n_probes: int
    n_hvp: int


def rademacher_block_probes(slices: tuple[slice, ...], n_params: int, n_probes: int,
                            rng: np.random.Generator) -> np.ndarray:
    """(B, m, P) probes: probes[j, k] is +-1 on block j's coordinates and 0 elsewhere."""
    probes = np.zeros((len(slices), n_probes, n_params))
    for j, s in enumerate(slices):
        probes[j, :, s] = rng.choice((-1.0, 1.0), size=(n_probes, s.stop - s.start))
    return probes


def coupling_map(loss: BlockLoss, n_probes: int, rng: np.random.Generator) -> CouplingMap:
    """The estimated coupling map with B x n_probes Hessian-vector products (see the module doc)."""
    if n_probes < 2:
        raise ValueError(f"the jackknife needs at least 2 probes per block, got {n_probes}")
    B, P = loss.n_blocks, loss.theta0.numel()
    probes = rademacher_block_probes(loss.slices, P, n_probes, rng)
    theta = loss.theta0.detach()
    V = torch.as_tensor(probes.reshape(B * n_probes, P), dtype=theta.dtype, device=theta.device)
    HV, n_products = hvp_batch(loss.f, theta, V)
    HV = HV.reshape(B, n_probes, P).cpu().double().numpy()
    # sq[k, i, j] = ||(H v_j^(k))_i||^2 ; quad[k, j] = v_j^(k)T (H v_j^(k))_j
    sq = np.stack([np.stack([(HV[j, :, s] ** 2).sum(axis=1) for s in loss.slices], axis=1)
                   for j in range(B)], axis=2)
    quad = np.stack([(HV[j, :, s] * probes[j, :, s]).sum(axis=1) for j, s in enumerate(loss.slices)], axis=1)
    kappa, stderr, frob = kappa_with_jackknife(sq)
    m = n_probes
    return CouplingMap(kappa, stderr, frob, quad.mean(axis=0), quad.std(axis=0, ddof=1) / np.sqrt(m), m, n_products)


def kappa_from_squares(fsq: np.ndarray) -> np.ndarray:
    """kappa_ij = sqrt(F_ij) / (F_ii F_jj)^(1/4) from F = ||H_ij||_F^2 (..., B, B); NaN where a
    diagonal block is zero."""
    d = np.sqrt(np.sqrt(np.clip(np.diagonal(fsq, axis1=-2, axis2=-1), 0, None)))
    denom = d[..., :, None] * d[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, np.sqrt(np.clip(fsq, 0, None)) / denom, np.nan)


def kappa_with_jackknife(sq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kappa, jackknife stderr, ||H_ij||_F estimate) from per-probe squares sq (m, B, B), where
    sq[k, i, j] = ||H_ij v_j^(k)||^2; off the diagonal both directions are averaged."""
    m = sq.shape[0]
    sym = 0.5 * (sq + np.swapaxes(sq, 1, 2))
    total = sym.sum(axis=0)
    kappa = kappa_from_squares(total / m)
    loo = kappa_from_squares((total[None] - sym) / (m - 1))
    stderr = np.sqrt((m - 1) / m * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
    return kappa, stderr, np.sqrt(total / m)


def exact_coupling(loss: BlockLoss) -> tuple[np.ndarray, np.ndarray]:
    """(kappa, ||H_ij||_F) from the full Hessian (torch.autograd.functional.hessian): the reference."""
    h = torch.autograd.functional.hessian(loss.f, loss.theta0.detach()).cpu().double().numpy()
    B = loss.n_blocks
    frob = np.array([[np.linalg.norm(h[si, sj]) for sj in loss.slices] for si in loss.slices])
    return kappa_from_squares(frob**2), frob.reshape(B, B)


def global_coherence(kappa: np.ndarray, pair_lengths: np.ndarray) -> float:
    """Mean kappa over the block pairs i < j joined by a computational path (either direction)."""
    iu = np.triu_indices(kappa.shape[0], k=1)
    k, length = kappa[iu], pair_lengths[iu]
    chosen = k[(length > 0) & np.isfinite(k)]
    return float(chosen.mean()) if chosen.size else float("nan")
