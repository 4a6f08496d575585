"""Spectra of weight matrices and their gradients (DESIGN definition 5; paper 001, 5.5).

All functions take float tensors of shape (q, d) and compute in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Singular values below RANK_RTOL_EPS * max(q, d) * sigma_max count as zero: numpy's matrix_rank
#: rule with the machine epsilon of float32, the precision weights are trained in.
RANK_RTOL_EPS = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class SingularSummary:
    singular_values: list[float]  # descending
    numerical_rank: int
    stable_rank: float | None  # ||M||_F^2 / ||M||_2^2; None for a zero matrix
    spectral_norm: float
    frobenius_norm: float


def singular_summary(m: torch.Tensor) -> SingularSummary:
    """sigma = svdvals(M); rank = #{sigma_k > eps32 * max(q, d) * sigma_1}; stable rank = sum sigma^2 / sigma_1^2."""
    s = torch.linalg.svdvals(m.detach().double())
    top = float(s[0]) if s.numel() else 0.0
    fro = float(torch.sqrt((s**2).sum()))
    rank = int((s > RANK_RTOL_EPS * max(m.shape) * top).sum()) if top > 0 else 0
    return SingularSummary(s.tolist(), rank, (fro**2 / top**2) if top > 0 else None, top, fro)


def weight_gradient_alignment(w: torch.Tensor, g: torch.Tensor) -> float | None:
    """sum_k sigma_k(W) |u_k^T G v_k| / (||W||_F ||G||_F), (u_k, v_k) singular pairs of W.

    In [0, 1]; 1 when G is a positive multiple of W's own singular structure (gradient "rigidly"
    along the weights), None when W or G is zero.
    """
    w, g = w.detach().double(), g.detach().double()
    nw, ng = torch.linalg.norm(w), torch.linalg.norm(g)
    if nw == 0 or ng == 0:
        return None
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    proj = torch.einsum("ik,ij,kj->k", u, g, vh)  # u_k^T G v_k for each k
    return float((s * proj.abs()).sum() / (nw * ng))


def adjacent_similarity(w_l: torch.Tensor, w_next: torch.Tensor) -> tuple[float | None, int]:
    """Mean cosine of the principal angles between span of the top-k left singular vectors of W_l
    (shape q_l x d_l) and span of the top-k right singular vectors of W_{l+1} (q_{l+1} x q_l), both
    in R^{q_l}; k = max(1, round(min(stable rank W_l, stable rank W_{l+1}))).

    Returns (similarity, k). For random subspaces the expected value is about sqrt(k / q_l).
    """
    w_l, w_next = w_l.detach().double(), w_next.detach().double()
    if torch.linalg.norm(w_l) == 0 or torch.linalg.norm(w_next) == 0:
        return None, 0
    sr = min(singular_summary(w_l).stable_rank, singular_summary(w_next).stable_rank)
    k = max(1, min(round(sr), w_l.shape[0], min(w_l.shape), min(w_next.shape)))
    u_l = torch.linalg.svd(w_l, full_matrices=False)[0][:, :k]
    v_next = torch.linalg.svd(w_next, full_matrices=False)[2][:k].T
    cosines = torch.linalg.svdvals(u_l.T @ v_next).clamp(max=1.0)
    return float(cosines.mean()), k
