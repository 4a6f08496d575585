"""A small Transformer encoder over tabular rows (every feature is a token) or token ids.

- ``embed``: on a table, token k of row x is x_k * E_k + c_k (E, c: (d, d_model)), as in
  feature-tokenizing tabular transformers; on token ids (N, T) of a vocabulary of V, an
  ``nn.Embedding`` (V, d_model), followed by
- ``position``: a learned positional embedding P (T, d_model) added to the tokens (token ids only);
- ``layers.l.attn``: pre-norm multi-head self-attention, t <- t + W_o softmax(Q K^T / sqrt(d_h)) V;
- ``layers.l.mlp``: pre-norm feed-forward, t <- t + W_2 act(W_1 LN(t));
- ``head``: LayerNorm of the mean token, then a Linear map to the outputs.

The residual stream makes it a DAG of blocks: every sublayer feeds every later one directly.
Attention is written out (no fused kernel) so that torch.fx traces it and forward-mode AD
(Hessian-vector products by forward-over-reverse) runs through it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.mlp import activation_module


class FeatureTokens(nn.Module):
    def __init__(self, d_in: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_in, d_model) / math.sqrt(d_model))
        self.bias = nn.Parameter(torch.zeros(d_in, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) * self.weight + self.bias  # (N, d, d_model)


class PositionalEmbedding(nn.Module):
    def __init__(self, length: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(length, d_model) / math.sqrt(d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.weight


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.heads, self.d_head = heads, d_model // heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        n, s, d = t.shape
        q, k, v = self.qkv(self.norm(t)).reshape(n, s, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_head), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(n, s, d))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, activation: str):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, hidden)
        self.activation = activation_module(activation)
        self.down = nn.Linear(hidden, d_model)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(self.norm(t))))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, hidden: int, activation: str):
        super().__init__()
        self.attn = SelfAttention(d_model, heads)
        self.mlp = FeedForward(d_model, hidden, activation)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t + self.attn(t)
        return t + self.mlp(t)


class Head(nn.Module):
    def __init__(self, d_model: int, d_out: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear = nn.Linear(d_model, d_out)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(t.mean(dim=1)))


class SmallTransformer(nn.Module):
    def __init__(self, d_in: int, d_out: int, d_model: int = 16, heads: int = 2, layers: int = 2,
                 hidden: int = 32, activation: str = "gelu", vocab_size: int = 0):
        super().__init__()
        if vocab_size:  # token ids (N, d_in) below vocab_size
            self.embed = nn.Embedding(vocab_size, d_model)
            self.position = PositionalEmbedding(d_in, d_model)
        else:
            self.embed = FeatureTokens(d_in, d_model)
            self.position = None
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, hidden, activation) for _ in range(layers))
        self.head = Head(d_model, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x)
        if self.position is not None:
            t = self.position(t)
        for layer in self.layers:
            t = layer(t)
        return self.head(t)

    def block_names(self) -> list[str]:
        names = ["embed"] if self.position is None else ["embed", "position"]
        for i in range(len(self.layers)):
            names += [f"layers.{i}.attn", f"layers.{i}.mlp"]
        return [*names, "head"]
