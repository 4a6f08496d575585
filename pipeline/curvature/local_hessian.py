"""The local Hessian of a block (DESIGN definition 1; paper 001, definitions 5-6, Algorithm 1).

H_i = d^2 S_i / d theta_i^2 with S_i(theta_i) = (1/N) sum_n phi(A(norm(W z_n + b))), z_n fixed.

Closed form (Linear + elementwise A, with no norm or with batch norm in eval mode, which is the
per-unit affine map u = a_j (W z + b)_j + c_j): in neuron order H_i is block diagonal with q blocks
of size d + 1,

    block_j = (1/N) sum_n c_nj z~_n z~_n^T,   z~ = [z; 1],
    c_nj = a_j^2 A''(u_nj)                          phi = sum
         = a_j^2 A''(u_nj) / q                      phi = mean
         = a_j^2 (A'(u_nj)^2 + A(u_nj) A''(u_nj))   phi = half_sq_norm

so its eigenvalues are those of the q small blocks and the dense matrix is never formed. It is
exactly zero iff phi is linear (sum, mean) and A'' = 0 (ReLU, identity). Each block has rank at most
min(N, d + 1). Layer norm couples the units, so it has no such form: ``vmap`` or ``autograd_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.curvature.activations import ELEMENTWISE, activation_derivatives, has_zero_second_derivative
from pipeline.curvature.dense_hessian import dense_hessian, finite_eigh
from pipeline.curvature.objective import PHIS, local_objective, neuron_order

LOCAL_METHODS = ("auto", "closed_form", "vmap", "autograd_rows")


@dataclass(frozen=True)
class LocalHessianBlocks:
    """blocks: (q, d + 1, d + 1), neuron j's block with coordinates (w_j, b_j)."""

    blocks: torch.Tensor

    @property
    def q(self) -> int:
        return self.blocks.shape[0]

    @property
    def d(self) -> int:
        return self.blocks.shape[1] - 1

    def eigenvalues(self) -> torch.Tensor:
        """All q (d + 1) eigenvalues, ascending."""
        return torch.linalg.eigvalsh(self.blocks).reshape(-1).sort().values

    def eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-block (values (q, d + 1), vectors (q, d + 1, d + 1)); vectors[j, :, k] is in block j."""
        return torch.linalg.eigh(self.blocks)

    def bias_share(self) -> float | None:
        """sum_k |lambda_k| u_k[bias]^2 / sum_k |lambda_k|: the bias is the last coordinate of each block."""
        values, vectors = self.eigh()
        total = values.abs().sum()
        if total == 0:
            return None
        return float((values.abs() * vectors[:, -1, :] ** 2).sum() / total)

    def dense(self, order: str = "torch") -> torch.Tensor:
        """The full matrix (tests and small layers only): block diagonal in neuron order."""
        h = torch.block_diag(*self.blocks)
        if order == "neuron":
            return h
        perm = torch.as_tensor(np.argsort(neuron_order(self.q, self.d)), device=h.device)
        return h[perm][:, perm]


def closed_form_applies(block: nn.Module) -> bool:
    norm_ok = isinstance(block.norm, nn.Identity | nn.BatchNorm1d)
    return norm_ok and block.activation_name in ELEMENTWISE and not block.training


def phi_coefficients(u: torch.Tensor, activation: str, phi: str) -> torch.Tensor:
    """c = d^2 phi(A(u)) / du^2 per entry of the pre-activations u (..., q) (the module docstring's c_nj
    without the normalization's a_j^2)."""
    if phi not in PHIS:
        raise ValueError(f"unknown phi {phi!r}")
    a, d1, d2 = activation_derivatives(u, activation)
    if phi == "sum":
        return d2
    if phi == "mean":
        return d2 / u.shape[-1]
    return d1 * d1 + a * d2


def _coefficients(block: nn.Module, z: torch.Tensor, phi: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(c (N, q), z~ = [z, 1] (N, d + 1)) of the closed form."""
    if not closed_form_applies(block):
        raise ValueError("closed form needs Linear + elementwise activation, no norm or batch norm, eval mode")
    if phi not in PHIS:
        raise ValueError(f"unknown phi {phi!r}")
    lin = block.linear
    z = z.detach()
    u = z @ lin.weight.detach().T + lin.bias.detach()
    scale = torch.ones(u.shape[1], dtype=u.dtype, device=u.device)
    if isinstance(block.norm, nn.BatchNorm1d):
        bn = block.norm
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        u = (u - bn.running_mean) * scale + bn.bias.detach()
    c = phi_coefficients(u, block.activation_name, phi) * scale**2
    zt = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1)
    return c, zt


def local_hessian_closed_form(block: nn.Module, z: torch.Tensor, phi: str = "sum") -> LocalHessianBlocks:
    """The q diagonal blocks of H_i in neuron order. block: a Block in eval mode; z: (N, d)."""
    c, zt = _coefficients(block, z, phi)
    return LocalHessianBlocks(torch.einsum("nj,nk,nl->jkl", c, zt, zt) / z.shape[0])


#: Memory for one chunk of per-neuron blocks decomposed together by :func:`local_closed_form_spectrum`.
CLOSED_FORM_CHUNK_BYTES = 256 * 2**20


def closed_form_solve_order(n: int, d: int) -> int:
    """The order of the matrices :func:`local_closed_form_spectrum` decomposes: N (the thin route,
    N <= (d + 1) / 2) or d + 1."""
    return n if n <= (d + 1) // 2 else d + 1


def local_closed_form_spectrum(block: nn.Module, z: torch.Tensor,
                               phi: str = "sum") -> tuple[torch.Tensor, float | None]:
    """All q (d + 1) eigenvalues (ascending) and the bias share of a Block, by the cheaper exact route
    (:func:`block_diagonal_spectrum` with one row of Z~ per probe point)."""
    c, zt = _coefficients(block, z, phi)
    return block_diagonal_spectrum(c, zt, zt.shape[0])


def block_diagonal_spectrum(c: torch.Tensor, zt: torch.Tensor, divisor: int) -> tuple[torch.Tensor, float | None]:
    """Eigenvalues (ascending) and bias share of the q blocks Z~^T diag(c_j) Z~ / divisor.

    c: (R, q) coefficients, zt: (R, d + 1) rows with the bias coordinate last (R = N probe points for
    a Linear block, N x positions for a convolution). When R <= (d + 1) / 2, one thin QR Z~^T = Q R
    gives block_j = Q (R diag(c_j) R^T / divisor) Q^T: its nonzero eigenpairs are those of the R x R
    middle factor, with eigenvectors Q v, and the other d + 1 - R eigenvalues are exactly zero (the
    rank bound min(R, d + 1)). Otherwise the (d + 1) x (d + 1) blocks are decomposed directly.
    """
    n, m = zt.shape
    thin = closed_form_solve_order(n, m - 1) == n < m
    if thin:
        q_basis, r = torch.linalg.qr(zt.T)
    k = n if thin else m
    # Decompose the q blocks a chunk at a time so that a wide layer's q x k x k stack never has to
    # fit in memory at once (a 1024-wide layer with 1024 probes would need 8.6 GB in one piece).
    # ... and the direct route's einsum may hold an R x chunk x (d + 1) intermediate (R = N x positions
    # for a convolution): size the chunk for both
    chunk = max(1, CLOSED_FORM_CHUNK_BYTES // (k * k * 8))
    if not thin:
        chunk = max(1, min(chunk, CLOSED_FORM_CHUNK_BYTES // (n * m * 8)))
    parts, abs_sum, weighted = [], 0.0, 0.0
    for start in range(0, c.shape[1], chunk):
        cj = c[:, start:start + chunk]
        if thin:
            values, vectors = finite_eigh(torch.matmul(r[None] * cj.T[:, None, :], r.T) / divisor)
            bias_components = torch.matmul(q_basis[-1], vectors)  # (Q v_k)[bias] for every block and k
        else:
            values, vectors = finite_eigh(torch.einsum("nj,nk,nl->jkl", cj, zt, zt) / divisor)
            bias_components = vectors[:, -1, :]
        parts.append(values.reshape(-1))
        abs_sum += float(values.abs().sum())
        weighted += float((values.abs() * bias_components**2).sum())
    if thin:  # the other d + 1 - R eigenvalues of every block are exactly zero
        parts.append(torch.zeros(c.shape[1] * (m - n), dtype=c.dtype, device=c.device))
    bias = None if abs_sum == 0 else weighted / abs_sum
    return torch.cat(parts).sort().values, bias


def is_exactly_zero(block: nn.Module, phi: str) -> bool:
    """True when the local Hessian vanishes identically: linear phi and A'' = 0, with no layer norm."""
    return (phi in ("sum", "mean") and has_zero_second_derivative(block.activation_name)
            and not isinstance(block.norm, nn.LayerNorm))


def local_hessian_dense(block: nn.Module, z: torch.Tensor, phi: str = "sum", method: str = "auto") -> torch.Tensor:
    """The dense local Hessian in torch order by ``closed_form``, ``vmap`` or ``autograd_rows``; ``auto``
    takes the closed form where it applies (the fastest by far, see benchmarks) and vmap otherwise."""
    if method == "auto":
        method = "closed_form" if closed_form_applies(block) else "vmap"
    if method == "closed_form":
        return local_hessian_closed_form(block, z, phi).dense("torch")
    dense_method = {"vmap": "vmap", "autograd_rows": "rows"}.get(method)
    if dense_method is None:
        raise ValueError(f"unknown local Hessian method {method!r} (choose from {', '.join(LOCAL_METHODS)})")
    return dense_hessian(local_objective(block, z, phi), dense_method)
