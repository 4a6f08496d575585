"""The Gauss-Newton block as a per-layer Riemannian metric (DESIGN definition 3; paper 000).

    G_ii = sum_n J_n^T H_n J_n,   J_n = d f(x_n) / d theta_i  (m x p),   H_n = d^2 L / d f(x_n)^2  (m x m)

with L the mean loss over the N probe points, so H_n carries the 1/N:
cross-entropy H_n = (diag(p_n) - p_n p_n^T) / N (p_n the softmax), mean-squared error over N x m
entries H_n = 2 I / (N m). G is positive semi-definite and equals the loss Hessian when the model
is linear in theta_i and the loss is quadratic (a linear model with MSE).

Gradient pressure of block i: g^T H_ii g / ||g||^2 (curvature of the loss along its gradient).
Natural-gradient norm: g^T (G_ii + lambda I)^{-1} g with lambda = NATGRAD_DAMPING * lambda_max(G_ii),
by a dense solve for small blocks and conjugate gradients on GGN-vector products for large ones;
None when g = 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch import nn
from torch.func import jacrev, linearize, vjp

from pipeline.curvature.objective import output_function

#: delta in lambda = delta * lambda_max(G): damping relative to the metric's own scale.
NATGRAD_DAMPING = 1e-3


def output_hessian_apply(outputs: torch.Tensor, w: torch.Tensor, task: str) -> torch.Tensor:
    """H_n w_n for every point: outputs (N, m); w (N, m, ...) with any trailing dimensions."""
    n, m = outputs.shape
    if task == "classification":
        p = torch.softmax(outputs, dim=1).reshape(n, m, *([1] * (w.dim() - 2)))
        return (p * w - p * (p * w).sum(1, keepdim=True)) / n
    return 2.0 * w / (n * m)


def ggn_exact(model: nn.Module, layer_index: int, X: torch.Tensor, task: str) -> torch.Tensor:
    """Dense G_ii (p x p, torch order) from the full Jacobian (N, m, p)."""
    f, theta = output_function(model, layer_index, X)
    jac = jacrev(f)(theta)  # (N, m, p)
    outputs = f(theta).detach()
    g = torch.einsum("nmp,nmr->pr", jac, output_hessian_apply(outputs, jac, task))
    return 0.5 * (g + g.T)


class GGNProduct:
    """v -> G v = J^T (H (J v)) (numpy float64 in and out); counts ``calls``.

    J v comes from ``torch.func.linearize`` (traced once, about 50 ms, then about half the cost of a
    fresh jvp per product), J^T w from one stored ``vjp``."""

    def __init__(self, model: nn.Module, layer_index: int, X: torch.Tensor, task: str):
        self.f, self.theta = output_function(model, layer_index, X)
        self.outputs, self._vjp = vjp(self.f, self.theta)
        self.outputs = self.outputs.detach()
        with warnings.catch_warnings():  # torch's constant folding warns about its own traced graph
            warnings.simplefilter("ignore", UserWarning)
            _, self._jvp = linearize(self.f, self.theta)
        self.task = task
        self.n = self.theta.numel()
        self.calls = 0

    def torch_matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        (gv,) = self._vjp(output_hessian_apply(self.outputs, self._jvp(v), self.task))
        return gv.detach()

    def __call__(self, v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=self.theta.dtype, device=self.theta.device)
        return self.torch_matvec(t).cpu().numpy()


def gradient_pressure(g: torch.Tensor, hg: torch.Tensor) -> float | None:
    """g^T H g / ||g||^2 given g and H g; None when g = 0."""
    gg = float(g @ g)
    return None if gg == 0 else float(g @ hg) / gg


def natural_gradient_norm_dense(g: torch.Tensor, ggn: torch.Tensor, top: float) -> float | None:
    """g^T (G + delta lambda_max I)^{-1} g by a Cholesky solve; None when g = 0 or G = 0."""
    if float(g @ g) == 0 or top <= 0:
        return None
    damped = ggn + NATGRAD_DAMPING * top * torch.eye(ggn.shape[0], dtype=ggn.dtype, device=ggn.device)
    return float(g @ torch.linalg.solve(damped, g))


def natural_gradient_norm_cg(g: np.ndarray, matvec: Callable[[np.ndarray], np.ndarray], top: float,
                             max_iter: int) -> tuple[float | None, bool]:
    """The same by conjugate gradients on (G + lambda I) x = g; (value, converged)."""
    if float(g @ g) == 0 or top <= 0:
        return None, True
    lam = NATGRAD_DAMPING * top
    op = sla.LinearOperator((g.size, g.size), matvec=lambda v: matvec(v) + lam * v, dtype=np.float64)
    # CG's estimate g^T x_k rises monotonically to the true value, so a capped run is a lower bound.
    x, info = sla.cg(op, g, rtol=1e-6, maxiter=max_iter)
    return float(g @ x), info == 0
