"""The curvature of one spectral snapshot: for every block, three spectra and two scalars.

One driver, :func:`measure_blocks`, measures every model: it copies the model to float64 (a
:class:`Probe`), then for each block, in forward order, builds the block's strategy and asks it for
its three rows (kinds ``local``, ``loss``, ``ggn``), the gradient pressure and the natural-gradient
norm, each row's random draws seeded from (run seed, step, block, kind). A block's strategy is how it
is measured: :class:`KroneckerBlock` for an MLP's Linear block (below),
:class:`pipeline.curvature.block_engine.GenericBlock` for any other block (its parameter group).
The caller picks each block's strategy in the block list (:func:`kronecker_blocks`,
:func:`pipeline.curvature.block_engine.generic_blocks`); speed-ups to the loop apply to both.

An MLP's Linear block reads its Kronecker form H = sum_n M_n (x) z~_n z~_n^T
(:mod:`pipeline.curvature.kronecker`): q products with respect to the block's pre-activations, not
p = q (d + 1) through the network. kinds (rows of ``hessian_spectra``), by ``method``:

- ``local``: the local Hessian with phi = sum (definition 1): ``closed_form`` whenever the block is
  Linear + elementwise activation (M_n diagonal; any size: only the q small blocks are formed); for
  layer norm ``kronecker`` (the dense matrix from the Kronecker form) up to the exact limit, else
  ``lanczos`` on local Hessian-vector products;
- ``loss``: the loss block H_ii (definition 2): ``kronecker`` up to the exact limit, else ``lanczos``;
- ``ggn``: the Gauss-Newton block G_ii (definition 3): ``gram``, exact at any width, from the smaller
  of the p x p matrix and the (N m') x (N m') Gram matrix S S^T while that fits GGN_EXACT_MAX; else
  ``lanczos`` (never reached by the built-in configs).

``n_hvp`` counts products: q Hessian-vector products with respect to the pre-activations for a
Kronecker form, m' vector-Jacobian products for the GGN factor, plus the Lanczos products. Exact
rows store every eigenvalue and the full spectral summary, with standard errors 0 and
``zero_floor``, the noise floor below which an eigenvalue counts as zero. ``lanczos`` rows
(:func:`pipeline.curvature.matrix_free.matrix_free_summary`) have the exact trace and standard
deviation (from tr H and ||H||_F^2 of the Kronecker form), estimated skewness, negative mass and
effective rank with jackknife standard errors, both extremes with their residuals and per-end
convergence, and the stochastic Lanczos quadrature density; the columns that need the whole
spectrum are NULL. Nothing of size p x p is allocated above the exact limit.

``layer_stats`` gains the gradient pressure g^T H_ii g / ||g||^2 (exact at any width, by a Kronecker
product) and the damped natural-gradient norm g^T (G + lambda I)^{-1} g (exact: a dense solve, or the
Woodbury identity on the Gram matrix, g^T (G + mu I)^{-1} g = (||g||^2 - s^T (mu I + S S^T)^{-1} s) / mu
with s = S g; by conjugate gradients, ``natural_gradient_converged`` recording whether CG met its
tolerance, only above GGN_EXACT_MAX).

The exact and matrix-free row builders here (:func:`exact_row`, :func:`exact_ggn_row`,
:func:`matrix_free_ggn_row`) serve both strategies. All work is in float64 on a copy of the model in
eval mode, on ``device``; every random draw is seeded from (run seed, step, layer, kind).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import torch
from torch import nn

from pipeline.curvature.attention import second_order_attention
from pipeline.curvature.dense_hessian import finite_eigh
from pipeline.curvature.ggn import (
    GGNFactor,
    ggn_factor,
    gradient_pressure,
    natural_gradient_norm_cg,
    natural_gradient_norm_dense,
    natural_gradient_norm_gram,
    natural_gradient_norm_refined,
)
from pipeline.curvature.kronecker import KroneckerSum, local_kronecker, loss_kronecker
from pipeline.curvature.local_hessian import (
    closed_form_applies,
    closed_form_solve_order,
    is_exactly_zero,
    local_closed_form_spectrum,
)
from pipeline.curvature.matrix_free import LanczosBudget, adaptive_summary
from pipeline.curvature.objective import BlockObjective, local_objective, loss_objective
from pipeline.curvature.precision import PRODUCT_DTYPES, ProductModel, checked_products
from pipeline.curvature.spectral_summary import spectral_summary
from pipeline.curvature.stochastic import GraphHVP

KINDS = ("local", "loss", "ggn")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
#: Methods whose rows are estimates from products (their summaries carry standard errors).
ESTIMATED_METHODS = ("lanczos",)
#: The Gauss-Newton block is decomposed exactly while min(p, N m') is at most this: a Gram matrix of
#: 4096^2 doubles is 128 MiB, and its eigenvalues take about 3 s on one core.
GGN_EXACT_MAX = 4096
#: Lanczos runs of a matrix-free row at least; each may take hvp_budget // SLQ_VECTORS steps, the row
#: at most hvp_budget products (:class:`pipeline.curvature.matrix_free.LanczosBudget`; the README's
#: estimator table gives the accuracy, measured by benchmarks/curvature.py).
SLQ_VECTORS = 8
#: Above the exact limit the Kronecker factors M (8 N q^2 bytes) are formed only up to this size, for
#: the exact trace and Frobenius norm; Lanczos itself runs on products through the network, which
#: read the weights rather than M (a product with M is memory-bound: 15 ms at N = q = 256).
KRONECKER_MAX_BYTES = 64 * 2**20
#: ... and ||H||_F^2 costs N^2 q^2 multiply-adds: exact up to this many, estimated above.
FROBENIUS_MAX_FLOPS = 2**30


@dataclass(frozen=True)
class CurvatureSettings:
    """exact_limit: blocks of at most this many parameters are decomposed exactly; hvp_budget: the
    cap on a matrix-free row's products; product_dtype: the dtype of those products
    (:mod:`pipeline.curvature.precision`; exact rows are float64 whatever it is)."""

    exact_limit: int = 1000
    hvp_budget: int = 320
    phi: str = "sum"
    device: str = "cpu"
    product_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.product_dtype not in PRODUCT_DTYPES:
            raise ValueError(f"product_dtype must be one of {sorted(PRODUCT_DTYPES)}, not {self.product_dtype!r}")

    @property
    def budget(self) -> LanczosBudget:
        """The targets and cap of a matrix-free row."""
        return LanczosBudget(runs=SLQ_VECTORS, max_products=max(2 * SLQ_VECTORS, self.hvp_budget))


def snapshot_rng(seed: int, step: int, layer: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, step, layer, KIND_CODE[kind]])


_EXACT_ERRORS = {"trace_stderr": 0.0, "std_stderr": 0.0, "skewness_stderr": 0.0, "negative_mass_stderr": 0.0,
                 "effective_rank_stderr": 0.0, "top_residual": 0.0, "bottom_residual": 0.0, "converged": True,
                 "bottom_converged": True, "stop_reason": None, "lanczos_runs": None, "product_dtype": "float64"}


def exact_row(eigenvalues: torch.Tensor | np.ndarray, eigenvectors: torch.Tensor | None = None,
               bias_mask: np.ndarray | None = None, n_floor: int | None = None,
               bias_share: float | None = None) -> dict:
    lam = eigenvalues.detach().cpu().numpy() if isinstance(eigenvalues, torch.Tensor) else np.asarray(eigenvalues)
    vecs = None if eigenvectors is None else eigenvectors.detach().cpu().numpy()
    s = spectral_summary(lam, vecs, bias_mask, n_floor=n_floor, bias_share=bias_share)
    return {"eigenvalues": np.sort(lam), **s.as_row(), **_EXACT_ERRORS}


def _indefinite_row(obj: BlockObjective, kron: KroneckerSum | None, settings: CurvatureSettings,
                    rng: np.random.Generator, products: Callable[[], BlockObjective] | None = None) -> dict:
    """An indefinite kind (local, loss): exact from its Kronecker form up to the exact limit, else
    matrix-free on Hessian-vector products of ``products()`` (the objective in the products' dtype;
    ``obj`` itself unless given), with the exact trace and Frobenius norm when ``kron`` is given."""
    if obj.n_params <= settings.exact_limit:
        values, vectors = finite_eigh(kron.dense())
        # the floor's count: the order p plus the N points summed into each entry
        row = exact_row(values, vectors, kron.bias_mask, n_floor=obj.n_params + kron.m.shape[0])
        return {**row, "method": "kronecker", "n_hvp": kron.q}
    trace = fro = None
    if kron is not None:
        check_finite(kron.m)
        trace = kron.trace()
        n, q = kron.m.shape[:2]
        fro = kron.frobenius_sq() if n * n * q * q <= FROBENIUS_MAX_FLOPS else None
    reference = GraphHVP(obj)
    low = GraphHVP(products()) if products and settings.product_dtype != "float64" else None
    chosen = checked_products(low, reference, obj.n_params, settings.product_dtype)
    del low, reference  # the graph not chosen is freed
    row = adaptive_summary(chosen.matvec, obj.n_params, rng, settings.budget, trace=trace, frobenius_sq=fro,
                           product_rtol=chosen.product_rtol)
    return {**row, "method": "lanczos",
            "n_hvp": row["n_hvp"] + chosen.check_products + (kron.q if kron is not None else 0),
            "product_dtype": chosen.dtype_name}


def _kronecker_fits(n: int, q: int, p: int, settings: CurvatureSettings) -> bool:
    return p <= settings.exact_limit or 8 * n * q * q <= KRONECKER_MAX_BYTES


def check_finite(t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise FloatingPointError("curvature matrix is not finite")


def exact_ggn_spectrum(factor, dense, g: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """All p eigenvalues of G = S^T S (ascending, clamped at 0: G is PSD) and the natural-gradient norm,
    from the smaller of G (``dense()``, p x p) and the Gram matrix ``factor.gram()`` (order N m'), whose
    nonzero eigenvalues are G's; the other p - N m' are exact zeros. ``factor``: ``n_params``,
    ``gram_size``, ``gram()`` and ``apply(g)`` = S g (:class:`GGNFactor` or a Jacobian factor)."""
    p, size = factor.n_params, factor.gram_size
    if p <= size:
        gmat = dense()
        values = torch.linalg.eigvalsh(gmat)
        natgrad = natural_gradient_norm_dense(g, gmat, float(values.max()))
    else:
        gram = factor.gram()
        values = torch.linalg.eigvalsh(gram)
        natgrad = natural_gradient_norm_gram(g, factor, gram, float(values.max()))
        values = torch.cat([torch.zeros(p - size, dtype=values.dtype, device=values.device), values])
    return values.clamp(min=0), natgrad


def exact_ggn_row(factor, dense, g: torch.Tensor, n_hvp: int) -> tuple[dict, float | None, bool]:
    """The ``gram`` row of G = S^T S (every eigenvalue, by :func:`exact_ggn_spectrum`), its
    natural-gradient norm, and True (exact: nothing to converge). The zero floor counts
    ``factor.floor_count()``: the order decomposed plus the terms summed into each entry."""
    values, natgrad = exact_ggn_spectrum(factor, dense, g)
    row = exact_row(values, n_floor=factor.floor_count(), bias_share=factor.bias_share())
    return {**row, "method": "gram", "n_hvp": n_hvp}, natgrad, True


def matrix_free_ggn_row(matvec: Callable[[np.ndarray], np.ndarray], p: int, g: torch.Tensor,
                        settings: CurvatureSettings, rng: np.random.Generator, trace: float | None = None,
                        setup_products: int = 0,
                        lanczos_matvec: Callable[[np.ndarray], np.ndarray] | None = None
                        ) -> tuple[dict, float | None, bool]:
    """The ``lanczos`` row of the PSD G from products ``matvec`` (float64 numpy, (p,) -> (p,)), and
    the natural-gradient norm by CG with its convergence flag. ``n_hvp`` counts the Lanczos products,
    ``setup_products`` (those that built the operator) and CG's; trace: exact tr G when known.
    lanczos_matvec: products in the settings' ``product_dtype`` for the Lanczos runs (``matvec``'s
    otherwise) and for CG's inner solves, refined to CG's tolerance (1e-6) by float64 residuals on
    ``matvec`` (:func:`pipeline.curvature.ggn.natural_gradient_norm_refined`)."""
    chosen = checked_products(lanczos_matvec, matvec, p, settings.product_dtype)
    lanczos_matvec = chosen.matvec if chosen.dtype_name != "float64" else None
    row = adaptive_summary(chosen.matvec, p, rng, settings.budget, definite=True, trace=trace,
                           product_rtol=chosen.product_rtol)
    cg_products = chosen.check_products

    def counted(v: np.ndarray) -> np.ndarray:
        nonlocal cg_products
        cg_products += 1
        return matvec(v)

    if lanczos_matvec is None:
        natgrad, converged = natural_gradient_norm_cg(g.cpu().numpy(), counted, row["top_eigenvalue"] or 0.0,
                                                      max_iter=settings.hvp_budget)
    else:  # most of CG's products in the products' dtype, corrected by float64 residuals
        def counted_low(v: np.ndarray) -> np.ndarray:
            nonlocal cg_products
            cg_products += 1
            return lanczos_matvec(v)

        natgrad, converged = natural_gradient_norm_refined(g.cpu().numpy(), counted, counted_low,
                                                           row["top_eigenvalue"] or 0.0, max_iter=settings.hvp_budget)
    return ({**row, "method": "lanczos", "n_hvp": row["n_hvp"] + setup_products + cg_products,
             "product_dtype": chosen.dtype_name}, natgrad, converged)


def _ggn_row(factor: GGNFactor, g: torch.Tensor, settings: CurvatureSettings,
             rng: np.random.Generator) -> tuple[dict, float | None, bool]:
    """The Gauss-Newton row and the natural-gradient norm g^T (G + delta lambda_max I)^{-1} g from the
    Linear block's factor (built by m' vector-Jacobian products)."""
    check_finite(factor.r)
    if min(factor.n_params, factor.gram_size) <= GGN_EXACT_MAX:
        return exact_ggn_row(factor, factor.kronecker().dense, g, n_hvp=factor.r.shape[1])
    row, natgrad, converged = matrix_free_ggn_row(factor.numpy_matvec, factor.n_params, g, settings, rng,
                                                  trace=factor.trace(), setup_products=factor.r.shape[1])
    return {**row, "bias_share": factor.bias_share()}, natgrad, converged


class BlockStrategy(Protocol):
    """How one block's three kinds are measured: a per-block strategy of :func:`measure_blocks`.

    Built from the snapshot's :class:`Probe` and the block's index; ``loss_row`` returns (row, g, H g)
    (g the block's gradient, H g one product with its loss Hessian: the gradient pressure), ``ggn_row``
    (row, natural-gradient norm, its convergence flag)."""

    n_params: int
    bias_share_baseline: float

    def local_row(self, rng: np.random.Generator) -> dict: ...

    def loss_row(self, rng: np.random.Generator) -> tuple[dict, torch.Tensor, torch.Tensor]: ...

    def ggn_row(self, g: torch.Tensor, rng: np.random.Generator) -> tuple[dict, float | None, bool]: ...


@dataclass
class Probe:
    """What every block's strategy reads: a float64 copy of the model in eval mode on ``device`` whose
    parameters are constants (derivatives are taken w.r.t. pre-activations or a theta passed in), and
    the probe batch on the same device (token ids stay int64); ``n_outputs``: m, the model's outputs
    per point (one forward pass before any block, so a model that cannot run fails outside them)."""

    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    loss_fn: nn.Module
    task: str
    settings: CurvatureSettings
    n_outputs: int

    @classmethod
    def of(cls, model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, task: str,
           settings: CurvatureSettings) -> Probe:
        device = torch.device(settings.device)
        m64 = copy.deepcopy(model).double().eval().to(device)
        m64.requires_grad_(False)
        X = X.to(device=device, dtype=torch.float64 if X.is_floating_point() else X.dtype)
        y = y.to(device=device, dtype=torch.float64 if task == "regression" else torch.long)
        with torch.no_grad():
            m = m64(X[:1]).shape[1]
        return cls(m64, X, y, loss_fn, task, settings, m)

    @cached_property
    def low(self) -> ProductModel:
        """The model and probe batch in the matrix-free products' dtype (made on first use)."""
        return ProductModel(self.model, self.X, self.y, self.settings.product_dtype)

    @cached_property
    def intermediates(self):
        """An MLP's per-block inputs and pre-activations on X (:meth:`pipeline.models.mlp.MLP.intermediates`)."""
        with torch.no_grad():
            return self.model.intermediates(self.X)


#: One block to measure: its name (for error notes) and the constructor of its strategy,
#: ``strategy(probe, block_index)``.
CurvatureBlock = tuple[str, Callable[[Probe, int], BlockStrategy]]


@second_order_attention()
def measure_blocks(model: nn.Module, blocks: list[CurvatureBlock], X: torch.Tensor, y: torch.Tensor,
                   loss_fn: nn.Module, task: str, settings: CurvatureSettings, seed: int,
                   step: int) -> tuple[list[dict], list[dict]]:
    """The one curvature driver: rows of ``hessian_spectra`` (one per block and kind, ``layer_index`` =
    the block's position in ``blocks``) and per-block {gradient_pressure, natural_gradient_norm,
    natural_gradient_converged} for ``layer_stats``, each block measured by its own strategy
    (:class:`KroneckerBlock` for an MLP's Linear block, the any-model strategy of
    :mod:`pipeline.curvature.block_engine` otherwise). X, y: the probe batch. An exception raised in a
    block keeps its type (a FloatingPointError is a divergence) and gains a note naming the block."""
    probe = Probe.of(model, X, y, loss_fn, task, settings)
    rows, extras = [], []
    for i, (block, strategy) in enumerate(blocks):
        try:
            s = strategy(probe, i)
            base = {"layer_index": i, "n_probe": X.shape[0], "n_params": s.n_params,
                    "bias_share_baseline": s.bias_share_baseline}

            t = time.perf_counter()
            row = s.local_row(snapshot_rng(seed, step, i, "local"))
            rows.append({**base, "kind": "local", **row, "seconds": time.perf_counter() - t})

            t = time.perf_counter()
            row, g, hg = s.loss_row(snapshot_rng(seed, step, i, "loss"))
            rows.append({**base, "kind": "loss", **row, "seconds": time.perf_counter() - t})
            pressure = gradient_pressure(g, hg)

            t = time.perf_counter()
            row, natgrad, natgrad_converged = s.ggn_row(g, snapshot_rng(seed, step, i, "ggn"))
            row["exactly_zero"] = bool(row["top_eigenvalue"] == 0)
            rows.append({**base, "kind": "ggn", **row, "seconds": time.perf_counter() - t})
            extras.append({"gradient_pressure": pressure, "natural_gradient_norm": natgrad,
                           "natural_gradient_converged": natgrad_converged if natgrad is not None else None})
        except Exception as exc:  # the type is kept (a FloatingPointError is a divergence); the note says where
            exc.add_note(f"block {block!r}")
            raise
    return rows, extras


class KroneckerBlock:
    """The strategy of an MLP's Linear block C_i = (Linear, norm, activation), theta = (W, b) of its
    Linear: every kind from the block's Kronecker form (the module docstring)."""

    def __init__(self, probe: Probe, i: int):
        self.probe, self.i = probe, i
        self.block = probe.model.blocks[i]
        self.q, self.d = self.block.linear.weight.shape
        self.n_params = self.q * (self.d + 1)
        self.bias_share_baseline = 1.0 / (self.d + 1)

    def local_row(self, rng: np.random.Generator) -> dict:
        """The local Hessian: closed form for Linear + elementwise activation, else Kronecker or Lanczos."""
        probe, block, settings = self.probe, self.block, self.probe.settings
        X, q, d, p = probe.X, self.q, self.d, self.n_params
        z = probe.intermediates.inputs[self.i]
        if closed_form_applies(block):
            eigenvalues, bias = local_closed_form_spectrum(block, z, settings.phi)
            n_floor = closed_form_solve_order(X.shape[0], d) + X.shape[0]  # order decomposed + N points summed
            row = {**exact_row(eigenvalues, n_floor=n_floor, bias_share=bias),
                   "method": "closed_form", "n_hvp": 0}
        else:
            kron = local_kronecker(block, z, settings.phi) if _kronecker_fits(X.shape[0], q, p, settings) else None
            row = _indefinite_row(local_objective(block, z, settings.phi), kron, settings, rng,
                                  lambda: local_objective(probe.low.model.blocks[self.i], z.to(probe.low.dtype),
                                                          settings.phi))
        row["exactly_zero"] = is_exactly_zero(block, settings.phi)
        return row

    def loss_row(self, rng: np.random.Generator) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The loss block Hessian, the block's gradient g and H g (from the Kronecker form or a product)."""
        probe, settings, i = self.probe, self.probe.settings, self.i
        m64, X, y, q, p = probe.model, probe.X, probe.y, self.q, self.n_params
        obj = loss_objective(m64, i, X, y, probe.loss_fn)
        kron, hvp = None, None
        if _kronecker_fits(X.shape[0], q, p, settings):
            kron, g = loss_kronecker(m64, i, X, y, probe.loss_fn)
        if p > settings.exact_limit:
            hvp = GraphHVP(obj)
            g = hvp.gradient()
        if hvp is not None:  # g and H g (the pressure) in float64; the Lanczos products in the products' dtype
            hg = hvp.torch_matvec(g)
            del hvp
        row = _indefinite_row(obj, kron, settings, rng,
                              lambda: loss_objective(probe.low.model, i, *probe.low.inputs, probe.loss_fn))
        row["exactly_zero"] = bool(row["top_eigenvalue"] == 0 and row["bottom_eigenvalue"] == 0)
        return row, g, kron.matvec(g) if p <= settings.exact_limit else hg

    def ggn_row(self, g: torch.Tensor, rng: np.random.Generator) -> tuple[dict, float | None, bool]:
        """The Gauss-Newton block from the Linear's GGN factor, and the natural-gradient norm."""
        probe = self.probe
        return _ggn_row(ggn_factor(probe.model, self.i, probe.X, probe.task), g, probe.settings, rng)


def kronecker_blocks(model: nn.Module) -> list[CurvatureBlock]:
    """An MLP's blocks ``blocks.i``, each measured by its Kronecker form (:class:`KroneckerBlock`)."""
    return [(f"blocks.{i}", KroneckerBlock) for i in range(len(model.blocks))]


def curvature_snapshot(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, task: str,
                       settings: CurvatureSettings, seed: int, step: int) -> tuple[list[dict], list[dict]]:
    """:func:`measure_blocks` over an MLP's Linear blocks, every one by its Kronecker form."""
    return measure_blocks(model, kronecker_blocks(model), X, y, loss_fn, task, settings, seed, step)
