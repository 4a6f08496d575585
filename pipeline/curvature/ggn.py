"""The Gauss-Newton block as a per-layer Riemannian metric (DESIGN definition 3; paper 000).

    G_ii = sum_n J_n^T H_n J_n,   J_n = d f(x_n) / d theta_i  (m x p),   H_n = d^2 L / d f(x_n)^2  (m x m)

with L the mean loss over the N probe points, so H_n carries the 1/N: cross-entropy
H_n = (diag(p_n) - p_n p_n^T) / N (p_n the softmax), mean-squared error over N x m entries
H_n = 2 I / (N m). G is positive semi-definite and equals the loss Hessian when the model is linear in
theta_i and the loss is quadratic (a linear model with MSE).

For a Linear block J_n = B_n (I_q (x) z~_n^T) with B_n = d f(x_n) / d u_n (m x q), so with
H_n = L_n L_n^T (``output_hessian_factor``, m' = m - 1 columns for cross-entropy, m for MSE):

    G = S^T S,   S = the (N m') x p matrix with rows R_n[c] (x) z~_n,   R_n = L_n^T B_n  (m' x q)

(``GGNFactor``; R by m' vector-Jacobian products with respect to the pre-activations). The nonzero
eigenvalues of G are those of the Gram matrix S S^T = (R R^T) o (Z~ Z~^T (x) 1 1^T) of order N m',
whatever p is; its trace and bias share need R alone; products G v = S^T (S v) cost O(N m' q + N q d).

Gradient pressure of block i: g^T H_ii g / ||g||^2 (curvature of the loss along its gradient).
Natural-gradient norm: g^T (G_ii + lambda I)^{-1} g with lambda = NATGRAD_DAMPING * lambda_max(G_ii),
by a dense solve, the Woodbury identity on the Gram matrix, or conjugate gradients on products;
None when g = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch import nn
from torch.func import vjp

from pipeline.curvature.kronecker import (
    KroneckerSum,
    chunked_vmap,
    from_torch_order,
    network_work_bytes,
    preactivation_function,
    to_torch_order,
    with_inputs,
)

#: delta in lambda = delta * lambda_max(G): damping relative to the metric's own scale.
NATGRAD_DAMPING = 1e-3


def output_hessian_factor(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """L (N, m, m') with L_n L_n^T = H_n, the Hessian of the mean loss w.r.t. the outputs of point n.

    Cross-entropy: H_n = (diag p_n - p_n p_n^T) / N, rank m - 1 (its null vector is the all-ones
    vector), so m' = m - 1 columns from its eigendecomposition (the smallest eigenvalue, 0 up to
    round-off, dropped). Mean squared error over N m entries: H_n = 2 I / (N m), L_n = sqrt(2 / (N m)) I."""
    n, m = outputs.shape
    if task == "classification":
        p = torch.softmax(outputs, dim=1)
        h = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / n
        values, vectors = torch.linalg.eigh(h)
        return vectors[:, :, 1:] * values[:, None, 1:].clamp(min=0).sqrt()
    eye = torch.eye(m, dtype=outputs.dtype, device=outputs.device)
    return (2.0 / (n * m)) ** 0.5 * eye.expand(n, m, m)


@dataclass(frozen=True)
class GGNFactor:
    """G_ii = S^T S, S = rows R_n[c] (x) z~_n.  r: (N, m', q); zt: (N, d + 1)."""

    r: torch.Tensor
    zt: torch.Tensor

    @property
    def n_params(self) -> int:
        return self.r.shape[2] * self.zt.shape[1]

    @property
    def gram_size(self) -> int:
        return self.r.shape[0] * self.r.shape[1]

    def kronecker(self) -> KroneckerSum:
        return KroneckerSum(torch.einsum("nci,ncj->nij", self.r, self.r), self.zt)

    def gram(self) -> torch.Tensor:
        """S S^T (N m' x N m'), rows (n, c) in point-major order."""
        n, c, _ = self.r.shape
        flat = self.r.reshape(n * c, -1)
        inputs = (self.zt @ self.zt.T).repeat_interleave(c, 0).repeat_interleave(c, 1)
        k = (flat @ flat.T) * inputs
        return 0.5 * (k + k.T)

    def trace(self) -> float:
        """tr G = ||S||_F^2 = sum_n ||R_n||_F^2 ||z~_n||^2."""
        return float(((self.r**2).sum((1, 2)) * (self.zt**2).sum(1)).sum())

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """G v = S^T (S v): O(N m' q + N q d), nothing of size p x p or q x q per point."""
        w = self.apply(v).view(self.r.shape[0], self.r.shape[1])
        return to_torch_order(torch.einsum("nc,ncj->nj", w, self.r).T @ self.zt)

    def numpy_matvec(self, v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=self.r.dtype, device=self.r.device)
        return self.matvec(t).cpu().numpy()

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """S g (N m',) for g (p,) in torch order."""
        return torch.einsum("ncj,nj->nc", self.r, self.zt @ from_torch_order(g, self.r.shape[2]).T).reshape(-1)

    def floor_count(self) -> int:
        """Rounding count of the matrix decomposed exactly: its order plus the terms summed into an
        entry. G is formed from its Kronecker form, sum over N points of (R_n^T R_n) (x) z~_n z~_n^T,
        each factor entry an m'-term sum: N + m'. The Gram matrix (R R^T) o (Z~ Z~^T): q + (d + 1)."""
        p, size = self.n_params, self.gram_size
        n, m_prime, q = self.r.shape
        return p + n + m_prime if p <= size else size + q + self.zt.shape[1]

    def bias_share(self) -> float | None:
        """sum_k lambda_k ||P_bias u_k||^2 / sum_k lambda_k = tr(P G P) / tr G for a PSD G:
        ||R||_F^2 / sum_n ||R_n||_F^2 ||z~_n||^2 (the bias coordinate of z~ is 1)."""
        per_point = (self.r**2).sum((1, 2))
        total = float((per_point * (self.zt**2).sum(1)).sum())
        return None if total == 0 else float(per_point.sum()) / total


def ggn_factor(model: nn.Module, layer_index: int, X: torch.Tensor, task: str) -> GGNFactor:
    """R_n = L_n^T d f(x_n) / d u_n for every probe point: m' vector-Jacobian products w.r.t. U."""
    f, u0, z = preactivation_function(model, layer_index, X)
    outputs, pullback = vjp(f, u0)
    factor = output_hessian_factor(outputs.detach(), task)  # (N, m, m')
    rows = chunked_vmap(lambda w: pullback(w)[0], factor.permute(2, 0, 1).contiguous(),
                         network_work_bytes(model, X.shape[0]))  # (m', N, q)
    return GGNFactor(rows.permute(1, 0, 2).detach().contiguous(), with_inputs(z))


def gradient_pressure(g: torch.Tensor, hg: torch.Tensor) -> float | None:
    """g^T H g / ||g||^2 given g and H g; None when g = 0."""
    gg = float(g @ g)
    return None if gg == 0 else float(g @ hg) / gg


def natural_gradient_norm_dense(g: torch.Tensor, ggn: torch.Tensor, top: float) -> float | None:
    """g^T (G + delta lambda_max I)^{-1} g by a dense solve; None when g = 0 or G = 0."""
    if float(g @ g) == 0 or top <= 0:
        return None
    damped = ggn + NATGRAD_DAMPING * top * torch.eye(ggn.shape[0], dtype=ggn.dtype, device=ggn.device)
    return float(g @ torch.linalg.solve(damped, g))


def natural_gradient_norm_gram(g: torch.Tensor, factor: GGNFactor, gram: torch.Tensor, top: float) -> float | None:
    """The same by Woodbury: g^T (S^T S + mu I)^{-1} g = (||g||^2 - s^T (mu I + S S^T)^{-1} s) / mu,
    s = S g, mu = delta lambda_max: a solve of order N m' instead of p."""
    gg = float(g @ g)
    if gg == 0 or top <= 0:
        return None
    mu = NATGRAD_DAMPING * top
    s = factor.apply(g)
    chol = torch.linalg.cholesky(gram + mu * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))
    return (gg - float(s @ torch.cholesky_solve(s[:, None], chol)[:, 0])) / mu


