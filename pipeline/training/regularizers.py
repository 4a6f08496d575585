"""Curvature-aware training steps: the run's ``regularizer`` decides which gradient the optimizer sees.

For a mini-batch loss L(theta) with gradient g = grad L(theta):

- ``none``: g.
- ``grad_norm``: the gradient of L + lambda ||g||^2 (double backpropagation); lambda = ``penalty``.
- ``hessian_trace``: the gradient of L + lambda v^T H v, v Rademacher (one probe per step, drawn from
  the run's seeded generator): an unbiased Hutchinson estimate of lambda tr H, differentiated
  through the Hessian-vector product; lambda = ``penalty``.
- ``sam`` (Foret et al. 2021): the gradient at theta + eps, eps = rho g / ||g||.
- ``fisher_sam`` (Kim et al. 2022, "Fisher SAM: information geometry and sharpness aware
  minimisation"): the ascent step in the metric F = diag(1 + eta g * g), g the mini-batch mean gradient
  squared coordinate-wise (a cheap stand-in for the diagonal Fisher: the per-example empirical Fisher
  mean_n g_n * g_n is larger, and does not vanish at a minimum): eps = rho F^{-1} g / sqrt(g^T F^{-1} g).
  With eta = 0 (F = I) it is SAM exactly; with eta = 1 and small gradients F is close to I.

SAM's perturbed pass leaves batch-norm running statistics alone (momentum 0 during it), so the
statistics see each batch once, as in plain training. The reported loss is always L(theta), the
unregularized batch loss, so runs are compared on the same quantity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pipeline.runspec import REGULARIZERS, applying

#: The run fields each regularizer uses, as their declarations in pipeline/runspec.py say (the others are
#: reset to their defaults by the config loader).
USES = {r: applying("regularizer", r) for r in REGULARIZERS}

Closure = Callable[[], torch.Tensor]


def _global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors))


def metric_sam_perturbation(grads: Sequence[torch.Tensor], rho: float,
                            metric: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """eps = rho M^{-1} g / sqrt(g^T M^{-1} g) for a diagonal metric M (one tensor per parameter,
    shaped like it): the steepest ascent step of length rho in the norm of M. Zero when g = 0."""
    scaled = [g / m for g, m in zip(grads, metric, strict=True)]
    denom = torch.sqrt(sum((g * s).sum() for g, s in zip(grads, scaled, strict=True)))
    if float(denom) == 0:
        return [torch.zeros_like(g) for g in grads]
    return [rho * s / denom for s in scaled]


def sam_perturbation(grads: Sequence[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """eps = rho g / ||g|| (the Euclidean metric); zero when g = 0."""
    norm = _global_norm(grads)
    if float(norm) == 0:
        return [torch.zeros_like(g) for g in grads]
    return [rho * g / norm for g in grads]


def fisher_metric(grads: Sequence[torch.Tensor], eta: float) -> list[torch.Tensor]:
    """Fisher SAM's diagonal metric 1 + eta g * g, per parameter tensor."""
    return [1.0 + eta * g * g for g in grads]


class _FrozenBatchNormStats:
    """Within the block, batch-norm layers do not update their running statistics."""

    def __init__(self, model: nn.Module | None):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if model else []
        self.saved: list = []

    def __enter__(self):
        self.saved = [m.momentum for m in self.layers]
        for m in self.layers:
            m.momentum = 0.0
        return self

    def __exit__(self, *exc):
        for m, momentum in zip(self.layers, self.saved, strict=True):
            m.momentum = momentum


def regularized_gradients(params: Sequence[torch.Tensor], closure: Closure, regularizer: str, *,
                          penalty: float = 0.0, rho: float = 0.05, fisher_eta: float = 1.0,
                          generator: torch.Generator | None = None,
                          model: nn.Module | None = None) -> tuple[float, list[torch.Tensor]]:
    """(L(theta), the gradient the optimizer should follow) for the batch loss ``closure()``.

    ``params``: the trainable tensors (leaves with requires_grad); ``model``: the module they belong
    to, only to keep its batch-norm statistics out of SAM's perturbed pass.
    """
    params = list(params)
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r} (choose from {', '.join(REGULARIZERS)})")
    loss = closure()
    if not torch.isfinite(loss):
        raise FloatingPointError("training loss is not finite")
    if regularizer == "none":
        return float(loss.detach()), list(torch.autograd.grad(loss, params))
    if regularizer == "grad_norm":
        grads = torch.autograd.grad(loss, params, create_graph=True)
        objective = loss + penalty * sum((g ** 2).sum() for g in grads)
        return float(loss.detach()), list(torch.autograd.grad(objective, params))
    if regularizer == "hessian_trace":
        grads = torch.autograd.grad(loss, params, create_graph=True)
        probes = [torch.randint(0, 2, p.shape, generator=generator).to(p) * 2 - 1 for p in params]
        hv = torch.autograd.grad(grads, params, grad_outputs=probes, create_graph=True, allow_unused=True)
        quad = sum((h * v).sum() for h, v in zip(hv, probes, strict=True) if h is not None)
        objective = loss + penalty * quad if torch.is_tensor(quad) and quad.requires_grad else loss
        grads = torch.autograd.grad(objective, params, allow_unused=True, materialize_grads=True)
        return float(loss.detach()), list(grads)
    if regularizer in ("sam", "fisher_sam"):
        grads = torch.autograd.grad(loss, params)
        if not all(torch.isfinite(g).all() for g in grads):
            raise FloatingPointError("training gradient is not finite")
        if regularizer == "sam":
            eps = sam_perturbation(grads, rho)
        else:
            eps = metric_sam_perturbation(grads, rho, fisher_metric(grads, fisher_eta))
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        try:
            with _FrozenBatchNormStats(model):
                perturbed = torch.autograd.grad(closure(), params)
        finally:
            with torch.no_grad():
                for p, e in zip(params, eps, strict=True):
                    p.sub_(e)
        return float(loss.detach()), list(perturbed)
    raise AssertionError(regularizer)


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, closure: Closure, regularizer: str, *,
                  penalty: float = 0.0, rho: float = 0.05, fisher_eta: float = 1.0,
                  generator: torch.Generator | None = None) -> float:
    """One optimizer step on the regularized gradient; returns the batch loss L(theta) before it.

    Raises FloatingPointError, with the parameters untouched, when the loss or a gradient is not finite."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss, grads = regularized_gradients(params, closure, regularizer, penalty=penalty, rho=rho,
                                        fisher_eta=fisher_eta, generator=generator, model=model)
    if not (torch.isfinite(torch.tensor(loss)) and all(torch.isfinite(g).all() for g in grads)):
        raise FloatingPointError("training loss or gradient is not finite")
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    optimizer.step()
    return loss
