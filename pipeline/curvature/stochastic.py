"""Hessian-vector products and the simplest estimators built on them.

- ``GraphHVP``: H v for a block objective, reusing one forward/backward graph: g = grad f is built
  once with create_graph, and each product is one more backward pass through it, d(g . v)/d theta.
- ``hutchinson_trace``: tr H = E[v^T H v], Rademacher v; mean and standard error over m probes.
- ``power_iteration``: the top |eigenvalue| by repeated products (PyHessian's method), the baseline
  of benchmarks/curvature.py.

Lanczos (both ends of the spectrum, quadrature) is :mod:`pipeline.curvature.lanczos`, the summaries
estimated from it :mod:`pipeline.curvature.matrix_free`. Every random draw comes from a numpy
Generator the caller seeds from the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.curvature.objective import BlockObjective, ModelObjective

MatVec = Callable[[np.ndarray], np.ndarray]


class GraphHVP:
    """v -> H v for f at theta0 (float64 numpy in and out), counting products in ``calls``.

    ``obj`` is anything with ``f`` and a flat ``theta0``: a block's objective or the whole model's."""

    def __init__(self, obj: BlockObjective | ModelObjective):
        self.theta = obj.theta0.detach().clone().requires_grad_(True)
        (self.g,) = torch.autograd.grad(obj.f(self.theta), self.theta, create_graph=True)
        self.linear = not self.g.requires_grad  # constant gradient: H = 0
        self.n = self.theta.numel()
        self.calls = 0

    def gradient(self) -> torch.Tensor:
        return self.g.detach()

    def torch_matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.linear:
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(self.g, self.theta, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()

    def __call__(self, v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=self.theta.dtype, device=self.theta.device)
        return self.torch_matvec(t).cpu().numpy()


def rademacher(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=(n, m))


@dataclass(frozen=True)
class TraceEstimate:
    trace: float
    stderr: float | None
    n_matvec: int


def hutchinson_trace(matvec: MatVec, n: int, m: int, rng: np.random.Generator) -> TraceEstimate:
    """mean of v^T H v over m Rademacher probes, with the standard error of that mean."""
    v = rademacher(rng, n, m)
    samples = np.array([v[:, i] @ matvec(v[:, i]) for i in range(m)])
    stderr = float(samples.std(ddof=1) / np.sqrt(m)) if m > 1 else None
    return TraceEstimate(float(samples.mean()), stderr, m)


def power_iteration(matvec: MatVec, n: int, rng: np.random.Generator, rtol: float = 1e-4,
                    max_iter: int = 1000) -> tuple[float, int]:
    """Dominant eigenvalue (largest |lambda|, signed) by power iteration, stopping when the Rayleigh
    quotient changes by less than rtol relative (PyHessian's rule). Returns (value, products)."""
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    value, calls = None, 0
    for _ in range(max_iter):
        hv = matvec(v)
        calls += 1
        new = float(v @ hv)
        norm = np.linalg.norm(hv)
        if norm == 0:
            return 0.0, calls
        v = hv / norm
        if value is not None and abs(new - value) <= rtol * abs(value):
            return new, calls
        value = new
    return value, calls
