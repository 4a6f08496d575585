"""Where the optimizer steps run: moving a model and its optimizer's state between devices.

With ``--device cuda`` a run's SGD steps run on the GPU, and everything else (the checkpoint
measurements, the coupling maps, skip-connection synthesis and its trial steps) on the CPU as it
does without one: at each checkpoint the model and its optimizer state move to the CPU, and back
after.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn


def move_training_state(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move ``model``'s parameters and buffers, and every optimizer state tensor shaped like its
    parameter (momentum, Adam's moments), to ``device``, in place.

    ``Module.to`` keeps each parameter object where the two devices' tensors allow a shallow copy
    (CPU and CUDA) and makes new ones where not (the meta device): the optimizer is rebound to the
    model's parameters after the move either way, by their order in ``model.parameters()``. Scalar
    state (Adam's ``step`` count) stays where it is: PyTorch's non-capturable optimizers require it
    on the CPU whatever the parameters' device."""
    before = list(model.parameters())
    model.to(device)
    after = {id(old): new for old, new in zip(before, model.parameters(), strict=True)}
    for group in optimizer.param_groups:
        group["params"] = [after.get(id(p), p) for p in group["params"]]
    state = defaultdict(dict)
    for param, values in optimizer.state.items():
        param = after.get(id(param), param)
        state[param] = {key: value.to(param.device) if torch.is_tensor(value) and value.shape == param.shape
                        else value for key, value in values.items()}
    optimizer.state = state
