"""The coupling map of a model at a checkpoint, and its rows of ``curvature_coupling``."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pipeline.curvature.attention import second_order_attention
from pipeline.curvature.coupling import CouplingMap, block_loss, coupling_map, global_coherence
from pipeline.models.block_graph import BlockGraph, block_names, trace_block_graph


@second_order_attention()
def measure_coupling(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: Callable, task: str,
                     n_probes: int, rng: np.random.Generator, device: str = "cpu") -> tuple[BlockGraph, CouplingMap]:
    """Block graph and coupling map of ``model`` (anything with ``block_names()``) on the probe batch,
    in float64 on a copy in eval mode on ``device``."""
    m64 = copy.deepcopy(model).double().eval().to(device)
    X = X.to(device=device, dtype=torch.float64 if X.is_floating_point() else X.dtype)  # token ids stay int64
    y = y.to(device=device, dtype=torch.float64 if task == "regression" else torch.long)
    graph = trace_block_graph(m64, block_names(m64))
    return graph, coupling_map(block_loss(m64, graph, X, y, loss_fn), n_probes, rng)


def coupling_rows(graph: BlockGraph, cmap: CouplingMap) -> list[dict]:
    """Rows of ``curvature_coupling`` for the pairs i <= j (the map is symmetric); Hutchinson traces
    of H_ii on the diagonal rows."""
    lengths = graph.pair_lengths()
    rows = []
    for i in range(graph.n_blocks):
        for j in range(i, graph.n_blocks):
            finite = np.isfinite(cmap.kappa[i, j])
            rows.append({
                "block_i": i, "block_j": j, "path_exists": bool(lengths[i, j] >= 0),
                "path_length": int(lengths[i, j]) if lengths[i, j] >= 0 else None,
                "kappa": float(cmap.kappa[i, j]) if finite else None,
                "stderr": float(cmap.stderr[i, j]) if finite else None,
                "frobenius": float(cmap.frobenius[i, j]), "n_probes": cmap.n_probes,
                "trace": float(cmap.trace[i]) if i == j else None,
                "trace_stderr": float(cmap.trace_stderr[i]) if i == j else None,
            })
    return rows


def coherence_of(graph: BlockGraph, cmap: CouplingMap) -> float:
    return global_coherence(cmap.kappa, graph.pair_lengths())
