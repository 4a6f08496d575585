"""The precision of matrix-free products: a copy of the model in the products' dtype.

Exact rows (dense Hessians, Kronecker forms, Gram matrices) are decomposed in float64: their zero
floor is a float64 rounding bound. A Lanczos row only needs each product H v to an error far below
what it certifies (a Ritz residual of RITZ_RTOL = 1e-4 of the spectral scale, standard errors of a
few per cent), so its products may run in float32, about 3x cheaper on a CPU (more on convolutions
and on a GPU); the Lanczos recurrence, its reorthogonalization and every sum stay in float64. A
float32 product of a symmetric H is symmetric only to about 1e-7 ||H||, which moves Ritz values by
as much: tests/test_curvature.py checks the stored summaries of float32 products against float64
ones, within their standard errors. ``hessian_spectra.product_dtype`` records which was used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from pipeline.runspec import PRODUCT_DTYPE_NAMES

#: Product dtypes by name (``CurvatureSettings.product_dtype``).
PRODUCT_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
assert tuple(PRODUCT_DTYPES) == PRODUCT_DTYPE_NAMES
#: A bound on ||H~ v - H v|| / (||H||_2 ||v||) for the products H~ of each dtype, added (times the
#: spectral scale) to a Lanczos row's residuals. float32: 1e-5, at least 10x the largest relative
#: product error on every block of the test CNN and Transformer (convolutions, attention, layer
#: norms, heads; tests/test_adaptive_budgets.py measures and prints it: 3e-7); float64 products err
#: by about 1e-15, below anything the residuals resolve.
PRODUCT_RTOL: dict[str, float] = {"float32": 1e-5, "float64": 0.0}


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
