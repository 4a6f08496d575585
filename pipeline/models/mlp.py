"""MLPs as directed acyclic graphs of blocks C_i = (P_i, A_i): a Linear map, an optional
normalization, an activation.

The plain MLP is a chain. Two kinds of extra edges make it a DAG:
- ``residual="every"`` (the template): h_i = z_i + C_i(z_i) at every block whose input and output
  widths agree (the hidden-to-hidden blocks; the first and the output block stay plain);
- gated edges (``pipeline.models.gated_edge``): z_dst <- z_dst + g * P(h_src), added at the start or
  during training (skip-connection synthesis), each with its gate at 0 when added.
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

from pipeline.models.gated_edge import EdgeSpec, GatedEdge
from pipeline.runspec import RunSpec


def host_drawn_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout whose mask m ~ Bernoulli(1 - p) / (1 - p), of x's shape and memory layout, is drawn
    from the CPU's default generator and moved to x's device: x * m (zeros when p = 1). On the CPU
    this is ``F.dropout``'s own draw, bit for bit; on a GPU it keeps a run's masks those of the CPU
    run of the same seed (``F.dropout`` there would draw them from the CUDA generator, another
    stream), at the price of one host-to-device copy of the mask per dropout layer and step."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    mask = torch.empty_like(x, device="cpu").bernoulli_(1 - p).div_(1 - p)
    return x * mask.to(x.device)


class HostDrawnDropout(nn.Dropout):
    """``nn.Dropout`` with its mask drawn on the CPU (``host_drawn_dropout``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return host_drawn_dropout(x, self.p, self.training)


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
        self.dropout = HostDrawnDropout(dropout) if dropout > 0 else nn.Identity()

    def preactivation(self, z: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.activation(self.preactivation(z)))


@dataclass(frozen=True)
class Intermediates:
    """Per block i: inputs[i] (N, d_i) feeding it (edges included) and preacts[i] (N, q_i) entering
    its activation; outputs[i] (N, q_i) is h_i, what leaves the block (its residual included)."""

    inputs: list[torch.Tensor]
    preacts: list[torch.Tensor]
    outputs: list[torch.Tensor]
    output: torch.Tensor


class MLP(nn.Module):
    def __init__(self, d_in: int, widths: tuple[int, ...], d_out: int, activation: str = "relu",
                 norm: str = "none", dropout: float = 0.0, residual: str = "none"):
        super().__init__()
        dims = [d_in, *widths]
        blocks = [Block(a, b, activation, norm, dropout) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        blocks.append(Block(dims[-1], d_out, "identity", "none", 0.0))
        self.blocks = nn.ModuleList(blocks)
        self.dims = (*dims, d_out)
        self.activation_name = activation
        #: block i adds its input to its output (the residual template)
        self.residual_at = tuple(residual == "every" and 0 < i < len(blocks) - 1 and dims[i] == dims[i + 1]
                                 for i in range(len(blocks)))
        self.skips = nn.ModuleDict()
        self.edges: list[EdgeSpec] = []

    def width_in(self, dst: int) -> int:
        """Width of the input of block ``dst`` (dst = n_blocks: the network output)."""
        return self.dims[dst]

    def width_out(self, src: int) -> int:
        """Width of h_src (src = -1: the network input)."""
        return self.dims[src + 1]

    def add_edges(self, edges: list[EdgeSpec], seed: int) -> list[nn.Parameter]:
        """Insert gated edges (gates at 0, projections drawn from ``seed``); returns their parameters."""
        new = []
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for edge in edges:
                edge.validate(len(self.blocks))
                if edge.key in self.skips:
                    raise ValueError(f"edge {edge.key} is already in the model")
                module = GatedEdge(self.width_out(edge.src), self.width_in(edge.dst), edge.kind,
                                   activation_module(self.activation_name))
                module.to(dtype=next(self.parameters()).dtype, device=next(self.parameters()).device)
                self.skips[edge.key] = module
                self.edges.append(edge)
                new.extend(module.parameters())
        return new

    def _incoming(self, dst: int, z: torch.Tensor, h: dict[int, torch.Tensor]) -> torch.Tensor:
        for edge in self.edges:
            if edge.dst == dst:
                z = z + self.skips[edge.key](h[edge.src])
        return z

    def representations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x, h_0, ..., h_{L-1}]: the input and every block's output; h_{L-1} (with any edge into the
        output added) is the network output."""
        return self._run(x, None)

    def _run(self, x: torch.Tensor, record: tuple[list, list] | None) -> list[torch.Tensor]:
        h = {-1: x}
        z = x
        for i, block in enumerate(self.blocks):
            z = self._incoming(i, z, h)
            if record is None:
                out = block(z)
            else:
                record[0].append(z)
                u = block.preactivation(z)
                record[1].append(u)
                out = block.dropout(block.activation(u))
            if self.residual_at[i]:
                out = out + z
            h[i] = z = out
        h[len(self.blocks) - 1] = self._incoming(len(self.blocks), z, h)
        return [h[i] for i in range(-1, len(self.blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.edges and not any(self.residual_at):
            for block in self.blocks:  # the plain chain: the same operations as before DAGs existed
                x = block(x)
            return x
        return self.representations(x)[-1]

    def intermediates(self, x: torch.Tensor) -> Intermediates:
        """One forward pass recording each block's input, pre-activation and output."""
        inputs, preacts = [], []
        reps = self._run(x, (inputs, preacts))
        return Intermediates(inputs, preacts, reps[1:], reps[-1])

    @property
    def linears(self) -> list[nn.Linear]:
        return [b.linear for b in self.blocks]

    def block_names(self) -> list[str]:
        """The coupling blocks: ``blocks.i`` (gated edges are not blocks of their own)."""
        return [f"blocks.{i}" for i in range(len(self.blocks))]


def build_model(spec: RunSpec, d_in: int, d_out: int) -> MLP:
    """The run's network, initialized from ``torch.manual_seed(spec.seed)``."""
    torch.manual_seed(spec.seed)
    model = MLP(d_in, spec.widths, d_out, spec.activation, spec.norm, spec.dropout, spec.residual)
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