def natural_gradient_norm_cg(g: np.ndarray, matvec: Callable[[np.ndarray], np.ndarray], top: float,
                             max_iter: int) -> tuple[float | None, bool]:
    """The same by conjugate gradients on (G + lambda I) x = g; (value, converged: CG met rtol 1e-6).

    In exact arithmetic g^T x_k rises to the true value, so a capped run is below it; in floating point
    that holds only to about the tolerance."""
    if float(g @ g) == 0 or top <= 0:
        return None, True
    lam = NATGRAD_DAMPING * top
    op = sla.LinearOperator((g.size, g.size), matvec=lambda v: matvec(v) + lam * v, dtype=np.float64)
    x, info = sla.cg(op, g, rtol=1e-6, maxiter=max_iter)
    return float(g @ x), info == 0


#: Relative residual each inner solve of :func:`natural_gradient_norm_refined` aims at: well above
#: what float32 products resolve at the damping's condition number (eps32 x 1e3 ~ 1e-4).
REFINE_INNER_RTOL = 1e-3
#: Outer corrections at most (each gains about three digits: two reach 1e-6).
REFINE_MAX_STEPS = 6


def natural_gradient_norm_refined(g: np.ndarray, matvec: Callable[[np.ndarray], np.ndarray],
                                  low_matvec: Callable[[np.ndarray], np.ndarray], top: float,
                                  max_iter: int) -> tuple[float | None, bool]:
    """The same as :func:`natural_gradient_norm_cg`, with most products in low precision: iterative
    refinement. With A = G + lambda I: x = 0, r = g; repeat d = CG on A~ d = r (``low_matvec``'s
    products, to REFINE_INNER_RTOL), x += d, r = g - A x by one ``matvec`` product, until
    ||r|| <= 1e-6 ||g||. The stopping test is on the true residual in float64 (plain CG's is the
    recurrence's), so ``converged`` means what it does there; max_iter caps all products together."""
    if float(g @ g) == 0 or top <= 0:
        return None, True
    lam = NATGRAD_DAMPING * top
    low = sla.LinearOperator((g.size, g.size), matvec=lambda v: low_matvec(v) + lam * v, dtype=np.float64)
    x, r = np.zeros_like(g), g.copy()
    target, spent = 1e-6 * float(np.linalg.norm(g)), 0
    for _ in range(REFINE_MAX_STEPS):
        inner = max(1, max_iter - spent - 1)
        count = [0]

        def counted(v: np.ndarray, count: list = count) -> np.ndarray:
            count[0] += 1
            return low.matvec(v)

        d, _ = sla.cg(sla.LinearOperator(low.shape, matvec=counted, dtype=np.float64), r,
                      rtol=REFINE_INNER_RTOL, maxiter=inner)
        x = x + d
        r = g - (matvec(x) + lam * x)
        spent += count[0] + 1
        if float(np.linalg.norm(r)) <= target:
            return float(g @ x), True
        if spent >= max_iter:
            break
    return float(g @ x), False
