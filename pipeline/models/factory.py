"""A user's own network: a run with ``family = "custom"`` names a factory instead of a built-in family.

``model = "package.module:build"`` is imported (the package must be importable by every worker:
installed, or on ``PYTHONPATH``) and called
as ``build(input_shape, output_size)`` after ``torch.manual_seed(seed)``: input_shape is the tuple
of one row's shape (``(d,)`` for a table of d features, ``(C, H, W)`` for images, ``(T,)`` for token
ids), output_size the number of classes (or 1 for regression). It must return an ``nn.Module``
mapping (N, *input_shape) to (N, output_size); its inputs are float32, or int64 for token ids.

Its blocks are ``blocks`` when the run names them: module paths in forward order (``(own)``,
``encoder.(own)``: the parameters the root or ``encoder`` holds itself), or ``["depth=K"]``, the
modules K levels down (:func:`pipeline.models.block_graph.depth_blocks`); else the model's own
``block_names()`` when it has one, else every module the traced forward pass calls that owns
parameters, and the own parameters of the root and of modules with such children
(:func:`pipeline.models.block_graph.default_blocks`). :func:`build_factory_model` checks all of it
on a two-row batch (the data set's first two rows when the caller gives them, as it always does for a
run; else random normal rows) before anything is trained and measured, and every failure is a
:class:`FactoryError` naming the key (``model`` or ``blocks``) and what is wrong.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.block_graph import (
    BLOCKS_ATTRIBUTE,
    block_depth,
    block_names,
    depth_blocks,
    forward_order,
    own_block_owner,
    trace_block_graph,
)


class FactoryError(ConfigError):
    """A model factory cannot be imported or builds a model the engine cannot measure."""


def load_factory(ref: str) -> Callable[..., nn.Module]:
    """The callable ``ref`` = ``package.module:name`` (name may be dotted: ``module:Class.build``)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise FactoryError(f"model = {ref!r}: expected 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the user's module raises on import
        raise FactoryError(f"model = {ref!r}: cannot import {module_name!r}: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise FactoryError(f"model = {ref!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise FactoryError(f"model = {ref!r}: {attr!r} is not callable")
    return target


def build_factory_model(ref: str, input_shape: Sequence[int], output_size: int, seed: int = 0,
                        blocks: Sequence[str] = (), example: torch.Tensor | np.ndarray | None = None) -> nn.Module:
    """The factory's model, initialized from ``torch.manual_seed(seed)``, checked (see the module
    docstring) and carrying its block list (``BLOCKS_ATTRIBUTE``)."""
    factory = load_factory(ref)
    torch.manual_seed(seed)
    try:
        model = factory(tuple(input_shape), int(output_size))
    except Exception as exc:
        raise FactoryError(f"model = {ref!r}: build{tuple(input_shape), int(output_size)} raised "
                           f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"model = {ref!r}: returned a {type(model).__name__}, not a torch.nn.Module")
    model = model.float()
    x = torch.randn(2, *input_shape)  # drawn either way: the generator moves on as it always did (dropout)
    if example is not None:  # real rows: token ids must be ids of the vocabulary
        x = torch.as_tensor(np.asarray(example[:2]))
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    except Exception as exc:
        raise FactoryError(f"model = {ref!r}: the forward pass on a batch of shape {tuple(x.shape)} raised "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, int(output_size)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FactoryError(f"model = {ref!r}: outputs of shape {shape} for a batch of 2, expected (2, {output_size})")
    try:
        depth = block_depth(blocks)
    except ValueError as exc:
        raise FactoryError(f"blocks: {exc}") from None
    names = [] if depth is not None else list(blocks)
    modules = dict(model.named_modules())
    for name in names:
        owner = own_block_owner(name)
        if owner is None and (name not in modules or not name):
            raise FactoryError(f"blocks: {name!r} is not a submodule of the model built by {ref!r}")
        if owner is not None and (owner not in modules
                                  or not any(True for _ in modules[owner].parameters(recurse=False))):
            raise FactoryError(f"blocks: {name!r}: {owner or 'the model'!r} is not a module of the model built by "
                               f"{ref!r} with parameters of its own")
    try:
        if depth is not None:
            names = depth_blocks(model, depth)
        elif names:
            order = forward_order(model, names)
            if order != names:
                raise FactoryError(f"blocks: {names} are not in forward order: the traced forward pass first uses "
                                   f"them as {order}")
        names = names or block_names(model)
        graph = trace_block_graph(model, names)
    except FactoryError:
        raise
    except Exception as exc:  # fx cannot trace data-dependent control flow; a block without parameters
        raise FactoryError(f"model = {ref!r}: its blocks cannot be read off the graph: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    _check_differentiable(model, x, graph.names, graph.params, ref)
    setattr(model, BLOCKS_ATTRIBUTE, list(graph.names))
    return model


def _check_differentiable(model: nn.Module, x: torch.Tensor, names: Sequence[str],
                          params: Sequence[Sequence[str]], ref: str) -> None:
    """Every block's parameters must reach the outputs through differentiable operations."""
    named = dict(model.named_parameters())
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        model.train(was_training)
    if not out.requires_grad:
        raise FactoryError(f"model = {ref!r}: its outputs do not depend differentiably on its parameters "
                           "(a detach, argmax or integer operation in the forward pass?)")
    flat = [named[p] for group in params for p in group]
    grads = torch.autograd.grad(out.square().sum(), flat, allow_unused=True)
    k = 0
    for name, group in zip(names, params, strict=True):
        g = grads[k:k + len(group)]
        k += len(group)
        if all(t is None for t in g):
            raise FactoryError(f"model = {ref!r}: block {name!r}: no gradient reaches its parameters from the "
                               "outputs (a non-differentiable operation, or a module the forward pass skips)")
        if any(t is not None and not torch.isfinite(t).all() for t in g):
            raise FactoryError(f"model = {ref!r}: block {name!r}: its gradient is not finite at initialization")
