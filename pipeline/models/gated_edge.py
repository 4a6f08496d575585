"""Gated edges: extra paths added to a network of blocks without changing what it computes.

An edge (src, dst) carries the representation h_src (the output of block ``src``; ``src = -1`` is the
network input x) into the input of block ``dst`` (``dst = L``, the number of blocks, is the network
output): z_dst <- z_dst + g * P(h_src). The gate g is a learnable scalar that starts at 0, so at
insertion z_dst is unchanged bit for bit, and so are the outputs, the loss and the Hessian of the
original blocks; gradient descent opens it if the path helps.

kinds:
- ``skip``: P = identity when the widths agree, else a bias-free Linear d_src -> d_dst (Kaiming
  normal, so P h_src has the scale of h_src);
- ``adapter``: P = Linear(d_src, r) -> activation -> Linear(r, d_dst), a bottleneck branch; an
  adapter "at block j" is the edge (j - 1, j + 1), parallel to block j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

EDGE_KINDS = ("skip", "adapter")
#: Width of an adapter's bottleneck: r = max(ADAPTER_MIN_RANK, min(d_src, d_dst) // 4).
ADAPTER_MIN_RANK = 4


@dataclass(frozen=True, order=True)
class EdgeSpec:
    """An added edge: from the output of block ``src`` into the input of block ``dst``."""

    src: int
    dst: int
    kind: str = "skip"

    @property
    def key(self) -> str:
        """Its module name under ``skips`` (no dots: ``nn.ModuleDict`` keys cannot hold them)."""
        source = "input" if self.src < 0 else str(self.src)
        return f"{self.kind}_{source}_to_{self.dst}"

    def validate(self, n_blocks: int) -> None:
        if self.kind not in EDGE_KINDS:
            raise ValueError(f"edge kind {self.kind!r} is not one of {', '.join(EDGE_KINDS)}")
        if not (-1 <= self.src and self.src + 2 <= self.dst <= n_blocks):
            raise ValueError(f"edge {self.src}->{self.dst} must skip at least one of the {n_blocks} blocks "
                             f"(-1 <= src, src + 2 <= dst <= {n_blocks})")


class GatedEdge(nn.Module):
    """h_src (N, d_src) -> g * P(h_src) (N, d_dst), g a scalar parameter initialized at 0."""

    def __init__(self, d_src: int, d_dst: int, kind: str = "skip", activation: nn.Module | None = None):
        super().__init__()
        self.kind = kind
        self.gate = nn.Parameter(torch.zeros(()))
        if kind == "skip":
            self.proj = nn.Identity() if d_src == d_dst else nn.Linear(d_src, d_dst, bias=False)
        elif kind == "adapter":
            rank = max(ADAPTER_MIN_RANK, min(d_src, d_dst) // 4)
            self.proj = nn.Sequential(nn.Linear(d_src, rank), activation or nn.ReLU(), nn.Linear(rank, d_dst))
        else:
            raise ValueError(f"edge kind {kind!r} is not one of {', '.join(EDGE_KINDS)}")
        for m in self.proj.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.in_features))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.gate * self.proj(h)
