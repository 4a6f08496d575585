"""What one checkpoint measures: metrics and norms at every metric checkpoint; at spectral snapshots
per-layer spectra, alignment, similarity, saturation, the weights themselves, margins on the
training and test sets, and whole-model sharpness.

All gradients are of the mean training loss on the run's probe batch with the model in eval mode
(dropout off, batch norm on its running statistics), so they are reproducible and comparable
across checkpoints; they never touch the optimizer's ``.grad`` buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.curvature.block_engine import generic_blocks
from pipeline.curvature.conv_local import activation_name
from pipeline.curvature.engine import CurvatureBlock, CurvatureSettings, kronecker_blocks, measure_blocks
from pipeline.curvature.sharpness import loss_sharpness_row
from pipeline.datasets.run_data import RunData
from pipeline.models.block_graph import (
    block_module,
    block_names,
    block_parameter_names,
    block_state,
    relative_name,
    trace_block_graph,
)
from pipeline.models.mlp import MLP
from pipeline.snapshot.margins import margin_rows, not_classification_rows
from pipeline.snapshot.saturation import saturation_stats
from pipeline.snapshot.weight_matrices import WHOLE, is_weight_tensor, matrix_parts, principal_tensor
from pipeline.snapshot.weight_spectra import (
    SingularSummary,
    adjacent_similarity,
    singular_summary,
    weight_gradient_alignment,
)
from pipeline.training.metrics import classification_metrics, regression_metrics


def _split_metrics(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn, data: RunData) -> dict:
    out = model(X)
    if not torch.isfinite(out).all():
        raise FloatingPointError("model outputs are not finite")
    loss = float(loss_fn(out, y))
    if data.dataset.task == "classification":
        proba = torch.softmax(out.double(), dim=1).numpy()
        metrics = classification_metrics(y.numpy(), proba)
    else:
        metrics = regression_metrics(y.numpy().ravel().astype(np.float64), out.detach().double().numpy().ravel(),
                                     data.dataset.target_std)
    return {"loss": loss, **metrics}


@dataclass(frozen=True)
class MeasuredBlocks:
    """What a checkpoint measures per block of any model: ``names`` (module paths in forward order,
    ``layer_index`` = position; :func:`pipeline.models.block_graph.block_names`), ``params`` (per block,
    the full names of the parameters it measures: weights, and biases by their name ``*bias``), and
    ``loose`` (tensors of no block, stored in ``weights`` at layer_index -1 under their full path).
    ``kronecker``: the blocks are an MLP's Linear blocks, measured by their Kronecker form."""

    names: list[str]
    params: tuple[tuple[str, ...], ...]
    loose: list[tuple[str, torch.Tensor]]
    kronecker: bool

    def curvature(self, model: nn.Module) -> list[CurvatureBlock]:
        """Each block with its curvature strategy (:func:`pipeline.curvature.engine.measure_blocks`)."""
        if self.kronecker:
            return kronecker_blocks(model)
        graph = trace_block_graph(model, self.names)  # checks too that every block is traced and has parameters
        return generic_blocks(zip(graph.names, graph.params, strict=True))


def measured_blocks(model: nn.Module) -> MeasuredBlocks:
    """The blocks a checkpoint measures (:class:`MeasuredBlocks`)."""
    names = block_names(model)
    # The one per-family switch of a checkpoint: an MLP's block C_i is measured as its Linear (W, b),
    # the parameters of its Kronecker form (the norm's affine ones are not part of theta_i), and its
    # gated edges, in no block, are stored whole; any other model's block as its whole parameter group.
    if isinstance(model, MLP):
        params = tuple((f"{name}.linear.weight", f"{name}.linear.bias") for name in names)
        loose = [(f"skips.{key}", tensor) for key, tensor in model.skips.state_dict().items()]
        return MeasuredBlocks(names, params, loose, kronecker=True)
    # trainable parameters only: frozen ones are not measured
    return MeasuredBlocks(names, block_parameter_names(model, names), [], kronecker=False)


