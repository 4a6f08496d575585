"""The block graph of a network: its parameter groups and the computational paths between them.

A *block* is a named submodule whose parameters form one group theta_i of the coupling map (for an
MLP, ``blocks.i``: its Linear and normalization). Block i *feeds* block j when a computation that
reads theta_i reaches one that reads theta_j without passing through a third block; the relation is
read off the torch.fx graph of the model, so any traceable topology works (chains, residual streams,
gated edges, convolutional stacks, attention). ``path_length[i, j]`` is the fewest block-to-block
hops from i to j (0 on the diagonal, -1 when no path), from a breadth-first search.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch.fx
from torch import nn


@dataclass(frozen=True)
class BlockGraph:
    """names[i]: the module path of block i (forward order); params[i]: its parameter names (full
    paths in ``model.named_parameters()``); successors[i]: the blocks it feeds directly."""

    names: tuple[str, ...]
    params: tuple[tuple[str, ...], ...]
    successors: tuple[tuple[int, ...], ...]

    @property
    def n_blocks(self) -> int:
        return len(self.names)

    def path_lengths(self) -> np.ndarray:
        """(B, B) int matrix: hops on the shortest directed path i -> j; 0 on the diagonal, -1 if none."""
        n = self.n_blocks
        out = np.full((n, n), -1, dtype=np.int64)
        for s in range(n):
            out[s, s] = 0
            queue = deque([s])
            while queue:
                u = queue.popleft()
                for v in self.successors[u]:
                    if out[s, v] < 0:
                        out[s, v] = out[s, u] + 1
                        queue.append(v)
        return out

    def pair_lengths(self) -> np.ndarray:
        """Symmetric (B, B): the path length between i and j in whichever direction one exists."""
        d = self.path_lengths()
        return np.where(d >= 0, d, d.T)

    def rows(self) -> list[dict]:
        """Rows of the ``blocks`` table."""
        return [{"block_index": i, "name": n, "parameters": list(p), "successors": list(s)}
                for i, (n, p, s) in enumerate(zip(self.names, self.params, self.successors, strict=True))]


def _owner(target: str, names: tuple[str, ...]) -> int | None:
    for i, name in enumerate(names):
        if target == name or target.startswith(name + "."):
            return i
    return None


_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class _DropoutLeafTracer(torch.fx.Tracer):
    """fx's default tracer with every dropout module a leaf, subclasses included (such as the MLP's
    ``HostDrawnDropout``): tracing through one would bake its train/eval branch into the graph."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _DROPOUTS) or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    tracer = _DropoutLeafTracer()
    graph = tracer.trace(model)
    return torch.fx.GraphModule(tracer.root, graph)


def trace_block_graph(model: nn.Module, block_names: list[str] | tuple[str, ...]) -> BlockGraph:
    """The BlockGraph of ``model`` over the submodules ``block_names`` (in forward order).

    Each fx node that calls a module or reads a parameter inside block i belongs to i. From every
    node of block i the search follows the node's users; reaching a node of another block j records
    i -> j and stops there, and nodes of no block (additions, gates, reshapes) are passed through.
    """
    names = tuple(block_names)
    gm = _trace(model)
    owner: dict[torch.fx.Node, int] = {}
    for node in gm.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            i = _owner(str(node.target), names)
            if i is not None:
                owner[node] = i
    succ: list[set[int]] = [set() for _ in names]
    for node, i in owner.items():
        seen, queue = set(), deque(node.users)
        while queue:
            user = queue.popleft()
            if user in seen:
                continue
            seen.add(user)
            j = owner.get(user)
            if j is None:
                queue.extend(user.users)
            elif j != i:
                succ[i].add(j)
            # a later node of block i itself: the search from that node covers what follows it
    params = tuple(tuple(n for n, p in model.named_parameters() if _owner(n, names) == i and p.requires_grad)
                   for i in range(len(names)))
    for i, p in enumerate(params):
        if not p:
            raise ValueError(f"block {names[i]!r} has no trainable parameters")
    return BlockGraph(names, params, tuple(tuple(sorted(s)) for s in succ))


#: A model built by a user's factory carries the block list its run named under this attribute.
BLOCKS_ATTRIBUTE = "atlas_block_names"


def block_names(model: nn.Module) -> list[str]:
    """The blocks of ``model`` in forward order: the list a factory run named (``BLOCKS_ATTRIBUTE``),
    else the model's own ``block_names()`` (the built-in families), else :func:`default_blocks`."""
    named = getattr(model, BLOCKS_ATTRIBUTE, None)
    if named:
        return list(named)
    if callable(getattr(model, "block_names", None)):
        return list(model.block_names())
    return default_blocks(model)


def default_blocks(model: nn.Module) -> list[str]:
    """The modules the fx graph calls (its leaves: Linear, convolutions, norms, embeddings,
    ``nn.MultiheadAttention`` as a whole) that hold trainable parameters, and the owners of parameters
    read directly (``get_attr``), in the order the graph first uses them; every trainable parameter
    must fall in one of them (the root's own parameters cannot)."""
    gm = _trace(model)
    modules = dict(model.named_modules())

    def trainable(name: str) -> bool:
        return name in modules and any(p.requires_grad for p in modules[name].parameters())

    order: list[str] = []
    for node in gm.graph.nodes:
        target = str(node.target)
        if node.op == "call_module":
            owner = target
        elif node.op == "get_attr" and "." in target:
            owner = target.rsplit(".", 1)[0]
        else:
            continue
        if trainable(owner) and owner not in order and not any(owner.startswith(o + ".") for o in order):
            order.append(owner)
    covered = {n for n, p in model.named_parameters() if p.requires_grad
               and any(n.startswith(o + ".") for o in order)}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in covered]
    if missing:
        raise ValueError(f"parameter {missing[0]!r} is in no module the traced forward pass calls")
    return order
