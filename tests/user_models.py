"""Model factories a user might write, for the tests of ``family = "custom"`` and ``pipeline measure``.

Each is called as build(input_shape, output_size) and returns an nn.Module from (N, *input_shape)
to (N, output_size). ``residual_cnn`` reads the features as a square image (digits' 61, zero-padded
to 8 x 8) through a convolution stem, one residual block of two convolutions with batch norm, and a linear head; its
``bad_*`` siblings are the factories the error tests expect to be refused.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.tanh(self.bn1(self.conv1(x)))))


class ResidualCNN(nn.Module):
    def __init__(self, d: int, output_size: int, channels: int = 4):
        super().__init__()
        self.side = side = math.ceil(math.sqrt(d))
        self.pad = side * side - d
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.act = nn.Tanh()
        self.res = ResidualBlock(channels)
        self.head = nn.Linear(channels * side * side, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (0, self.pad))
        h = self.act(self.stem(x.reshape(x.shape[0], 1, self.side, self.side)))
        return self.head(self.res(h).flatten(1))


def residual_cnn(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return ResidualCNN(input_shape[0], output_size)


def tiny_mlp(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return nn.Sequential(nn.Linear(input_shape[0], 6), nn.Sigmoid(), nn.Linear(6, output_size))


def bad_shape(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return nn.Linear(input_shape[0], output_size + 1)


class _Argmax(nn.Module):
    def __init__(self, d: int, m: int):
        super().__init__()
        self.linear = nn.Linear(d, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(self.linear(x).argmax(1), self.linear.out_features).float()


def bad_argmax(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return _Argmax(input_shape[0], output_size)


def not_a_module(input_shape: tuple[int, ...], output_size: int):
    return "a model"


class TokenAttention(nn.Module):
    """Every feature a token, torch's own ``nn.MultiheadAttention`` (a leaf of the fx graph that
    returns a tuple) over them, a frozen embedding scale, and a linear head."""

    def __init__(self, d: int, output_size: int, width: int = 4):
        super().__init__()
        self.embed = nn.Linear(1, width)
        self.scale = nn.Parameter(torch.ones(width), requires_grad=False)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.head = nn.Linear(width * d, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.unsqueeze(-1)) * self.scale
        a = self.attn(t, t, t)[0]
        return self.head(torch.tanh(a).flatten(1))


def token_attention(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return TokenAttention(input_shape[0], output_size)


#: Every input batch a ``recording_cnn`` model was called with (outside torch.func transforms).
SEEN: list[torch.Tensor] = []


class SmallImageCNN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], output_size: int):
        super().__init__()
        c, h, w = input_shape
        self.conv = nn.Conv2d(c, 3, 3, padding=1)
        self.act = nn.Tanh()
        self.head = nn.Linear(3 * h * w, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).flatten(1))


def recording_cnn(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    """A CNN on images (C, H, W) that records the inputs it is called with in ``SEEN``."""
    model = SmallImageCNN(input_shape, output_size)

    def record(_module, args):
        x = args[0]
        if isinstance(x, torch.Tensor) and not torch._C._functorch.is_functorch_wrapped_tensor(x):
            SEEN.append(x.detach().clone())

    model.register_forward_pre_hook(record)
    return model
