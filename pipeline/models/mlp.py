"""MLPs as chains of blocks C_i = (P_i, A_i): a Linear map, an optional normalization, an activation.

``layer_index`` i is the position of block i's Linear in forward order (0 = first hidden layer,
the last index = the output layer, whose activation is the identity and which has no norm or
dropout). The pre-activation u_i is the Linear output after the normalization (in eval mode for
analysis), i.e. exactly what the activation A_i receives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.runspec import RunSpec


def activation_module(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
            "identity": nn.Identity}[name]()


class Block(nn.Module):
    """C_i: z -> dropout(A(norm(W z + b)))."""

    def __init__(self, d_in: int, d_out: int, activation: str, norm: str, dropout: float):
        super().__init__()
        self.activation_name = activation
        self.norm_name = norm
        self.linear = nn.Linear(d_in, d_out)
        self.norm = {"none": nn.Identity, "batchnorm": nn.BatchNorm1d,
                     "layernorm": nn.LayerNorm}[norm](d_out) if norm != "none" else nn.Identity()
        self.activation = activation_module(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def preactivation(self, z: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.activation(self.preactivation(z)))


@dataclass(frozen=True)
class Intermediates:
    """Per block i: inputs[i] (N, d_i) feeding it and preacts[i] (N, q_i) entering its activation."""

    inputs: list[torch.Tensor]
    preacts: list[torch.Tensor]
    output: torch.Tensor


class MLP(nn.Module):
    def __init__(self, d_in: int, widths: tuple[int, ...], d_out: int, activation: str = "relu",
                 norm: str = "none", dropout: float = 0.0):
        super().__init__()
        dims = [d_in, *widths]
        blocks = [Block(a, b, activation, norm, dropout) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        blocks.append(Block(dims[-1], d_out, "identity", "none", 0.0))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def intermediates(self, x: torch.Tensor) -> Intermediates:
        """One forward pass recording each block's input and pre-activation."""
        inputs, preacts = [], []
        for block in self.blocks:
            inputs.append(x)
            u = block.preactivation(x)
            preacts.append(u)
            x = block.dropout(block.activation(u))
        return Intermediates(inputs, preacts, x)

    @property
    def linears(self) -> list[nn.Linear]:
        return [b.linear for b in self.blocks]


def build_model(spec: RunSpec, d_in: int, d_out: int) -> MLP:
    """The run's network, initialized from ``torch.manual_seed(spec.seed)``."""
    torch.manual_seed(spec.seed)
    model = MLP(d_in, spec.widths, d_out, spec.activation, spec.norm, spec.dropout)
    initialize(model, spec.init, spec.activation)
    return model


def initialize(model: MLP, scheme: str, activation: str) -> None:
    """kaiming: N(0, gain^2 / fan_in) with the activation's gain; xavier: Glorot normal;
    normal: N(0, 0.05^2). Biases start at zero in every scheme."""
    gain_name = {"relu": "relu", "gelu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}[activation]
    for i, lin in enumerate(model.linears):
        last = i == len(model.linears) - 1
        with torch.no_grad():
            if scheme == "kaiming":
                gain = 1.0 if last else nn.init.calculate_gain(gain_name)
                lin.weight.normal_(0.0, gain / math.sqrt(lin.in_features))
            elif scheme == "xavier":
                nn.init.xavier_normal_(lin.weight)
            elif scheme == "normal":
                lin.weight.normal_(0.0, 0.05)
            else:
                raise ValueError(f"unknown init {scheme!r}")
            lin.bias.zero_()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
