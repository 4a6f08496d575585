"""The weight matrices of a block: which of its tensors are matrices, how each reads as one, and how a
packed attention projection splits into the matrices it stacks.

- A *weight tensor* has two or more axes and a name not ending in ``bias``. It reads as the matrix
  ``W.reshape(W.shape[0], -1)``: its first axis (a neuron, an output channel, a projection's output)
  against all the others, so a convolution kernel is out_channels x (in_channels k...).
- A *packed projection* is a weight tensor named ``in_proj_weight`` (``nn.MultiheadAttention``) or
  ``qkv.weight`` whose rows are a multiple of 3: it stacks the query, key and value projections row-wise,
  ``W = [W_q; W_k; W_v]``, and splits into the parts ``q``, ``k``, ``v`` (rows ``[0, r)``, ``[r, 2r)``,
  ``[2r, 3r)``, ``r = W.shape[0] / 3``). Every other weight tensor is one part, ``all``.
- The *principal* tensor of a block is its weight tensor with the most entries (the alphabetically first
  name on ties): the one ``layers`` and ``layer_stats`` describe.

Pure functions of names and shapes, so that extraction (torch tensors) and the analyses (NumPy arrays
read from ``weights``) cut a tensor into the same matrices. They are not given the same tensors:
extraction reads a block's trainable parameters (``matrix_spectra`` needs a gradient), the topology
stage every tensor the block stores (``weights``: frozen parameters and buffers too), so a frozen
weight matrix has a cloud but no ``matrix_spectra`` row, and can be the principal one there only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The parts of a packed projection, in row order.
PACKED_PARTS = ("q", "k", "v")
#: The part name of a weight tensor that is one matrix.
WHOLE = "all"


def is_weight_tensor(name: str, shape: Sequence[int]) -> bool:
    """Whether a tensor of this name and shape is a weight matrix (2+ axes, not ``*bias``)."""
    return len(shape) >= 2 and not name.endswith("bias")


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, columns) of a weight tensor read as a matrix: shape[0] x prod(shape[1:])."""
    return int(shape[0]), math.prod(int(s) for s in shape[1:])


def is_packed_projection(name: str, shape: Sequence[int]) -> bool:
    """Whether a weight tensor stacks Q, K and V row-wise (see the module docstring)."""
    path = name.split(".")
    packed_name = path[-1] == "in_proj_weight" or path[-2:] == ["qkv", "weight"]
    return packed_name and is_weight_tensor(name, shape) and shape[0] % 3 == 0


def matrix_parts(name: str, shape: Sequence[int]) -> list[tuple[str, slice]]:
    """The matrices a weight tensor holds, as (part, row slice of its matrix reading): three for a
    packed projection, ``[("all", slice(0, rows))]`` otherwise."""
    rows = int(shape[0])
    if is_packed_projection(name, shape):
        r = rows // 3
        return [(part, slice(k * r, (k + 1) * r)) for k, part in enumerate(PACKED_PARTS)]
    return [(WHOLE, slice(0, rows))]


def principal_tensor(tensors: Sequence[tuple[str, Sequence[int]]]) -> int | None:
    """Index in ``tensors`` ((name, shape) pairs of one block) of its principal weight tensor; None when
    the block has no weight tensor (only vectors)."""
    candidates = [k for k, (n, s) in enumerate(tensors) if is_weight_tensor(n, s)]
    return min(candidates, key=lambda k: (-math.prod(tensors[k][1]), tensors[k][0])) if candidates else None
