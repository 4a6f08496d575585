"""Scalar objectives of one block's parameters theta_i = (vec W_i, b_i), in torch order.

Torch order puts W row-major first (W[j, k] at j * d + k) and then b (b_j at q * d + j); the
paper's neuron order (w_1, b_1, ..., w_q, b_q) is a permutation of it (``neuron_order``), and
eigenvalues do not depend on which is used.

- ``local_objective``: S_i(theta_i) = (1/N) sum_n phi(A(norm(W z_n + b))), z_n fixed (definition 1);
- ``loss_objective``: L(theta_i) = mean training loss of the whole model on (X, y) with every other
  parameter fixed (definition 2).

Both need the module in eval mode (dropout off, batch norm on running statistics); the caller
passes float64 modules for exact work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

PHIS = ("sum", "mean", "half_sq_norm")


@dataclass(frozen=True)
class BlockObjective:
    """f: (p,) -> scalar, evaluated around theta0; bias coordinates are the last q entries."""

    f: Callable[[torch.Tensor], torch.Tensor]
    theta0: torch.Tensor
    q: int
    d: int

    @property
    def n_params(self) -> int:
        return self.q * (self.d + 1)

    @property
    def bias_mask(self) -> np.ndarray:
        return bias_mask(self.q, self.d)


def bias_mask(q: int, d: int) -> np.ndarray:
    """(q (d + 1),) bool: the bias coordinates of theta in torch order (the last q entries)."""
    mask = np.zeros(q * (d + 1), dtype=bool)
    mask[q * d:] = True
    return mask


def neuron_order(q: int, d: int) -> np.ndarray:
    """perm with H_neuron = H_torch[perm][:, perm]: neuron j's (w_j, b_j) in torch indices."""
    perm = np.empty(q * (d + 1), dtype=np.int64)
    for j in range(q):
        perm[j * (d + 1): j * (d + 1) + d] = np.arange(j * d, (j + 1) * d)
        perm[j * (d + 1) + d] = q * d + j
    return perm


def aggregate(y: torch.Tensor, phi: str) -> torch.Tensor:
    """phi over the q outputs of each point: (N, q) -> (N,)."""
    if phi == "sum":
        return y.sum(-1)
    if phi == "mean":
        return y.mean(-1)
    if phi == "half_sq_norm":
        return 0.5 * (y * y).sum(-1)
    raise ValueError(f"unknown phi {phi!r} (choose from {', '.join(PHIS)})")


def _flat(linear: nn.Linear) -> torch.Tensor:
    return torch.cat([linear.weight.detach().reshape(-1), linear.bias.detach()])


def local_objective(block: nn.Module, z: torch.Tensor, phi: str = "sum") -> BlockObjective:
    """S(theta) for a Block (``.linear``, ``.norm``, ``.activation``) with input z: (N, d)."""
    q, d = block.linear.weight.shape
    fixed = {k: v.detach() for k, v in block.named_parameters() if not k.startswith("linear.")}
    buffers = dict(block.named_buffers())
    z = z.detach()

    def f(theta: torch.Tensor) -> torch.Tensor:
        params = {**fixed, "linear.weight": theta[: q * d].view(q, d), "linear.bias": theta[q * d:]}
        u = functional_call(block, (params, buffers), (z,))
        return aggregate(u, phi).mean()

    return BlockObjective(f, _flat(block.linear), q, d)


def output_function(model: nn.Module, layer_index: int,
                    X: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """theta_i -> model outputs (N, m) with every other parameter fixed; and theta_i's current value."""
    linear = model.blocks[layer_index].linear
    q, d = linear.weight.shape
    prefix = f"blocks.{layer_index}.linear."
    fixed = {k: v.detach() for k, v in model.named_parameters() if not k.startswith(prefix)}
    buffers = dict(model.named_buffers())

    def f(theta: torch.Tensor) -> torch.Tensor:
        params = {**fixed, prefix + "weight": theta[: q * d].view(q, d), prefix + "bias": theta[q * d:]}
        return functional_call(model, (params, buffers), (X,))

    return f, _flat(linear)


def loss_objective(model: nn.Module, layer_index: int, X: torch.Tensor, y: torch.Tensor,
                   loss_fn: nn.Module) -> BlockObjective:
    """L(theta_i) for block ``layer_index`` of an MLP (``model.blocks[i].linear``)."""
    outputs, theta0 = output_function(model, layer_index, X)
    q, d = model.blocks[layer_index].linear.weight.shape
    return BlockObjective(lambda theta: loss_fn(outputs(theta), y), theta0, q, d)


@dataclass(frozen=True)
class ModelObjective:
    """f: (P,) -> scalar over every trainable parameter of a model, flattened in ``named_parameters``
    order, around theta0; ``names`` and ``shapes`` say how theta splits back into tensors."""

    f: Callable[[torch.Tensor], torch.Tensor]
    theta0: torch.Tensor
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def n_params(self) -> int:
        return int(self.theta0.numel())


def model_loss_objective(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> ModelObjective:
    """L(theta) = loss_fn(model(X; theta), y) over all of the model's trainable parameters at once."""
    named = [(k, v) for k, v in model.named_parameters() if v.requires_grad]
    names = tuple(k for k, _ in named)
    shapes = tuple(v.shape for _, v in named)
    sizes = [v.numel() for _, v in named]
    buffers = dict(model.named_buffers())

    def f(theta: torch.Tensor) -> torch.Tensor:
        params = {k: t.view(s) for k, t, s in zip(names, torch.split(theta, sizes), shapes, strict=True)}
        return loss_fn(functional_call(model, (params, buffers), (X,)), y)

    theta0 = torch.cat([v.detach().reshape(-1) for _, v in named])
    return ModelObjective(f, theta0, names, shapes)
