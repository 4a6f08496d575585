"""The any-model strategy of the curvature driver: one block of any model, three spectra and two scalars.

:class:`GenericBlock` is how :func:`pipeline.curvature.engine.measure_blocks` measures a block that is
not an MLP's Linear block (whose Kronecker form :class:`pipeline.curvature.engine.KroneckerBlock`
reads): it needs nothing but the block's parameter group theta_i
(:mod:`pipeline.curvature.parameter_group`), so it measures convolutions, attention, layer norms,
embeddings and a user's own modules. Rows have the same columns and meaning, ``layer_index`` = block
index (``blocks`` table). By kind:

- ``local`` (definition 1, phi over every output entry of the block; a block of a module's own
  parameters, which has no inputs, as the identity on them): ``closed_form`` per output
  channel for a convolution or Linear block with an elementwise activation (through unfolded
  patches, :mod:`pipeline.curvature.conv_local`) while its q eigendecompositions cost at most
  CLOSED_FORM_MAX_COST (any number of parameters: the cost is in the patch rows); otherwise ``autograd`` (the dense
  Hessian by one autograd pass per row, exact) up to the exact limit and ``lanczos`` on local
  Hessian-vector products above it;
- ``loss`` (definition 2): ``autograd`` up to the exact limit, ``lanczos`` above;
- ``ggn`` (definition 3): ``gram``, exact, from the explicit factor S of per-sample Jacobians
  (the smaller of S^T S and S S^T) while S fits JACOBIAN_MAX_BYTES and min(p, N m') <= GGN_EXACT_MAX;
  else ``lanczos`` on products J^T H J v.

Lanczos rows carry the matrix-free summary's standard errors and convergence flags (trace and
Frobenius norm estimated too: there is no Kronecker form to read them from). Nothing of size p x p
is formed above the exact limit (GGN_EXACT_MAX for the Gauss-Newton block). ``layer_stats`` gains
the gradient pressure g^T H_ii g / ||g||^2 (one product: exact at any size) and the damped
natural-gradient norm (dense solve, Woodbury on the Gram matrix, or CG with its convergence flag).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import numpy as np
import torch
from torch import nn

from pipeline.curvature.conv_local import (
    CLOSED_FORM_MAX_COST,
    conv_closed_form_applies,
    conv_closed_form_cost,
    conv_local_is_zero,
    conv_local_spectrum,
)
from pipeline.curvature.dense_hessian import dense_hessian, finite_eigh
from pipeline.curvature.engine import (
    GGN_EXACT_MAX,
    CurvatureBlock,
    CurvatureSettings,
    Probe,
    check_finite,
    exact_ggn_row,
    exact_row,
    matrix_free_ggn_row,
    measure_blocks,
)
from pipeline.curvature.local_hessian import closed_form_solve_order
from pipeline.curvature.matrix_free import adaptive_summary
from pipeline.curvature.objective import ModelObjective
from pipeline.curvature.parameter_group import (
    GGNProducts,
    ParameterGroup,
    jacobian_factor,
    jacobian_factor_fits,
    local_objective,
    loss_objective,
    own_parameters_objective,
    record_block_inputs,
)
from pipeline.curvature.precision import ProductModel, checked_products
from pipeline.curvature.stochastic import GraphHVP
from pipeline.models.block_graph import own_block_owner


def _zero_row(p: int) -> dict:
    """An identically zero Hessian seen through products (its gradient is constant): no p zeros stored."""
    row = exact_row(np.zeros(1))
    return {**row, "eigenvalues": np.zeros(0), "n_zero": p, "trace": 0.0, "top_eigenvalue": 0.0,
            "bottom_eigenvalue": 0.0, "near_zero_fraction": 1.0, "exactly_zero": True}


def _indefinite_row(obj: ModelObjective, group: ParameterGroup, n_points: int, settings: CurvatureSettings,
                    rng: np.random.Generator,
                    products: Callable[[], ModelObjective]) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(row, g, H g) of a local or loss block: dense by autograd up to the exact limit, else Lanczos
    on the products of ``products()`` (the objective in the products' dtype); g and H g in float64."""
    p = obj.n_params
    if p <= settings.exact_limit:
        # one autograd pass per row rather than vmapped products: on small CNN and Transformer blocks the
        # rows are the faster route, on MLP blocks vmap is (benchmarks/curvature.py; docs/benchmarks.md)
        h = dense_hessian(obj, "rows")
        g = torch.func.grad(obj.f)(obj.theta0)
        if not bool(h.any()):  # identically zero (a linear objective): every eigenvalue is an exact 0
            row = exact_row(np.zeros(p), n_floor=p + n_points)
            return {**row, "method": "autograd", "n_hvp": p, "exactly_zero": True}, g, h @ g
        values, vectors = finite_eigh(h)
        row = exact_row(values, vectors, group.bias_mask, n_floor=p + n_points)
        return {**row, "method": "autograd", "n_hvp": p, "exactly_zero": False}, g, h @ g
    hvp = GraphHVP(obj)
    g = hvp.gradient()
    hg = hvp.torch_matvec(g)
    if hvp.linear:
        return {**_zero_row(p), "method": "lanczos", "n_hvp": 1}, g, hg
    chosen = checked_products(GraphHVP(products()) if settings.product_dtype != "float64" else None, hvp, p,
                              settings.product_dtype)
    del hvp  # the graph not chosen is freed
    row = adaptive_summary(chosen.matvec, p, rng, settings.budget, product_rtol=chosen.product_rtol)
    row["exactly_zero"] = bool(row["top_eigenvalue"] == 0 and row["bottom_eigenvalue"] == 0)
    return {**row, "method": "lanczos", "n_hvp": row["n_hvp"] + 1 + chosen.check_products,
            "product_dtype": chosen.dtype_name}, g, hg


