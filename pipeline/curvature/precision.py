"""The precision of matrix-free products: a copy of the model in the products' dtype, checked per row.

Exact rows (dense Hessians, Kronecker forms, Gram matrices) are decomposed in float64: their zero
floor is a float64 rounding bound. A Lanczos row only needs each product H v to an error far below
what it certifies (a Ritz residual of RITZ_RTOL = 1e-4 of the spectral scale, standard errors of a
few per cent), so its products may run in float32, about 3x cheaper on a CPU (more on convolutions
and on a GPU); the Lanczos recurrence, its reorthogonalization and every sum stay in float64.

Whether float32 is good enough depends on the model, not only on the dtype. On untrained networks a
float32 product errs by about 3e-7 of ||H||; on trained ones of the default corpus it erred by 3-19 %
(a confident softmax's p (1 - p) cancels in float32; a ReLU whose pre-activation is within rounding
of 0 switches). So every row checks its products (:func:`checked_products`): one product with a
fixed Rademacher vector w in both dtypes, e = ||H~ w - H w|| / ||H w||. While e <= CHECK_RTOL the row
runs on the low-precision products and its residuals add PRODUCT_SAFETY x e x the spectral scale;
otherwise it runs on the float64 products. ``hessian_spectra.product_dtype`` records which it used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.runspec import PRODUCT_DTYPE_NAMES

#: Product dtypes by name (``CurvatureSettings.product_dtype``).
PRODUCT_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
assert tuple(PRODUCT_DTYPES) == PRODUCT_DTYPE_NAMES
#: Low-precision products are used while their measured relative error e is at most this (the test
#: models' untrained blocks measure up to 1.6e-6) ...
CHECK_RTOL = 3e-6
#: ... and the residuals then add PRODUCT_SAFETY x e x the spectral scale: e is measured on one vector
#: (||E w|| / ||H w|| estimates ||E||_F / ||H||_F), the factor covers an error concentrated in a few
#: directions (tests/test_adaptive_budgets.py checks the resulting residuals against exact spectra).
#: At most 3e-5 of the scale: room is left for a residual to meet RITZ_RTOL = 1e-4 (an allowance near
#: it would leave rows uncertified by their rounding alone).
PRODUCT_SAFETY = 10.0
#: Seed of the check vector w (fixed: the row's own random stream is left as it was).
CHECK_SEED = 20261207

MatVec = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CheckedProducts:
    """The products a row runs on, their dtype, the relative error to add to its residuals, the
    measured error e (None when no check ran) and the products the check spent."""

    matvec: MatVec
    dtype_name: str
    product_rtol: float
    measured: float | None
    check_products: int


def checked_products(low: MatVec | None, reference: MatVec, n: int, low_dtype: str) -> CheckedProducts:
    """``low`` (products in ``low_dtype``) when one product of each with a fixed Rademacher vector
    agrees to CHECK_RTOL, else ``reference`` (float64); ``low`` None: the reference, unchecked."""
    if low is None or low_dtype == "float64":
        return CheckedProducts(low or reference, "float64", 0.0, None, 0)
    w = np.random.default_rng(CHECK_SEED).choice(np.array([-1.0, 1.0]), size=n)
    exact, approx = reference(w), low(w)
    norm = float(np.linalg.norm(exact))
    error = float(np.linalg.norm(approx - exact)) / norm if norm > 0 else 0.0
    if error <= CHECK_RTOL:
        return CheckedProducts(low, low_dtype, PRODUCT_SAFETY * error, error, 2)
    return CheckedProducts(reference, "float64", 0.0, error, 2)


@dataclass
class ProductModel:
    """The snapshot's model and probe batch in the products' dtype, made on first use (a float64
    model is used as it is). ``model`` is in eval mode with no parameter requiring gradients."""

    source: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    dtype_name: str
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        return PRODUCT_DTYPES[self.dtype_name]

    def _build(self) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        if "built" not in self._cache:
            if self.source.training or any(p.dtype != self.dtype for p in self.source.parameters()):
                model = copy.deepcopy(self.source).to(self.dtype).eval()
                model.requires_grad_(False)
            else:
                model = self.source
            X = self.X.to(self.dtype) if self.X.is_floating_point() else self.X  # token ids stay integers
            y = self.y.to(self.dtype) if self.y.is_floating_point() else self.y
            self._cache["built"] = (model, X, y)
        return self._cache["built"]

    @property
    def model(self) -> nn.Module:
        return self._build()[0]

    @property
    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._build()[1:]
