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


#: The suffix of a block of a module's own parameters: ``(own)`` for the root's (a ViT's ``cls_token``
#: and ``pos_embed``, a tokenizer's weights held by the model itself), ``encoder.(own)`` for those of
#: ``encoder``, a module whose children hold parameters too.
OWN = "(own)"


def own_block(module_path: str) -> str:
    """The name of the block of ``module_path``'s own parameters (``""``: the root)."""
    return f"{module_path}.{OWN}" if module_path else OWN


def own_block_owner(name: str) -> str | None:
    """The module path whose own parameters block ``name`` is (``""``: the root); None for a module block."""
    if name == OWN:
        return ""
    return name[: -len(OWN) - 1] if name.endswith("." + OWN) else None


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _module_owner(target: str, names: tuple[str, ...]) -> int | None:
    """The module block holding module or tensor path ``target`` (the deepest, when blocks nest)."""
    best, depth = None, -1
    for i, name in enumerate(names):
        if own_block_owner(name) is None and (target == name or target.startswith(name + ".")):
            if name.count(".") > depth:
                best, depth = i, name.count(".")
    return best


def parameter_owner(param: str, names: tuple[str, ...]) -> int | None:
    """The block parameter ``param`` belongs to: the block of its module's own parameters when that is
    one of ``names``, else the deepest module block holding it, else None."""
    own = own_block(_parent(param))
    if own in names:
        return names.index(own)
    return _module_owner(param, names)


def block_parameter_names(model: nn.Module, names: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], ...]:
    """Per block, the full paths of its trainable parameters (``model.named_parameters()`` order)."""
    names = tuple(names)
    owners = [(n, parameter_owner(n, names)) for n, p in model.named_parameters() if p.requires_grad]
    return tuple(tuple(n for n, i in owners if i == k) for k in range(len(names)))


def output_block(names: list[str] | tuple[str, ...]) -> int:
    """The index of the block whose output the model's outputs are read at: the last module block (a
    block of a module's own parameters, such as a learned logit scale used last, has no output)."""
    modules = [i for i, n in enumerate(names) if own_block_owner(n) is None]
    return modules[-1] if modules else len(names) - 1


def block_module(model: nn.Module, name: str) -> nn.Module | None:
    """The module block ``name`` is; None for a block of a module's own parameters (no module of its own)."""
    return None if own_block_owner(name) is not None else model.get_submodule(name)


def block_prefix(name: str) -> str:
    """What a block's parameter paths are relative to: its module path, or its owner's."""
    owner = own_block_owner(name)
    return name if owner is None else owner


def relative_name(param: str, block: str) -> str:
    """``param``'s path inside ``block`` (``layer1.0.conv1.weight`` in ``layer1`` -> ``0.conv1.weight``)."""
    prefix = block_prefix(block)
    return param[len(prefix) + 1:] if prefix else param


def block_state(model: nn.Module, names: tuple[str, ...] | list[str], i: int) -> list[tuple[str, torch.Tensor]]:
    """(name inside the block, tensor) of block i's state: a module block's state dict (parameters and
    buffers) less the parameters another block claims; an own-parameter block's parameters."""
    names = tuple(names)
    mine = set(block_parameter_names(model, names)[i])
    module = block_module(model, names[i])
    if module is None:
        params = dict(model.named_parameters())
        return [(relative_name(n, names[i]), params[n]) for n in sorted(mine, key=list(params).index)]
    prefix = block_prefix(names[i])
    all_params = {n for n, _ in model.named_parameters()}
    out = []
    for key, tensor in module.state_dict().items():
        full = f"{prefix}.{key}" if prefix else key
        if full in all_params and full not in mine and parameter_owner(full, names) != i:
            continue  # a nested block's parameter
        out.append((key, tensor))
    return out


_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_atomic(module: nn.Module) -> bool:
    """torch.nn's own modules other than containers (Linear, Conv2d, MultiheadAttention,
    TransformerEncoderLayer, ...): fx calls them whole, and several cannot be traced inside (their
    fast-path checks branch on tensor properties)."""
    return module.__module__.startswith(("torch.nn", "torch.ao.nn")) and not isinstance(module, _CONTAINERS)


