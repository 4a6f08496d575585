"""A small convolutional network: a stack of convolution blocks and a linear head.

Input rows of d features are read as a 1-D signal of length d with one channel (``dims=1``), or
as an image of ``image_shape`` (``dims=2``; the 64 features of ``digits`` are its 8 x 8 pixels).
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
                 activation: str = "relu", image_shape: tuple[int, int] | None = None):
        super().__init__()
        if dims == 2:
            side = int(round(math.sqrt(d_in)))
            image_shape = image_shape or (side, side)
            if image_shape[0] * image_shape[1] != d_in:
                raise ValueError(f"a 2-D CNN needs image_shape with {d_in} pixels, got {image_shape}")
        elif dims != 1:
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        self.dims, self.d_in = dims, d_in
        self.image_shape = tuple(image_shape) if dims == 2 else (d_in,)
        c = [1, *channels]
        self.convs = nn.ModuleList(ConvBlock(a, b, kernel, dims, activation)
                                   for a, b in zip(c[:-1], c[1:], strict=True))
        self.head = nn.Linear(channels[-1] * d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, *self.image_shape)
        for block in self.convs:
            h = block(h)
        return self.head(h.flatten(1))

    def block_names(self) -> list[str]:
        return [f"convs.{i}" for i in range(len(self.convs))] + ["head"]