def _local_row(model: nn.Module, block: str, group: ParameterGroup, X: torch.Tensor, settings: CurvatureSettings,
               rng: np.random.Generator, low: ProductModel) -> dict:
    if own_block_owner(block) is not None:
        row, _, _ = _indefinite_row(own_parameters_objective(group, group.theta(model), settings.phi), group, 1,
                                    settings, rng,
                                    lambda: own_parameters_objective(group, group.theta(low.model), settings.phi))
        return row
    inputs = record_block_inputs(model, block, X)
    module = model.get_submodule(block)
    if conv_closed_form_applies(module) and len(inputs.args) == 1 and not inputs.kwargs and \
            conv_closed_form_cost(module, inputs.args[0]) <= CLOSED_FORM_MAX_COST:
        values, bias, rows = conv_local_spectrum(module, inputs.args[0], settings.phi)
        fan_in = module.conv.weight[0].numel() if hasattr(module, "conv") else module.weight[0].numel()
        n_floor = closed_form_solve_order(rows, fan_in) + rows  # order decomposed + the rows summed
        return {**exact_row(values, n_floor=n_floor, bias_share=bias), "method": "closed_form", "n_hvp": 0,
                "exactly_zero": conv_local_is_zero(module, settings.phi)}
    row, _, _ = _indefinite_row(local_objective(model, block, group, inputs, settings.phi), group, X.shape[0],
                                settings, rng,
                                lambda: local_objective(low.model, block, group,
                                                        record_block_inputs(low.model, block, low.inputs[0]),
                                                        settings.phi))
    return row


def _ggn_row(model: nn.Module, group: ParameterGroup, X: torch.Tensor, task: str, g: torch.Tensor, m: int,
             settings: CurvatureSettings, rng: np.random.Generator,
             low: ProductModel) -> tuple[dict, float | None, bool]:
    """The Gauss-Newton row and the natural-gradient norm g^T (G + delta lambda_max I)^{-1} g: exact
    from the explicit per-sample Jacobian factor S when it fits, else on products J^T H J v (Lanczos
    on ``low``'s, in the products' dtype; CG on float64 ones)."""
    p, n = group.n_params, X.shape[0]
    m_prime = m - 1 if task == "classification" else m
    if jacobian_factor_fits(n, m, p) and min(p, n * m_prime) <= GGN_EXACT_MAX:
        factor = jacobian_factor(model, group, X, task)
        check_finite(factor.s)
        return exact_ggn_row(factor, factor.dense, g, n_hvp=n * m)
    low_precision = settings.product_dtype != "float64"
    lanczos_products = GGNProducts(low.model, group, low.inputs[0], task) if low_precision else None
    row, natgrad, converged = matrix_free_ggn_row(GGNProducts(model, group, X, task), p, g, settings, rng,
                                                  lanczos_matvec=lanczos_products)
    return row, natgrad, converged


class GenericBlock:
    """The strategy of any block: its parameter group theta_i (the module docstring's methods)."""

    def __init__(self, probe: Probe, i: int, block: str, names: tuple[str, ...]):
        self.probe, self.block = probe, block
        self.group = ParameterGroup.of(probe.model, names)
        self.n_params = self.group.n_params
        self.bias_share_baseline = float(self.group.bias_mask.mean())

    def local_row(self, rng: np.random.Generator) -> dict:
        probe = self.probe
        return _local_row(probe.model, self.block, self.group, probe.X, probe.settings, rng, probe.low)

    def loss_row(self, rng: np.random.Generator) -> tuple[dict, torch.Tensor, torch.Tensor]:
        probe = self.probe
        return _indefinite_row(loss_objective(probe.model, self.group, probe.X, probe.y, probe.loss_fn), self.group,
                               probe.X.shape[0], probe.settings, rng,
                               lambda: loss_objective(probe.low.model, self.group, *probe.low.inputs, probe.loss_fn))

    def ggn_row(self, g: torch.Tensor, rng: np.random.Generator) -> tuple[dict, float | None, bool]:
        probe = self.probe
        return _ggn_row(probe.model, self.group, probe.X, probe.task, g, probe.n_outputs, probe.settings, rng,
                        probe.low)


def generic_blocks(blocks: Iterable[tuple[str, tuple[str, ...]]]) -> list[CurvatureBlock]:
    """Blocks (module path, parameter names), each measured by :class:`GenericBlock`."""
    return [(block, partial(GenericBlock, block=block, names=names)) for block, names in blocks]


def block_curvature_snapshot(model: nn.Module, blocks: list[tuple[str, tuple[str, ...]]], X: torch.Tensor,
                             y: torch.Tensor, loss_fn: nn.Module, task: str, settings: CurvatureSettings,
                             seed: int, step: int) -> tuple[list[dict], list[dict]]:
    """:func:`pipeline.curvature.engine.measure_blocks` over ``blocks`` (module path, parameter names)
    in forward order (``BlockGraph.names`` and ``.params``), every one by :class:`GenericBlock`."""
    return measure_blocks(model, generic_blocks(blocks), X, y, loss_fn, task, settings, seed, step)
