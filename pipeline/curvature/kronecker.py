"""Curvature of a Linear block as a sum of Kronecker products over the probe points.

Block i maps its fixed inputs z_n (N, d) to u_n = W z_n + b (q outputs). Any objective that reaches
theta_i = (vec W, b) only through the u_n, and separately per point, F(theta) = sum_n f_n(u_n), has

    d^2 F / d theta_i^2 = sum_n M_n (x) z~_n z~_n^T,   M_n = d^2 f_n / d u_n^2  (q x q),  z~_n = [z_n; 1]

in neuron order (index j (d + 1) + k: output j, input k, k = d the bias), because u_n is linear in
theta with d u_n / d theta = I_q (x) z~_n^T. This holds for the three kinds of the engine:

- ``loss``: f_n = the point's share of the mean loss; M_n = d^2 L / d u_n^2 (the rest of the network,
  residual and gated edges included, enters through M_n);
- ``ggn``: M_n = R_n^T R_n with R_n = L_n^T d f(x_n) / d u_n (m' x q), H_n = L_n L_n^T the output
  Hessian of the loss (the factor and the Gram form are in :mod:`pipeline.curvature.ggn`);
- ``local`` (DESIGN definition 1; 001, definitions 5-6): f_n = phi(A(norm(u_n))) / N, layer norm included.

It needs the model in eval mode, where point n's outputs depend on u_n alone (batch norm on running statistics, no batch
coupling); the tests check every kind against autograd on the whole block.

So a block's curvature costs q Hessian-vector products with respect to U = (u_1 .. u_N) (one
product, with the basis vector e_j at every point, gives column j of every M_n at once) instead of
p = q (d + 1) products through the network, and nothing of size p x p is needed for products
(:meth:`KroneckerSum.matvec`), the trace or the Frobenius norm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import vjp, vmap

from pipeline.curvature.objective import aggregate, bias_mask, neuron_order

#: Memory allowed for one chunk of intermediate products (basis vectors through the network, the
#: outer products z~ z~^T of a dense block).
CHUNK_BYTES = 128 * 2**20


@dataclass(frozen=True)
class KroneckerSum:
    """H = sum_n M_n (x) z~_n z~_n^T.  m: (N, q, q) symmetric; zt: (N, d + 1), last column ones.

    Vectors are in torch order (vec W row-major, then b), like :mod:`pipeline.curvature.objective`."""

    m: torch.Tensor
    zt: torch.Tensor

    @property
    def q(self) -> int:
        return self.m.shape[1]

    @property
    def d(self) -> int:
        return self.zt.shape[1] - 1

    @property
    def n_params(self) -> int:
        return self.q * (self.d + 1)

    @property
    def bias_mask(self) -> np.ndarray:
        return bias_mask(self.q, self.d)

    def trace(self) -> float:
        """tr H = sum_n tr(M_n) ||z~_n||^2."""
        return float((torch.diagonal(self.m, dim1=1, dim2=2).sum(1) * (self.zt**2).sum(1)).sum())

    def frobenius_sq(self) -> float:
        """||H||_F^2 = sum_{n, n'} <M_n, M_n'>_F (z~_n . z~_n')^2, in chunks of points."""
        flat = self.m.reshape(self.m.shape[0], -1)
        gram = self.zt @ self.zt.T
        chunk = max(1, CHUNK_BYTES // (8 * flat.shape[0]))
        return float(sum(((flat[i:i + chunk] @ flat.T) * gram[i:i + chunk] ** 2).sum()
                         for i in range(0, flat.shape[0], chunk)))

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for v (p,) in torch order: Y = Z~ V~^T, W_n = M_n y_n, H v = W^T Z~ (V~ = [V, v_b])."""
        y = self.zt @ from_torch_order(v, self.q).T
        w = torch.bmm(self.m, y.unsqueeze(2)).squeeze(2)
        return to_torch_order(w.T @ self.zt)

    def numpy_matvec(self, v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=self.m.dtype, device=self.m.device)
        return self.matvec(t).cpu().numpy()

    def dense(self) -> torch.Tensor:
        """The p x p matrix in torch order (callers keep p under the exact limit)."""
        n, q, k = self.m.shape[0], self.q, self.d + 1
        flat = self.m.reshape(n, q * q)
        chunk = max(1, CHUNK_BYTES // (8 * k * k))
        acc = torch.zeros(q * q, k * k, dtype=self.m.dtype, device=self.m.device)
        for i in range(0, n, chunk):
            z = self.zt[i:i + chunk]
            acc += flat[i:i + chunk].T @ (z[:, :, None] * z[:, None, :]).reshape(z.shape[0], k * k)
        h = acc.view(q, q, k, k).permute(0, 2, 1, 3).reshape(q * k, q * k)  # neuron order
        perm = torch.as_tensor(np.argsort(neuron_order(q, self.d)), device=h.device)
        h = h[perm][:, perm]
        return 0.5 * (h + h.T)


def to_torch_order(rows: torch.Tensor) -> torch.Tensor:
    """(q, d + 1) with the bias last -> theta in torch order (vec W row-major, then b)."""
    return torch.cat([rows[:, :-1].reshape(-1), rows[:, -1]])


def from_torch_order(theta: torch.Tensor, q: int) -> torch.Tensor:
    """theta (q (d + 1),) in torch order -> (q, d + 1) with the bias last."""
    d = theta.numel() // q - 1
    return torch.cat([theta[: q * d].view(q, d), theta[q * d:].view(q, 1)], dim=1)


def with_inputs(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1)


Function = Callable[[torch.Tensor], torch.Tensor]


def preactivation_function(model: nn.Module, layer_index: int,
                           X: torch.Tensor) -> tuple[Function, torch.Tensor, torch.Tensor]:
    """(U -> model outputs (N, m) with block ``layer_index``'s Linear output replaced by U, the
    current U (N, q), the block's input z (N, d)). model: an MLP in eval mode."""
    linear = model.blocks[layer_index].linear
    seen = {}

    def record(module, inputs, output):
        seen["z"], seen["u"] = inputs[0].detach(), output.detach()

    handle = linear.register_forward_hook(record)
    try:
        with torch.no_grad():
            model(X)
    finally:
        handle.remove()

    def f(u: torch.Tensor) -> torch.Tensor:
        hook = linear.register_forward_hook(lambda module, inputs, output: u)
        try:
            return model(X)
        finally:
            hook.remove()

    return f, seen["u"], seen["z"]


def chunked_vmap(fn: Callable[[torch.Tensor], torch.Tensor], basis: torch.Tensor, per_item_bytes: int) -> torch.Tensor:
    chunk = max(1, CHUNK_BYTES // max(1, per_item_bytes))
    batched = vmap(fn)
    return torch.cat([batched(basis[i:i + chunk]) for i in range(0, basis.shape[0], chunk)])


def pointwise_hessian(scalar: Callable[[torch.Tensor], torch.Tensor], u0: torch.Tensor,
                      work_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M (N, q, q), dF/dU (N, q)): M_n = d^2 F / d u_n^2 for F(U) separable over points
    (F = sum_n f_n(u_n)), and the gradient.

    Column j of every M_n at once: the Hessian-vector product with E_j = e_j at every point
    (reverse over reverse, batched over j). work_bytes: memory of one product, for chunking."""
    grad_u, pullback = vjp(torch.func.grad(scalar), u0)
    n, q = u0.shape
    basis = torch.eye(q, dtype=u0.dtype, device=u0.device)[:, None, :].expand(q, n, q)
    cols = chunked_vmap(lambda e: pullback(e)[0], basis, work_bytes)  # (q, N, q): [j, n, :] = M_n[:, j]
    m = cols.permute(1, 2, 0).detach()
    return 0.5 * (m + m.transpose(1, 2)), grad_u.detach()


def network_work_bytes(model: nn.Module, n: int) -> int:
    """Memory of one product through an MLP (a few activations of every width per point)."""
    return 8 * n * sum(getattr(model, "dims", (1,))) * 4


def loss_kronecker(model: nn.Module, layer_index: int, X: torch.Tensor, y: torch.Tensor,
                   loss_fn: nn.Module) -> tuple[KroneckerSum, torch.Tensor]:
    """The loss block H_ii = d^2 L / d theta_i^2 (mean loss over the probe batch) in Kronecker form,
    and the block's gradient g = dL/d theta_i (torch order): g~ = (dL/dU)^T Z~."""
    f, u0, z = preactivation_function(model, layer_index, X)
    m, grad_u = pointwise_hessian(lambda u: loss_fn(f(u), y), u0, network_work_bytes(model, X.shape[0]))
    zt = with_inputs(z)
    return KroneckerSum(m, zt), to_torch_order(grad_u.T @ zt)


def local_kronecker(block: nn.Module, z: torch.Tensor, phi: str = "sum") -> KroneckerSum:
    """The local Hessian (definition 1) of a Block (Linear, norm, activation) in Kronecker form: the
    route for blocks without the elementwise closed form (layer norm)."""
    lin = block.linear
    z = z.detach()
    u0 = (z @ lin.weight.detach().T + lin.bias.detach())

    def scalar(u: torch.Tensor) -> torch.Tensor:
        return aggregate(block.activation(block.norm(u)), phi).mean()

    m, _ = pointwise_hessian(scalar, u0, 8 * u0.numel() * 6)
    return KroneckerSum(m, with_inputs(z))
