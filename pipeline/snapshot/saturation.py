"""Activation saturation and dead units (DESIGN definition 6).

A (unit, probe point) pair is saturated when |A'(u)| < SATURATION_FRACTION * max_u A'(u): the
activation passes almost no gradient there. For ReLU that is every u <= 0. A ReLU unit is dead when
u <= 0 on every probe point; dead units are defined for ReLU only (None otherwise).
"""

from __future__ import annotations

from functools import cache

import torch

from pipeline.curvature.activations import activation_derivatives

SATURATION_FRACTION = 0.05


def activation_derivative(u: torch.Tensor, activation: str) -> torch.Tensor:
    """Elementwise A'(u), in closed form, in float64."""
    return activation_derivatives(u.detach().double(), activation)[1]


@cache
def max_derivative(activation: str) -> float:
    """max_u |A'(u)|, on a fine grid over [-20, 20] (0.25 for sigmoid, 1 for tanh and ReLU, ~1.129 GELU)."""
    grid = torch.linspace(-20.0, 20.0, 400_001, dtype=torch.float64)
    return float(activation_derivative(grid, activation).abs().max())


def saturation_stats(u: torch.Tensor, activation: str) -> tuple[float | None, float | None]:
    """u: (N, q) pre-activations on the probe batch -> (saturated pair fraction, dead unit fraction).

    The identity (output layer) never saturates: both are None.
    """
    if activation == "identity":
        return None, None
    d = activation_derivative(u, activation).abs()
    saturated = float((d < SATURATION_FRACTION * max_derivative(activation)).double().mean())
    dead = float((u <= 0).all(dim=0).double().mean()) if activation == "relu" else None
    return saturated, dead