def layer_groups(model: nn.Module) -> list[tuple[list[nn.Parameter], list[nn.Parameter]]]:
    """(weights, biases) per measured block (:func:`measured_blocks`), split by name (``*bias`` vs the rest)."""
    named = dict(model.named_parameters())
    return [([named[n] for n in mine if not n.endswith("bias")], [named[n] for n in mine if n.endswith("bias")])
            for mine in measured_blocks(model).params]


def probe_gradients(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn) -> list[tuple]:
    """Per block (dL/dW, dL/db) on the probe batch, eval mode: lists of tensors, one per weight and bias
    of :func:`layer_groups`."""
    groups = layer_groups(model)
    params = [p for ws, bs in groups for p in (*ws, *bs)]
    grads = iter(torch.autograd.grad(loss_fn(model(X), y), params))
    return [([next(grads) for _ in ws], [next(grads) for _ in bs]) for ws, bs in groups]


def _norm(tensors) -> float:
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
    return math.sqrt(sum(float(torch.linalg.norm(t.detach().double())) ** 2 for t in tensors))


def evaluate_checkpoint(model: nn.Module, data: RunData, tensors: dict, loss_fn) -> tuple[dict, list[dict], list]:
    """Metrics of one metric checkpoint.

    Returns (checkpoint columns, per-layer norm columns, probe gradients). Raises FloatingPointError
    when a loss or norm is not finite (the run has diverged).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            train = _split_metrics(model, *tensors["train"], loss_fn, data)
            test = _split_metrics(model, *tensors["test"], loss_fn, data)
        grads = probe_gradients(model, *tensors["probe"], loss_fn)
    finally:
        model.train(was_training)
    row = {"train_loss": train.pop("loss"), "test_loss": test.pop("loss")}
    for k, v in train.items():
        row[f"train_{k}"] = v
    for k, v in test.items():
        row[f"test_{k}"] = v
    row["gap_loss"] = row["test_loss"] - row["train_loss"]
    row["gap_accuracy"] = (row["train_accuracy"] - row["test_accuracy"]
                           if data.dataset.task == "classification" else None)
    layers = []
    for (ws, bs), (gw, gb) in zip(layer_groups(model), grads, strict=True):
        layers.append({"weight_norm": _norm(ws), "bias_norm": _norm(bs), "grad_norm": _norm(gw),
                       "grad_bias_norm": _norm(gb)})
    row["weight_norm"] = math.sqrt(sum(r["weight_norm"] ** 2 + r["bias_norm"] ** 2 for r in layers))
    row["grad_norm"] = math.sqrt(sum(r["grad_norm"] ** 2 + r["grad_bias_norm"] ** 2 for r in layers))
    for key in ("train_loss", "test_loss", "weight_norm", "grad_norm"):
        if not math.isfinite(row[key]):
            raise FloatingPointError(f"{key} is not finite")
    return row, layers, grads


@dataclass(frozen=True)
class SpectralSnapshot:
    """What a spectral snapshot adds: per-layer columns of ``layer_stats`` and rows of its own tables."""

    layer_stats: list[dict]
    weights: list[dict]
    hessian_spectra: list[dict]
    margins: list[dict]
    margin_values: list[dict]
    sharpness: list[dict]
    matrix_spectra: list[dict]

    def tables(self) -> dict[str, list[dict]]:
        return {"weights": self.weights, "hessian_spectra": self.hessian_spectra, "margins": self.margins,
                "margin_values": self.margin_values, "sharpness": self.sharpness,
                "matrix_spectra": self.matrix_spectra}


#: Seed stream of the sharpness ascent and top-eigenvalue Lanczos (apart from the per-layer streams).
SHARPNESS_STREAM = 1_000_003


def principal_matrix(params: list[tuple[str, torch.Tensor]]) -> int | None:
    """Index in ``params`` (a block's (name, tensor) pairs) of its principal weight tensor
    (:func:`pipeline.snapshot.weight_matrices.principal_tensor`); None when the block has only vectors."""
    return principal_tensor([(n, tuple(t.shape)) for n, t in params])


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A weight tensor as a matrix: its first axis (outputs) against all the others."""
    return t.detach().reshape(t.shape[0], -1)


def matrix_spectra_rows(layer_index: int, weights: list[tuple[str, torch.Tensor]], grads: list[torch.Tensor],
                        summaries: dict[str, tuple[SingularSummary, SingularSummary]] | None = None) -> list[dict]:
    """Rows of ``matrix_spectra`` for one block: the singular values of every weight matrix it holds
    (:func:`pipeline.snapshot.weight_matrices.matrix_parts`: a packed Q/K/V projection as its three
    parts) and of its probe gradient, and their alignment. ``weights`` are the block's weight tensors
    (name, tensor) and ``grads`` their gradients, in the same order; ``summaries`` maps a tensor name to
    (weight, gradient) summaries already computed for its whole matrix, so they are not recomputed."""
    k = principal_matrix(weights)
    rows = []
    for j, ((name, w), g) in enumerate(zip(weights, grads, strict=True)):
        wm, gm = as_matrix(w), as_matrix(g)
        for part, sl in matrix_parts(name, tuple(w.shape)):
            wp, gp = wm[sl], gm[sl]
            if summaries is not None and name in summaries and part == WHOLE:
                ws, gs = summaries[name]
            else:
                ws, gs = singular_summary(wp), singular_summary(gp)
            rows.append({"layer_index": layer_index, "tensor": name, "part": part, "rows": wp.shape[0],
                         "cols": wp.shape[1], "principal": j == k, "weight_sv": ws.singular_values,
                         "weight_rank": ws.numerical_rank, "weight_stable_rank": ws.stable_rank,
                         "weight_spectral_norm": ws.spectral_norm, "grad_sv": gs.singular_values,
                         "grad_rank": gs.numerical_rank, "grad_stable_rank": gs.stable_rank,
                         "grad_spectral_norm": gs.spectral_norm, "alignment": weight_gradient_alignment(wp, gp)})
    return rows


def activation_inputs(model: nn.Module, names: list[str], X: torch.Tensor) -> dict[str, tuple[torch.Tensor, str]]:
    """Per block with an elementwise activation module (the first one inside it): what that
    activation receives on X, as (points x units, units last), and the activation's name. A
    convolution's units are its channels at every position, a token model's its features per token."""
    hooks, seen = [], {}
    for name in names:
        block = block_module(model, name)
        if block is None:  # a module's own parameters: no activation
            continue
        act = next(((n, m) for n, m in block.named_modules() if activation_name(m) not in (None, "identity")), None)
        if act is None:
            continue
        channels_first = any(isinstance(m, nn.Conv1d | nn.Conv2d) for m in block.modules())
        act_name = activation_name(act[1])

        def hook(_m, args, name=name, act_name=act_name, channels_first=channels_first):
            u = args[0].detach().clone()  # a copy: an in-place op later in the block must not change it
            if channels_first and u.dim() > 2:
                u = u.movedim(1, -1)
            seen.setdefault(name, (u.reshape(-1, u.shape[-1]), act_name))

        hooks.append(act[1].register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(X)
    finally:
        for h in hooks:
            h.remove()
    return seen


def spectral_snapshot(model: nn.Module, probe: tuple[torch.Tensor, torch.Tensor], grads: list, loss_fn, task: str,
                      settings: CurvatureSettings, seed: int, step: int,
                      margin_splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> SpectralSnapshot:
    """A spectral snapshot of any model, block by block (:func:`measured_blocks`, ``layer_index`` =
    block index): the local, loss and Gauss-Newton spectra, pressure and natural-gradient norm
    (:func:`pipeline.curvature.engine.measure_blocks`); the singular values of the block's principal
    matrix and of its gradient, their alignment, the similarity to the next block's matrix where the
    shapes chain; saturation at its activation; every block tensor (and the tensors of no block, an
    MLP's gated edges, at layer_index -1); the margins of ``margin_splits`` (split -> (X, y); None for
    a regression run, which gets rows saying so) at every block's output; whole-model sharpness.
    ``grads``: :func:`probe_gradients`."""
    blocks = measured_blocks(model)
    names = blocks.names
    curvature_blocks = blocks.curvature(model)
    was_training = model.training
    model.eval()
    try:
        acts = activation_inputs(model, names, probe[0])
    finally:
        model.train(was_training)
    hessian_rows, curvature = measure_blocks(model, curvature_blocks, *probe, loss_fn, task, settings, seed, step)
    matrices, matrix_rows = [], []
    named = dict(model.named_parameters())
    for i, (name, (gws, _)) in enumerate(zip(names, grads, strict=True)):
        weights = [(relative_name(n, name), named[n]) for n in blocks.params[i] if not n.endswith("bias")]
        k = principal_matrix(weights)
        summaries = {}
        if k is None:
            matrices.append(None)
        else:
            w, gw = as_matrix(weights[k][1]), as_matrix(gws[k])
            summaries[weights[k][0]] = (singular_summary(w), singular_summary(gw))
            matrices.append((w, gw, *summaries[weights[k][0]]))
        matrix = [(j, (n, p)) for j, (n, p) in enumerate(weights) if is_weight_tensor(n, tuple(p.shape))]
        matrix_rows += matrix_spectra_rows(i, [w for _, w in matrix], [gws[j] for j, _ in matrix], summaries)
    stats, weight_rows = [], []
    for i, name in enumerate(names):
        row: dict = {}
        if matrices[i] is not None:
            w, gw, ws, gs = matrices[i]
            nxt = matrices[i + 1] if i + 1 < len(names) else None
            chained = nxt is not None and nxt[0].shape[1] == w.shape[0]
            sim, k = adjacent_similarity(w, nxt[0]) if chained else (None, None)
            row = {"weight_sv": ws.singular_values, "weight_rank": ws.numerical_rank,
                   "weight_stable_rank": ws.stable_rank, "weight_spectral_norm": ws.spectral_norm,
                   "grad_sv": gs.singular_values, "grad_rank": gs.numerical_rank, "grad_stable_rank": gs.stable_rank,
                   "grad_spectral_norm": gs.spectral_norm, "alignment": weight_gradient_alignment(w, gw),
                   "adjacent_similarity": sim, "adjacent_k": k}
        if name in acts:
            row["saturation_fraction"], row["dead_fraction"] = saturation_stats(*acts[name])
        stats.append({**row, **curvature[i]})
        for tensor_name, tensor in block_state(model, names, i):
            weight_rows.append({"layer_index": i, "tensor": tensor_name, "shape": list(tensor.shape),
                                # a copy: a view would follow the parameters as training goes on
                                "values": tensor.detach().reshape(-1).float().cpu().numpy().copy()})
    for tensor_name, tensor in blocks.loose:
        weight_rows.append({"layer_index": -1, "tensor": tensor_name, "shape": list(tensor.shape),
                            "values": tensor.detach().reshape(-1).float().cpu().numpy().copy()})
    if margin_splits is None:
        margins, margin_values = not_classification_rows(), []
    else:
        margins, margin_values = margin_rows(model, margin_splits)
    sharp = loss_sharpness_row(model, *probe, loss_fn, task, np.random.default_rng([seed, step, SHARPNESS_STREAM]),
                               settings.device)
    return SpectralSnapshot(stats, weight_rows, hessian_rows, margins, margin_values, [sharp], matrix_rows)
