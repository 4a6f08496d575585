"""Whole-model loss geometry at a snapshot: SAM sharpness and the top eigenvalue of the full loss
Hessian, both over every trainable parameter theta (P of them) on the run's probe batch.

- Sharpness as SAM defines it (Foret et al. 2021, eq. 1): S_rho(theta) = max_{||eps||_2 <= rho}
  L(theta + eps) - L(theta). The maximum is estimated from below by projected normalized ascent:
  eps_0 = rho g / ||g|| (SAM's own first-order step; its value is ``one_step``), then
  eps_{k+1} = rho (eps_k + rho g_k / ||g_k||) / ||eps_k + rho g_k / ||g_k|| ||, g_k = grad L(theta +
  eps_k); the estimate is the largest increase seen over eps = 0, eps_0 .. eps_K, so it is >= 0. On a
  quadratic this is power iteration towards the worst direction on the sphere.
- Top Hessian eigenvalue lambda_max(d^2 L / d theta^2): Lanczos (:func:`pipeline.curvature.lanczos.lanczos`,
  full reorthogonalization) on exact Hessian-vector products, stopped once the top Ritz value's
  residual is within RITZ_RTOL of the spectral scale (``converged``) or after the budget.

Both work on a float64 eval-mode copy of the model (dropout off, batch norm on running statistics).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.curvature.attention import second_order_attention
from pipeline.curvature.lanczos import lanczos
from pipeline.curvature.objective import ModelObjective, model_loss_objective
from pipeline.curvature.stochastic import GraphHVP

#: Radius of the sharpness ball (SAM's default rho).
SHARPNESS_RHO = 0.05
#: Projected ascent steps after SAM's first step.
ASCENT_STEPS = 10
#: Hessian-vector products allowed for the top eigenvalue.
TOP_EIGENVALUE_BUDGET = 80


@dataclass(frozen=True)
class SharpnessEstimate:
    sharpness: float  # best increase found, >= 0
    one_step: float  # L(theta + rho g/||g||) - L(theta)
    loss: float  # L(theta)
    n_gradients: int


def sam_sharpness(f, theta0: torch.Tensor, rho: float = SHARPNESS_RHO, steps: int = ASCENT_STEPS,
                  rng: np.random.Generator | None = None) -> SharpnessEstimate:
    """Estimate max_{||eps|| <= rho} f(theta0 + eps) - f(theta0) for f: (P,) -> scalar (see module doc).

    At a stationary point (g = 0) the ascent starts from a random direction drawn from ``rng``."""
    theta0 = theta0.detach()

    def value_and_grad(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        t = theta.detach().clone().requires_grad_(True)
        value = f(t)
        (g,) = torch.autograd.grad(value, t)
        return float(value.detach()), g

    loss, g = value_and_grad(theta0)
    n_grad = 1
    norm = float(torch.linalg.norm(g))
    if norm == 0:
        rng = rng or np.random.default_rng(0)
        g = torch.as_tensor(rng.standard_normal(theta0.numel()), dtype=theta0.dtype, device=theta0.device)
        norm = float(torch.linalg.norm(g))
    eps = rho * g / norm
    best = one_step = float(f(theta0 + eps).detach()) - loss
    for _ in range(steps):
        _, gk = value_and_grad(theta0 + eps)
        n_grad += 1
        gnorm = float(torch.linalg.norm(gk))
        if gnorm == 0:
            break
        eps = eps + rho * gk / gnorm
        eps = rho * eps / torch.linalg.norm(eps)
        value = float(f(theta0 + eps).detach()) - loss
        best = value if not math.isfinite(value) else max(best, value)
        if not math.isfinite(best):
            break
    # a non-finite value anywhere makes the estimate undefined (max() would hide a NaN)
    estimate = max(best, 0.0) if math.isfinite(best) and math.isfinite(one_step) else math.nan
    return SharpnessEstimate(estimate, one_step, loss, n_grad)


@second_order_attention()
def loss_sharpness_row(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, task: str,
                       rng: np.random.Generator, device: str = "cpu") -> dict:
    """The ``sharpness`` table's columns for one snapshot. X, y: the probe batch."""
    t = time.perf_counter()
    dev = torch.device(device)
    m64 = copy.deepcopy(model).double().eval().to(dev)
    X = X.to(device=dev, dtype=torch.float64 if X.is_floating_point() else X.dtype)  # token ids stay int64
    y = y.to(device=dev, dtype=torch.float64 if task == "regression" else torch.long)
    obj: ModelObjective = model_loss_objective(m64, X, y, loss_fn)
    est = sam_sharpness(obj.f, obj.theta0, SHARPNESS_RHO, ASCENT_STEPS, rng)
    top = lanczos(GraphHVP(obj), rng.standard_normal(obj.n_params), TOP_EIGENVALUE_BUDGET,
                  stop_when_top_converged=True)
    return {"n_params": obj.n_params, "n_probe": int(X.shape[0]), "rho": SHARPNESS_RHO, "loss": _finite(est.loss),
            "sharpness": _finite(est.sharpness), "sharpness_one_step": _finite(est.one_step),
            "ascent_steps": ASCENT_STEPS,
            "hessian_top_eigenvalue": _finite(float(top.ritz_values[-1])),
            "hessian_top_converged": bool(top.converged[-1]), "n_hvp": top.n_matvec,
            "seconds": time.perf_counter() - t}


def _finite(x: float | None) -> float | None:
    """NULL in the table for a value that is not finite (a loss that overflows inside the ball)."""
    return x if x is not None and math.isfinite(x) else None
