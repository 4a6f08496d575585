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


class TabularViT(nn.Module):
    """A ViT-style classifier over feature tokens: a CLS token and a positional embedding held by the
    model itself (the root's own parameters), torch's ``nn.TransformerEncoder``, a linear head."""

    def __init__(self, d: int, output_size: int, width: int = 4):
        super().__init__()
        self.tokens = nn.Linear(1, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(0.1 * torch.randn(1, d + 1, width))
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x.unsqueeze(-1))
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], 1) + self.pos_embed
        return self.head(self.encoder(t)[:, 0])


def tabular_vit(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return TabularViT(input_shape[0], output_size)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: conv-bn-relu-conv-bn, plus the input (projected when the
    shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class SmallResNet(nn.Module):
    """torchvision's ResNet layout at toy width: conv1, bn1, layer1, layer2, global pooling, fc."""

    def __init__(self, output_size: int, channels: int = 4, side: int = 8, tabular: bool = False):
        super().__init__()
        self.side, self.tabular = side, tabular
        self.conv1 = nn.Conv2d(1, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(BasicBlock(channels, channels))
        self.layer2 = nn.Sequential(BasicBlock(channels, 2 * channels, stride=2))
        self.fc = nn.Linear(2 * channels, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tabular:  # a table of up to side^2 features, read as an image
            x = nn.functional.pad(x, (0, self.side * self.side - x.shape[1])).reshape(-1, 1, self.side, self.side)
        h = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(h.mean((2, 3)))


def small_resnet(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return SmallResNet(output_size, tabular=len(input_shape) == 1)


class _FixedBatch(nn.Module):
    def __init__(self, d: int, m: int):
        super().__init__()
        self.linear = nn.Linear(d, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).reshape(2, -1)  # right for the factory check's batch of 2 only


def fixed_batch(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return _FixedBatch(input_shape[0], output_size)


class TiedMLP(nn.Module):
    """Two hidden Linear maps sharing one weight (as a language model ties its embedding and output
    layer): its state dict names the tensor twice, ``safetensors.torch.save_model`` stores it once."""

    def __init__(self, d: int, output_size: int):
        super().__init__()
        self.a = nn.Linear(d, d)
        self.b = nn.Linear(d, d)
        self.b.weight = self.a.weight
        self.head = nn.Linear(d, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


def tied_mlp(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return TiedMLP(input_shape[0], output_size)


class TiedStack(nn.Module):
    """A GPT-like layout over feature tokens: layers in an ``nn.ModuleList``, a positional embedding
    module whose weight the model reads (its forward never runs), an output map tied to the input map,
    and a learned logit scale held by the model and used last."""

    def __init__(self, d: int, width: int = 4):
        super().__init__()
        self.tokens = nn.Linear(1, width, bias=False)
        self.pos = nn.Embedding(d, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(2)])
        self.unembed = nn.Linear(width, 1, bias=False)
        self.head = nn.Linear(d, 3, bias=False)
        self.head2 = nn.Linear(d, 3, bias=False)
        self.head2.weight = self.head.weight  # tied: named once, under head
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x.unsqueeze(-1)) + self.pos.weight
        for layer in self.layers:
            t = t + torch.tanh(layer(t))
        h = self.unembed(t).squeeze(-1)
        return (self.head(h) + self.head2(torch.tanh(h))) * self.scale


def tied_stack(input_shape: tuple[int, ...], output_size: int) -> nn.Module:
    return TiedStack(input_shape[0])


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
