"""The curvature of one spectral snapshot: for every layer, three spectra and two scalars.

kinds (rows of ``hessian_spectra``):
- ``local``: the local Hessian with phi = sum (definition 1): ``closed_form`` whenever the block
  allows it (any size: only the q small blocks are formed), else ``vmap`` up to the exact limit, else
  ``lanczos`` on local Hessian-vector products;
- ``loss``: the loss block Hessian H_ii (definition 2): exact up to the exact limit (``vmap`` or the
  row loop ``rows``, whichever the benchmark found faster at that size), else ``lanczos``;
- ``ggn``: the Gauss-Newton block G_ii (definition 3): ``exact`` up to the limit, else ``lanczos`` on
  GGN-vector products.
Exact kinds store every eigenvalue and the full spectral summary. Above the limit nothing of size
p x p is allocated: the row stores the Ritz values of a top-k (and, for the indefinite kinds, a
bottom-k) Lanczos run (``converged`` and ``bottom_converged`` say whether ARPACK met its tolerance
within the budget for each; the bottom of a loss spectrum is a crowd of tiny eigenvalues and rarely
does), the Hutch++ trace with its standard error, and the stochastic Lanczos
quadrature density (grid and values), from which the negative mass, standard deviation, skewness
and effective rank are estimated; fields that need the whole spectrum are NULL.

The product budget per layer and kind (``hvp_budget``) is split: indefinite kinds 40 % top-k, 20 %
bottom-k, 20 % Hutch++, 20 % density; the GGN (positive semi-definite, so no bottom-k) 40 % top-k,
20 % Hutch++, 20 % density and 20 % conjugate-gradient iterations for the natural-gradient norm.
``layer_stats`` gains the gradient pressure g^T H g / ||g||^2 and the damped natural-gradient norm
g^T (G + lambda I)^{-1} g (a lower bound, flagged, when CG stops at its cap).

All work is in float64 on a copy of the model in eval mode, on ``device``; every random draw is
seeded from (run seed, step, layer, kind).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.curvature.dense_hessian import auto_method, dense_hessian, finite_eigh
from pipeline.curvature.ggn import (
    GGNProduct,
    ggn_exact,
    gradient_pressure,
    natural_gradient_norm_cg,
    natural_gradient_norm_dense,
)
from pipeline.curvature.local_hessian import closed_form_applies, is_exactly_zero, local_closed_form_spectrum
from pipeline.curvature.objective import BlockObjective, local_objective, loss_objective
from pipeline.curvature.spectral_summary import NEAR_ZERO_RTOL, spectral_summary
from pipeline.curvature.stochastic import GraphHVP, hutchpp_trace, lanczos_extreme, slq_density

KINDS = ("local", "loss", "ggn")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
#: Ritz values asked of each Lanczos run.
TOP_K = 8
#: Lanczos runs of the stochastic quadrature (each gets half of the density budget).
SLQ_VECTORS = 2


@dataclass(frozen=True)
class CurvatureSettings:
    exact_limit: int = 1000
    hvp_budget: int = 150
    phi: str = "sum"
    device: str = "cpu"


def _rng(seed: int, step: int, layer: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, step, layer, KIND_CODE[kind]])


def _exact_row(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor | None, bias_mask: np.ndarray | None) -> dict:
    lam = eigenvalues.detach().cpu().numpy()
    vecs = None if eigenvectors is None else eigenvectors.detach().cpu().numpy()
    s = spectral_summary(lam, vecs, bias_mask)
    return {"eigenvalues": np.sort(lam), **s.as_row(), "trace_stderr": 0.0, "converged": True,
            "bottom_converged": True}


def _stochastic_row(matvec, n: int, rng: np.random.Generator, budget: int, definite: bool) -> dict:
    """Lanczos extremes + Hutch++ + SLQ within ``budget`` products; see the module docstring."""
    top_b = (2 * budget) // 5
    bottom_b = 0 if definite else budget // 5
    trace_b = budget // 5
    density_b = budget // 5 if definite else budget - top_b - bottom_b - trace_b
    top = lanczos_extreme(matvec, n, TOP_K, "LA", top_b, rng)
    bottom = lanczos_extreme(matvec, n, TOP_K, "SA", bottom_b, rng) if bottom_b else None
    trace = hutchpp_trace(matvec, n, max(3, trace_b), rng)
    density = slq_density(matvec, n, SLQ_VECTORS, max(2, density_b // SLQ_VECTORS), rng)
    ritz = np.sort(np.concatenate([top.values, bottom.values if bottom else []]))
    # quadrature estimates: (1/n) tr f(H) ~ sum_k w_k f(theta_k)
    w, theta = density.weights, density.nodes
    mean = float(w @ theta)
    var = max(float(w @ theta**2) - mean**2, 0.0)
    top_abs = max(float(np.abs(ritz).max()) if ritz.size else 0.0, float(np.abs(theta).max()))
    sum_abs = n * float(w @ np.abs(theta))
    return {
        "eigenvalues": ritz, "trace": trace.trace, "trace_stderr": trace.stderr,
        "top_eigenvalue": float(top.values.max()) if top.values.size else None,
        "bottom_eigenvalue": (float(bottom.values.min()) if bottom and bottom.values.size else
                              (0.0 if definite else None)),
        "condition_number": None, "log_abs_det": None, "n_zero": None, "symmetry": None, "bias_share": None,
        "effective_rank": sum_abs / top_abs if top_abs > 0 else None, "std": var**0.5,
        "skewness": float(w @ (theta - mean) ** 3) / var**1.5 if var > 0 else None,
        "negative_mass": density.negative_mass(),
        "near_zero_fraction": float(w[np.abs(theta) <= NEAR_ZERO_RTOL * top_abs].sum()) if top_abs > 0 else None,
        "converged": top.converged, "bottom_converged": bottom.converged if bottom else None,
        "density_grid": density.grid, "density": density.density,
        "n_hvp": top.n_matvec + (bottom.n_matvec if bottom else 0) + trace.n_matvec + density.n_matvec,
    }


def curvature_snapshot(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, task: str,
                       settings: CurvatureSettings, seed: int, step: int) -> tuple[list[dict], list[dict]]:
    """Rows of ``hessian_spectra`` (one per layer and kind) and per-layer {gradient_pressure,
    natural_gradient_norm} for ``layer_stats``. X, y: the probe batch."""
    device = torch.device(settings.device)
    m64 = copy.deepcopy(model).double().eval().to(device)
    X = X.to(device=device, dtype=torch.float64)
    y = y.to(device=device, dtype=torch.float64 if task == "regression" else torch.long)
    with torch.no_grad():
        inter = m64.intermediates(X)
    rows, extras = [], []
    for i, block in enumerate(m64.blocks):
        q, d = block.linear.weight.shape
        p = q * (d + 1)
        base = {"layer_index": i, "n_probe": X.shape[0], "n_params": p, "bias_share_baseline": 1.0 / (d + 1)}

        # local Hessian
        t = time.perf_counter()
        if closed_form_applies(block):
            eigenvalues, bias = local_closed_form_spectrum(block, inter.inputs[i], settings.phi)
            row = _exact_row(eigenvalues, None, None)
            row.update(bias_share=bias, method="closed_form", n_hvp=0)
        else:
            obj = local_objective(block, inter.inputs[i], settings.phi)
            row = _exact_or_stochastic(obj, p, settings, _rng(seed, step, i, "local"), definite=False)
        row["exactly_zero"] = is_exactly_zero(block, settings.phi)
        rows.append({**base, "kind": "local", **row, "seconds": time.perf_counter() - t})

        # loss block Hessian, and the gradient pressure from it
        t = time.perf_counter()
        obj = loss_objective(m64, i, X, y, loss_fn)
        hvp = GraphHVP(obj)
        g = hvp.gradient()
        if p <= settings.exact_limit:
            method = auto_method(p)
            h = dense_hessian(obj, method)
            values, vectors = finite_eigh(h)
            row = {**_exact_row(values, vectors, obj.bias_mask), "method": method, "n_hvp": p}
            hg = h @ g
        else:
            row = _stochastic_row(hvp, p, _rng(seed, step, i, "loss"), settings.hvp_budget, definite=False)
            row["method"] = "lanczos"
            hg = hvp.torch_matvec(g)
        row["exactly_zero"] = bool(row["top_eigenvalue"] == 0 and row["bottom_eigenvalue"] == 0)
        rows.append({**base, "kind": "loss", **row, "seconds": time.perf_counter() - t})
        pressure = gradient_pressure(g, hg)

        # Gauss-Newton block, and the natural-gradient norm from it
        t = time.perf_counter()
        if p <= settings.exact_limit:
            gmat = ggn_exact(m64, i, X, task)
            values, vectors = finite_eigh(gmat)
            row = {**_exact_row(values, vectors, obj.bias_mask), "method": "exact", "n_hvp": 0}
            natgrad = natural_gradient_norm_dense(g, gmat, float(values.max()))
            natgrad_converged = True
        else:
            product = GGNProduct(m64, i, X, task)
            row = _stochastic_row(product, p, _rng(seed, step, i, "ggn"), settings.hvp_budget, definite=True)
            row["method"] = "lanczos"
            calls = product.calls
            natgrad, natgrad_converged = natural_gradient_norm_cg(
                g.cpu().numpy(), product, row["top_eigenvalue"] or 0.0, max_iter=settings.hvp_budget // 5)
            row["n_hvp"] += product.calls - calls
        row["exactly_zero"] = bool(row["top_eigenvalue"] == 0)
        rows.append({**base, "kind": "ggn", **row, "seconds": time.perf_counter() - t})
        extras.append({"gradient_pressure": pressure, "natural_gradient_norm": natgrad,
                       "natural_gradient_converged": natgrad_converged if natgrad is not None else None})
    return rows, extras


def _exact_or_stochastic(obj: BlockObjective, p: int, settings: CurvatureSettings, rng: np.random.Generator,
                         definite: bool) -> dict:
    if p <= settings.exact_limit:
        method = auto_method(p)
        values, vectors = finite_eigh(dense_hessian(obj, method))
        return {**_exact_row(values, vectors, obj.bias_mask), "method": method, "n_hvp": p}
    return {**_stochastic_row(GraphHVP(obj), p, rng, settings.hvp_budget, definite), "method": "lanczos"}