class _BlockTracer(torch.fx.Tracer):
    """fx's default tracer with every dropout module a leaf, subclasses included (such as the MLP's
    ``HostDrawnDropout``): tracing through one would bake its train/eval branch into the graph; and no
    module that holds a block inside it a leaf, so that block's calls are seen."""

    def __init__(self, inside: tuple[str, ...] = ()):
        super().__init__()
        self.inside = inside

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, _DROPOUTS):
            return True
        if any(b.startswith(module_qualified_name + ".") for b in self.inside):
            return False
        return super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module, names: tuple[str, ...] = ()) -> torch.fx.GraphModule:
    inside = tuple(names)  # an own-parameter block's module is traced into too: ``m.(own)`` is inside m
    tracer = _BlockTracer(inside)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        outer = next((m for m, mod in model.named_modules() if m and is_atomic(mod)
                      and any(b.startswith(m + ".") for b in inside)), None)
        if outer is not None:
            inner = next(b for b in names if b.startswith(outer + "."))
            raise ValueError(f"block {inner!r} is inside {outer!r} ({type(model.get_submodule(outer)).__name__}), "
                             f"which torch.fx cannot trace into: name {outer!r} or a module outside it") from None
        raise ValueError(f"torch.fx cannot trace the model: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return torch.fx.GraphModule(tracer.root, graph)


def _node_owner(node: torch.fx.Node, names: tuple[str, ...], params: set[str]) -> int | None:
    """The block an fx node belongs to: a module it calls, or a parameter or buffer it reads."""
    if node.op == "call_module":
        return _module_owner(str(node.target), names)
    if node.op == "get_attr":
        target = str(node.target)
        return parameter_owner(target, names) if target in params else _module_owner(target, names)
    return None


def trace_block_graph(model: nn.Module, block_names: list[str] | tuple[str, ...]) -> BlockGraph:
    """The BlockGraph of ``model`` over the blocks ``block_names`` (in forward order): module paths,
    or own-parameter blocks (:data:`OWN`).

    Each fx node that calls a module or reads a parameter inside block i belongs to i (a parameter
    read directly belongs to its module's own-parameter block when that is a block). From every
    node of block i the search follows the node's users; reaching a node of another block j records
    i -> j and stops there, and nodes of no block (additions, gates, reshapes) are passed through.
    """
    names = tuple(block_names)
    gm = _trace(model, names)
    params = {n for n, _ in model.named_parameters()}
    owner: dict[torch.fx.Node, int] = {}
    for node in gm.graph.nodes:
        i = _node_owner(node, names, params)
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
    block_params = block_parameter_names(model, names)
    for i, p in enumerate(block_params):
        if not p:
            raise ValueError(f"block {names[i]!r} has no trainable parameters")
    return BlockGraph(names, block_params, tuple(tuple(sorted(s)) for s in succ))


#: A model built by a user's factory carries the block list its run named under this attribute.
BLOCKS_ATTRIBUTE = "atlas_block_names"

#: ``blocks = ["depth=1"]`` (``--blocks depth=1``): the modules at that depth of the module tree as blocks.
DEPTH_PREFIX = "depth="


def block_depth(blocks: list[str] | tuple[str, ...]) -> int | None:
    """The depth a block list names (``["depth=2"]`` -> 2), None for a list of module paths; a
    ValueError for a malformed or mixed list."""
    depths = [b for b in blocks if b.startswith(DEPTH_PREFIX)]
    if not depths:
        return None
    value = depths[0][len(DEPTH_PREFIX):]
    if len(blocks) != 1 or not value.isdigit() or int(value) < 1:
        raise ValueError(f"{depths[0]!r}: a depth is one entry 'depth=K', K >= 1, alone in the list")
    return int(value)


def block_names(model: nn.Module) -> list[str]:
    """The blocks of ``model`` in forward order: the list a factory run named (``BLOCKS_ATTRIBUTE``),
    else the model's own ``block_names()`` (the built-in families), else :func:`default_blocks`."""
    named = getattr(model, BLOCKS_ATTRIBUTE, None)
    if named:
        return list(named)
    if callable(getattr(model, "block_names", None)):
        return list(model.block_names())
    return default_blocks(model)


def _trainable(module: nn.Module, recurse: bool = True) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=recurse))


