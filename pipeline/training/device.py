"""Where the optimizer steps run: moving a model and its optimizer's state between devices.

With ``--device cuda`` a run's SGD steps run on the GPU, and everything else (the checkpoint
measurements, the coupling maps, skip-connection synthesis and its trial steps) on the CPU as it
does without one: at each checkpoint the model and its optimizer state move to the CPU, and back
after.
"""

from __future__ import annotations

import torch
from torch import nn


def move_training_state(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move ``model``'s parameters and buffers, and its optimizer's state, to ``device``, in place.

    ``Module.to`` keeps each parameter object where the two devices' tensors allow a shallow copy
    (CPU and CUDA) and makes new ones where not (the meta device, or under
    ``torch.__future__.set_overwrite_module_params_on_conversion``): the optimizer is rebound to the
    model's parameters after the move either way, by their order in ``model.parameters()``, and its
    state is reloaded through ``Optimizer.load_state_dict``, which puts each state tensor where its
    parameter is by PyTorch's own rule (Adam's ``step`` count stays on the CPU unless the optimizer
    is capturable or fused)."""
    saved = optimizer.state_dict()  # state keyed by position, read before the parameters change
    before = list(model.parameters())
    model.to(device)
    after = {id(old): new for old, new in zip(before, model.parameters(), strict=True)}
    for group in optimizer.param_groups:
        group["params"] = [after.get(id(p), p) for p in group["params"]]
    optimizer.load_state_dict(saved)
