"""Elementwise activations and their first two derivatives in closed form.

    relu:     A' = 1[u > 0],            A'' = 0 (almost everywhere)
    sigmoid:  A' = s (1 - s),           A'' = s (1 - s)(1 - 2 s)
    tanh:     A' = 1 - t^2,             A'' = -2 t (1 - t^2)
    gelu:     A = u Phi(u),  A' = Phi(u) + u phi(u),  A'' = phi(u) (2 - u^2)
    identity: A' = 1,                   A'' = 0
"""

from __future__ import annotations

import math

import torch

ELEMENTWISE = ("relu", "sigmoid", "tanh", "gelu", "identity")


def activation_derivatives(u: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A(u), A'(u), A''(u)), each of u's shape."""
    if name == "relu":
        return u.clamp(min=0), (u > 0).to(u.dtype), torch.zeros_like(u)
    if name == "sigmoid":
        s = torch.sigmoid(u)
        d1 = s * (1 - s)
        return s, d1, d1 * (1 - 2 * s)
    if name == "tanh":
        t = torch.tanh(u)
        d1 = 1 - t * t
        return t, d1, -2 * t * d1
    if name == "gelu":
        pdf = torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(u / math.sqrt(2)))
        return u * cdf, cdf + u * pdf, pdf * (2 - u * u)
    if name == "identity":
        return u, torch.ones_like(u), torch.zeros_like(u)
    raise ValueError(f"no closed form for activation {name!r}")


def has_zero_second_derivative(name: str) -> bool:
    """A'' = 0 everywhere it exists (ReLU, identity): the linear-phi local Hessian vanishes."""
    return name in ("relu", "identity")
