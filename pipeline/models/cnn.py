"""A small convolutional network: a stack of convolution blocks and a linear head.

Inputs of ``input_shape`` (C, T) (``dims=1``) or (C, H, W) (``dims=2``) are read as they are: signals
or images of C channels. Input rows of d features (a table) are read as a 1-D signal of length d with
one channel (``dims=1``), or
as an image of ``image_shape`` (``dims=2``): feature k lands on pixel ``pixels[k]`` (row-major
flat index; default k), the others stay 0. ``digits`` keeps 61 of its 8 x 8 pixels (preprocessing
drops constant columns), and its names ``pixel_<row>_<col>`` place them (:func:`pixel_layout`).
Block i (``convs.i``) is Conv(k, padding k//2) -> activation; the head (``head``) flattens and
applies a Linear map. Blocks, in forward order: ``convs.0``, ..., ``head``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.mlp import activation_module


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dims: int, activation: str):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.conv = conv(c_in, c_out, kernel, padding=kernel // 2)
        self.activation = activation_module(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(x))


class SmallCNN(nn.Module):
    def __init__(self, d_in: int, d_out: int, channels: tuple[int, ...] = (8, 8), kernel: int = 3, dims: int = 1,
                 activation: str = "relu", image_shape: tuple[int, int] | None = None,
                 pixels: list[int] | None = None, input_shape: tuple[int, ...] | None = None):
        super().__init__()
        c_in = 1
        if input_shape is not None:
            if len(input_shape) != dims + 1:
                raise ValueError(f"a {dims}-D CNN reads inputs of shape (C, {'H, W' if dims == 2 else 'T'}), got "
                                 f"{tuple(input_shape)}")
            c_in, image_shape = int(input_shape[0]), tuple(int(k) for k in input_shape[1:])
        elif dims == 2:
            side = int(round(math.sqrt(d_in)))
            image_shape = tuple(image_shape or (side, side))
            pixels = list(range(d_in)) if pixels is None else list(pixels)
            n = image_shape[0] * image_shape[1]
            if len(pixels) != d_in or len(set(pixels)) != d_in or not all(0 <= k < n for k in pixels):
                raise ValueError(f"a 2-D CNN needs {d_in} distinct pixels of its {image_shape} image")
            # features -> image as one matrix product (no in-place scatter, so fx and forward-mode AD see
            # a plain function)
            scatter = torch.zeros(d_in, n)
            scatter[torch.arange(d_in), torch.tensor(pixels)] = 1.0
            self.register_buffer("scatter", scatter)
        elif dims != 1:
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        self.dims = dims
        self.tabular = input_shape is None
        self.in_channels = c_in
        self.image_shape = image_shape if dims == 2 or not self.tabular else (d_in,)
        c = [c_in, *channels]
        self.convs = nn.ModuleList(ConvBlock(a, b, kernel, dims, activation)
                                   for a, b in zip(c[:-1], c[1:], strict=True))
        self.head = nn.Linear(channels[-1] * math.prod(self.image_shape), d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tabular and self.dims == 2:
            x = x @ self.scatter
        h = x.reshape(x.shape[0], self.in_channels, *self.image_shape)
        for block in self.convs:
            h = block(h)
        return self.head(h.flatten(1))

    def block_names(self) -> list[str]:
        return [f"convs.{i}" for i in range(len(self.convs))] + ["head"]


def pixel_layout(feature_names: list[str] | tuple[str, ...]) -> tuple[tuple[int, int], list[int]] | None:
    """(image shape, flat pixel index per feature) from names ending in ``_<row>_<col>``; None if any
    name does not."""
    coords = []
    for name in feature_names:
        parts = name.rsplit("_", 2)
        if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
            return None
        coords.append((int(parts[1]), int(parts[2])))
    rows = max(r for r, _ in coords) + 1
    cols = max(c for _, c in coords) + 1
    side = max(rows, cols)  # the kept pixels may miss a border row or column: assume a square image
    return (side, side), [r * side + c for r, c in coords]