def forward_order(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` in the order the fx graph first calls or reads each block."""
    names_t = tuple(names)
    gm = _trace(model, names_t)
    params = {n for n, _ in model.named_parameters()}
    first: dict[int, int] = {}
    for k, node in enumerate(gm.graph.nodes):
        i = _node_owner(node, names_t, params)
        if i is not None:
            first.setdefault(i, k)
    unused = [names[i] for i in range(len(names)) if i not in first]
    if unused:
        raise ValueError(f"block {unused[0]!r} is never called or read by the traced forward pass")
    return [names[i] for i in sorted(first, key=first.get)]


def _runs(node: torch.fx.Node, module: str) -> bool:
    """Whether fx traced ``node`` inside the forward pass of ``module`` (its ``nn_module_stack``)."""
    return module in (node.meta.get("nn_module_stack") or {})


def _with_parameters(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` less the blocks left with no trainable parameter of their own (a tied weight is
    named once, under its first module: the block of the other holds nothing)."""
    groups = block_parameter_names(model, names)
    return [n for n, g in zip(names, groups, strict=True) if g]


def default_blocks(model: nn.Module) -> list[str]:
    """The modules the fx graph calls (its leaves: Linear, convolutions, norms, embeddings,
    ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` as wholes) that hold trainable
    parameters, and the owners of parameters read directly (``get_attr``): a module that reads them in
    its own forward pass and has no children holding parameters as itself; otherwise (the root, a
    module whose children hold parameters, a module whose weight another reads) the block of its own
    parameters (:func:`own_block`); in the order the graph first uses them."""
    gm = _trace(model)
    modules = dict(model.named_modules())
    params = {n for n, p in model.named_parameters() if p.requires_grad}
    order: list[str] = []
    for node in gm.graph.nodes:
        target = str(node.target)
        if node.op == "call_module":
            if not _trainable(modules[target]):
                continue
            block = target
        elif node.op == "get_attr" and target in params:
            owner = _parent(target)
            nested = any(_trainable(c) for c in modules[owner].children())
            block = owner if owner and not nested and _runs(node, owner) else own_block(owner)
        else:
            continue
        if block not in order and not any(own_block_owner(o) is None and block.startswith(o + ".") for o in order):
            order.append(block)
    order = [b for b in order if own_block_owner(b) is None or own_block_owner(b) not in order]
    order = _with_parameters(model, order)
    covered = {n for group in block_parameter_names(model, order) for n in group}
    missing = [n for n in params if n not in covered]
    if missing:
        raise ValueError(f"parameter {missing[0]!r} is in no module the traced forward pass calls")
    return order


def depth_blocks(model: nn.Module, depth: int) -> list[str]:
    """The modules ``depth`` levels below the root that hold trainable parameters (depth 1: the
    model's top-level children, a ResNet's ``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``fc``), a
    shallower module with no children holding parameters or one of torch.nn's own (:func:`is_atomic`)
    as itself, and the own parameters of each module above them (:func:`own_block`), in forward order.
    A ``ModuleList`` or ``ModuleDict`` is not a level (it is never called: a GPT's ``h.0``, ``h.1``, ...
    stand at depth 1), and a module whose weight another module reads is its own-parameter block."""
    gm = _trace(model)
    runs = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    runs |= {m for n in gm.graph.nodes for m in (n.meta.get("nn_module_stack") or {})}
    found: list[str] = []

    def visit(path: str, module: nn.Module, level: int) -> None:
        if not _trainable(module):
            return
        children = [(n, c) for n, c in module.named_children() if _trainable(c)]
        if isinstance(module, nn.ModuleList | nn.ModuleDict):  # never called: its children stand at its level
            for name, child in children:
                visit(f"{path}.{name}", child, level)
            return
        if path and (level == depth or not children or is_atomic(module)):
            found.append(path if path in runs else own_block(path))  # a module whose weight another reads
            return
        if _trainable(module, recurse=False):
            found.append(own_block(path))
        for name, child in children:
            visit(f"{path}.{name}" if path else name, child, level + 1)

    visit("", model, 0)
    return forward_order(model, _with_parameters(model, found))
