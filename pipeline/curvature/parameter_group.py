"""A block of any model as a parameter group theta_i, and the functions of theta_i the engine needs.

A block is a set of named parameters of ``model`` (``BlockGraph.params[i]``, read off the fx graph,
or a user's list of module paths). theta_i is their concatenation, each tensor flattened row-major,
in the order the names are given (for an ``nn.Linear`` block: vec W, then b, like
:mod:`pipeline.curvature.objective`). Every other parameter and every buffer stays as it is in the
model, which must be in eval mode so that each probe point's outputs are a function of that point
alone (dropout off, batch norm on running statistics).

- ``loss_objective``: L(theta_i) = loss_fn(f(X; theta_i), y) (DESIGN definition 2);
- ``local_objective``: S_i(theta_i) = (1/N) sum_n phi(B_i(z_n; theta_i)), the block's own output
  B_i on its recorded inputs z_n, aggregated over every output entry of the point (definition 1);
- ``jacobian_factor``: S with G_ii = S^T S, rows L_n[:, c]^T J_n, J_n = d f(x_n) / d theta_i
  (m x p) from per-sample Jacobians, H_n = L_n L_n^T the output Hessian of the loss
  (:func:`pipeline.curvature.ggn.output_hessian_factor`): (N m') x p, formed only while it fits
  JACOBIAN_MAX_BYTES;
- ``ggn_matvec``: v -> J^T H J v by one Jacobian-vector product and one vector-Jacobian product,
  for blocks whose S does not fit (nothing of size p x p or N m' x p is formed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from pipeline.curvature.ggn import output_hessian_factor
from pipeline.curvature.objective import ModelObjective, aggregate

#: The explicit factor S (N m' x p doubles) is formed up to this size; above it the GGN is matrix-free.
JACOBIAN_MAX_BYTES = 256 * 2**20
#: Memory for one chunk of per-sample Jacobians (points are taken this many bytes at a time).
JACOBIAN_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ParameterGroup:
    """names: full parameter paths in ``model.named_parameters()``; shapes: their shapes."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, model: nn.Module, names: Sequence[str]) -> ParameterGroup:
        params = dict(model.named_parameters())
        missing = [n for n in names if n not in params]
        if missing:
            raise KeyError(f"the model has no parameter {missing[0]!r}")
        return cls(tuple(names), tuple(params[n].shape for n in names))

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.shapes]

    @property
    def n_params(self) -> int:
        return sum(self.sizes)

    @property
    def bias_mask(self) -> np.ndarray:
        """(p,) bool: the coordinates of parameters named ``*bias``."""
        return np.concatenate([np.full(k, n.endswith("bias")) for n, k in zip(self.names, self.sizes, strict=True)])

    def theta(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, theta: torch.Tensor, strip: str = "") -> dict[str, torch.Tensor]:
        """name -> tensor view of theta; ``strip``: a module prefix removed from the names."""
        cut = len(strip) + 1 if strip else 0
        return {n[cut:]: t.view(s) for n, t, s in zip(self.names, torch.split(theta, self.sizes), self.shapes,
                                                      strict=True)}


def output_function(model: nn.Module, group: ParameterGroup,
                    X: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """theta_i -> the model's outputs (N, m) on X, every other parameter fixed; and theta_i now."""
    return (lambda theta: functional_call(model, group.unflatten(theta), (X,))), group.theta(model)


def loss_objective(model: nn.Module, group: ParameterGroup, X: torch.Tensor, y: torch.Tensor,
                   loss_fn: nn.Module) -> ModelObjective:
    """L(theta_i) on the probe batch (X, y)."""
    outputs, theta0 = output_function(model, group, X)
    return ModelObjective(lambda theta: loss_fn(outputs(theta), y), theta0, group.names, group.shapes)


@dataclass(frozen=True)
class BlockInputs:
    """What the block's module received in one forward pass of the model: args and kwargs."""

    args: tuple
    kwargs: dict


def record_block_inputs(model: nn.Module, block: str, X: torch.Tensor) -> BlockInputs:
    """The inputs of submodule ``block`` in a forward pass of ``model`` on X (detached)."""
    seen: list[BlockInputs] = []

    def detach(a):  # a copy: an in-place operation later in the forward pass must not change it
        return a.detach().clone() if isinstance(a, torch.Tensor) else a

    def hook(_module, args, kwargs):
        seen.append(BlockInputs(tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()}))

    handle = model.get_submodule(block).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(X)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise ValueError(f"block {block!r} runs {len(seen)} times in one forward pass; a block must run once")
    return seen[0]


