"""Exact Hessians of a block objective, three interchangeable ways (all return (p, p) in torch order).

- ``rows``: the paper's Algorithm 1 (001, section 3.3): g = grad f with create_graph, then row j =
  grad g_j, one autograd pass per row; rows of a g_j that does not depend on theta are zero.
- ``vmap``: Hessian-vector products H e_j, reverse-over-reverse (the pullback of grad f), batched
  with torch.func.vmap over chunks of the identity.
- ``func_hessian``: torch.func.hessian (jacfwd of jacrev) in one call.

These allocate the dense p x p matrix and take p products through the model. They are the
references (tests, benchmarks, :func:`pipeline.curvature.local_hessian.local_hessian_dense`); the
engine forms its exact blocks from their Kronecker form instead (:mod:`pipeline.curvature.kronecker`,
q products), 3-8x faster up to the exact limit (benchmarks/curvature.py).
"""

from __future__ import annotations

import torch
from torch.func import grad, vjp, vmap

from pipeline.curvature.objective import BlockObjective

METHODS = ("vmap", "rows", "func_hessian")
#: ``auto`` takes vmap up to this many parameters and the row loop above: the crossover (between 1,056
#: and 2,352 parameters, where vmap won 1.2x and lost 0.7x on one thread, as of schema 5).
AUTO_VMAP_MAX_PARAMS = 1500


def hessian_rows(obj: BlockObjective) -> torch.Tensor:
    theta = obj.theta0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(obj.f(theta), theta, create_graph=True)
    h = torch.zeros(obj.n_params, obj.n_params, dtype=theta.dtype, device=theta.device)
    if not g.requires_grad:  # the gradient is constant: f is linear in theta
        return h
    for j in range(obj.n_params):
        (row,) = torch.autograd.grad(g[j], theta, retain_graph=True, allow_unused=True)
        if row is not None:
            h[j] = row
    return h


def hessian_vmap(obj: BlockObjective, chunk: int = 512) -> torch.Tensor:
    # Reverse-over-reverse: one forward and backward builds grad f, and vmap batches the second
    # backward over chunks of the identity. (Forward-over-reverse jvp(grad f) is as fast here but
    # trips torch's immutable ZeroTensor when grad f is affine in theta, e.g. a linear model with MSE.)
    _, pullback = vjp(grad(obj.f), obj.theta0)
    batched = vmap(lambda v: pullback(v)[0])
    eye = torch.eye(obj.n_params, dtype=obj.theta0.dtype, device=obj.theta0.device)
    return torch.cat([batched(eye[i:i + chunk]) for i in range(0, obj.n_params, chunk)])


def hessian_func(obj: BlockObjective) -> torch.Tensor:
    return torch.func.hessian(obj.f)(obj.theta0)


def auto_method(n_params: int) -> str:
    """The faster exact method at this size (see AUTO_VMAP_MAX_PARAMS)."""
    return "vmap" if n_params <= AUTO_VMAP_MAX_PARAMS else "rows"


def dense_hessian(obj: BlockObjective, method: str = "auto") -> torch.Tensor:
    """The exact Hessian, symmetrized ((H + H^T) / 2 removes round-off asymmetry only).

    method: ``auto`` (vmap up to AUTO_VMAP_MAX_PARAMS, rows above), ``vmap``, ``rows``, ``func_hessian``."""
    if method == "auto":
        method = auto_method(obj.n_params)
    if method == "vmap":
        h = hessian_vmap(obj)
    elif method == "rows":
        h = hessian_rows(obj)
    elif method == "func_hessian":
        h = hessian_func(obj)
    else:
        raise ValueError(f"unknown exact method {method!r} (choose from {', '.join(METHODS)})")
    return 0.5 * (h + h.T)


def finite_eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh of a (batch of) symmetric matrix, refusing non-finite input: a Hessian that
    overflowed means the run diverged (FloatingPointError), not that LAPACK should fail obscurely."""
    if not torch.isfinite(matrices).all():
        raise FloatingPointError("curvature matrix is not finite")
    return torch.linalg.eigh(matrices)
