"""The local Hessian of a convolution (or Linear) block in closed form, per output channel.

A block u = conv(z; W, b) -> A(u) with A elementwise computes, at every output position t of point n,
u_nct = w_c . P_nt + b_c, where P_nt is the input patch that position reads (``F.unfold``; the
weight W (C_out, C_in, k...) flattens row-major to the same C_in k... coordinates). So

    S(theta) = (1/N) sum_n sum_{c, t} phi-entry(A(u_nct))

is a sum of functions of one channel's (w_c, b_c) each, and its Hessian is block diagonal in
channel order, block_c = (1/N) sum_{n, t} c_nct P~_nt P~_nt^T with P~ = [P; 1] and c the phi
coefficient of :func:`pipeline.curvature.local_hessian.phi_coefficients` (phi = mean divides by the
C_out x positions entries of a point). It is the Linear block's closed form with N x positions rows
of patches and the 1/N of the N points, decomposed by
:func:`pipeline.curvature.local_hessian.block_diagonal_spectrum`; an ``nn.Linear`` on inputs with
leading dimensions (tokens) is the case of 1 x 1 patches. Torch order of theta (vec W, then b) is a
permutation of channel order, so the eigenvalues are the same.

Applies to ``ConvBlock`` (conv then activation), bare ``nn.Conv1d`` / ``nn.Conv2d`` and ``nn.Linear``
(A the identity: the local Hessian of a linear phi is exactly zero), with zero padding and groups 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.curvature.local_hessian import block_diagonal_spectrum, closed_form_solve_order, phi_coefficients
from pipeline.models.cnn import ConvBlock

#: The closed form is taken while :func:`conv_closed_form_cost` is at most this (about 10 s on one
#: core): above it the q eigendecompositions of order min(R, fan_in + 1), R = N x positions patch rows,
#: cost more than a Lanczos row on the block's local products (docs/benchmarks.md, the 8.9M CNN), and
#: the row is estimated instead.
CLOSED_FORM_MAX_COST = 2e10

#: Activation modules the closed form knows, by name (pipeline.curvature.activations).
ACTIVATION_NAMES = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Identity: "identity"}


def activation_name(module: nn.Module) -> str | None:
    """The closed-form name of an elementwise activation module, None for any other module."""
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    return ACTIVATION_NAMES.get(type(module))


def _parts(block: nn.Module) -> tuple[nn.Module, str] | None:
    """(the Linear or convolution, its activation's name) when the closed form applies, else None."""
    if isinstance(block, ConvBlock):
        layer, act = block.conv, activation_name(block.activation)
    elif isinstance(block, nn.Conv1d | nn.Conv2d | nn.Linear):
        layer, act = block, "identity"
    else:
        return None
    if act is None or layer.bias is None:
        return None
    if isinstance(layer, nn.Conv1d | nn.Conv2d):
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return None
    return layer, act


def conv_closed_form_applies(block: nn.Module) -> bool:
    return _parts(block) is not None


def conv_closed_form_cost(block: nn.Module, z: torch.Tensor) -> float:
    """Multiply-adds of the closed form on input z, q (k^3 + R m k) with q output channels, m = fan_in +
    1, R = N x positions and k = min(R, m) the order decomposed (forming the q blocks, then their
    eigendecompositions); the block must be one :func:`conv_closed_form_applies` takes."""
    layer, _ = _parts(block)
    with torch.no_grad():
        out = layer(z[:1])
    q = layer.weight.shape[0]
    positions = out[0, 0].numel() if isinstance(layer, nn.Conv1d | nn.Conv2d) else out[0].numel() // q
    rows, m = z.shape[0] * positions, layer.weight[0].numel() + 1
    k = closed_form_solve_order(rows, m - 1)
    return float(q) * (k**3 + rows * m * k)


def patch_rows(layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """P~ (N x positions, fan_in + 1): every input patch the layer reads, with a trailing 1."""
    if isinstance(layer, nn.Linear):
        rows = z.reshape(-1, z.shape[-1])
    else:
        if isinstance(layer, nn.Conv1d):  # a 1-D convolution is a 2-D one over a 1-pixel-high image
            z4 = z.unsqueeze(2)
            kernel, pad = (1, layer.kernel_size[0]), (0, layer.padding[0])
            stride, dilation = (1, layer.stride[0]), (1, layer.dilation[0])
        else:
            z4, kernel, pad, stride, dilation = z, layer.kernel_size, layer.padding, layer.stride, layer.dilation
        cols = F.unfold(z4, kernel, dilation=dilation, padding=pad, stride=stride)  # (N, C_in k, T)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype, device=rows.device)], dim=1)


def conv_local_coefficients(block: nn.Module, z: torch.Tensor, phi: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """(c (R, C_out), P~ (R, fan_in + 1)) with R = N x positions; z: the block's input (N, ...)."""
    parts = _parts(block)
    if parts is None:
        raise ValueError("closed form needs a Linear or zero-padded, ungrouped convolution with a bias and an "
                         "elementwise activation")
    layer, act = parts
    zt = patch_rows(layer, z.detach())
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    u = zt[:, :-1] @ w.T + layer.bias.detach()
    c = phi_coefficients(u, act, phi if phi != "mean" else "sum")
    if phi == "mean":  # the mean over all C_out x positions entries of one point
        c = c / (u.numel() // z.shape[0])
    return c, zt


def conv_local_spectrum(block: nn.Module, z: torch.Tensor, phi: str = "sum") -> tuple[torch.Tensor, float | None, int]:
    """All C_out (fan_in + 1) eigenvalues (ascending), the bias share and the number of patch rows."""
    c, zt = conv_local_coefficients(block, z, phi)
    values, bias = block_diagonal_spectrum(c, zt, z.shape[0])
    return values, bias, zt.shape[0]


def conv_local_is_zero(block: nn.Module, phi: str) -> bool:
    """Linear phi and A'' = 0 (ReLU, identity): the local Hessian vanishes identically."""
    parts = _parts(block)
    return parts is not None and phi in ("sum", "mean") and parts[1] in ("relu", "identity")