def first_tensor(out) -> torch.Tensor:
    """A module's output as one tensor: itself, or the first tensor of a tuple or list (what
    ``nn.MultiheadAttention`` and ``nn.LSTM`` return first); a ValueError for anything else."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"a block returned a {type(out).__name__}, not a tensor or a tuple starting with one")


def block_prefix(group: ParameterGroup, block: str) -> str:
    """The module path its parameters are relative to (``block``, checked against the names)."""
    if not all(n.startswith(block + ".") for n in group.names):
        raise ValueError(f"block {block!r}: its parameters {group.names} are not all inside it")
    return block


def own_parameters_objective(group: ParameterGroup, theta0: torch.Tensor, phi: str = "sum") -> ModelObjective:
    """S_i(theta_i) = phi(theta_i) for a block of a module's own parameters (a CLS token, a positional
    embedding): it has no inputs, and its output is its own values, so definition 1 reads it as the
    identity; with phi = sum or mean its local Hessian is exactly zero, with half_sq_norm the identity."""
    return ModelObjective(lambda theta: aggregate(theta.reshape(1, -1), phi).mean(), theta0, group.names,
                          group.shapes)


def local_objective(model: nn.Module, block: str, group: ParameterGroup, inputs: BlockInputs,
                    phi: str = "sum") -> ModelObjective:
    """S_i(theta_i) = (1/N) sum_n phi(vec B_i(z_n; theta_i)), z_n the recorded inputs (N first); a
    block returning a tuple is read at its first tensor (:func:`first_tensor`)."""
    module = model.get_submodule(block)
    prefix = block_prefix(group, block)

    def f(theta: torch.Tensor) -> torch.Tensor:
        out = first_tensor(functional_call(module, group.unflatten(theta, prefix), inputs.args, inputs.kwargs))
        return aggregate(out.reshape(out.shape[0], -1), phi).mean()

    return ModelObjective(f, group.theta(model), group.names, group.shapes)


def per_sample_jacobian(model: nn.Module, group: ParameterGroup, X: torch.Tensor) -> torch.Tensor:
    """J (N, m, p): J[n] = d f(x_n) / d theta_i, a point at a time under vmap (chunks of points)."""
    theta0 = group.theta(model)

    def single(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, group.unflatten(theta), (x.unsqueeze(0),))[0]

    with torch.no_grad():
        m = model(X[:1]).shape[1]
    per_point = max(1, m * group.n_params * 8 * 4)  # the Jacobian and its intermediates, roughly
    chunk = max(1, JACOBIAN_CHUNK_BYTES // per_point)
    batched = vmap(jacrev(single), in_dims=(None, 0))
    return torch.cat([batched(theta0, X[i:i + chunk]) for i in range(0, X.shape[0], chunk)])


def jacobian_factor_fits(n: int, m: int, p: int) -> bool:
    """Whether S (N m' x p, m' <= m) and the Jacobian behind it fit JACOBIAN_MAX_BYTES."""
    return 8 * n * m * p <= JACOBIAN_MAX_BYTES


@dataclass(frozen=True)
class JacobianFactor:
    """G_ii = S^T S with S (N m', p) explicit; ``bias_mask`` marks theta_i's bias coordinates."""

    s: torch.Tensor
    bias_mask: np.ndarray

    @property
    def n_params(self) -> int:
        return self.s.shape[1]

    @property
    def gram_size(self) -> int:
        return self.s.shape[0]

    def dense(self) -> torch.Tensor:
        return self.s.T @ self.s

    def gram(self) -> torch.Tensor:
        k = self.s @ self.s.T
        return 0.5 * (k + k.T)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """S g (N m',)."""
        return self.s @ g

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.s.T @ (self.s @ v)

    def trace(self) -> float:
        return float((self.s**2).sum())

    def floor_count(self) -> int:
        """Rounding count of the matrix decomposed exactly: its order plus the terms summed into an
        entry (one dot product each), N m' for S^T S, p for S S^T."""
        return self.n_params + self.gram_size

    def bias_share(self) -> float | None:
        """tr(P G P) / tr G = ||S P||_F^2 / ||S||_F^2, P the projection on the bias coordinates."""
        total = self.trace()
        mask = torch.as_tensor(self.bias_mask, device=self.s.device)
        return None if total == 0 else float((self.s[:, mask] ** 2).sum()) / total


def jacobian_factor(model: nn.Module, group: ParameterGroup, X: torch.Tensor, task: str) -> JacobianFactor:
    """S with rows (n, c) = L_n[:, c]^T J_n, point-major."""
    with torch.no_grad():
        outputs = model(X)
    factor = output_hessian_factor(outputs, task)  # (N, m, m')
    jac = per_sample_jacobian(model, group, X)  # (N, m, p)
    s = torch.einsum("nmc,nmp->ncp", factor, jac).reshape(-1, group.n_params)
    return JacobianFactor(s.contiguous(), group.bias_mask)


class GGNProducts:
    """v -> G_ii v = J^T H J v (float64 numpy in and out), counting products in ``calls``."""

    def __init__(self, model: nn.Module, group: ParameterGroup, X: torch.Tensor, task: str):
        self.f, self.theta0 = output_function(model, group, X)
        outputs, self._pullback = vjp(self.f, self.theta0)
        self._factor = output_hessian_factor(outputs.detach(), task)  # (N, m, m')
        self.n = self.theta0.numel()
        self.calls = 0

    def torch_matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        _, jv = jvp(self.f, (self.theta0,), (v,))
        w = torch.einsum("nmc,nc->nm", self._factor, torch.einsum("nmc,nm->nc", self._factor, jv))
        return self._pullback(w)[0]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=self.theta0.dtype, device=self.theta0.device)
        return self.torch_matvec(t).cpu().numpy()
