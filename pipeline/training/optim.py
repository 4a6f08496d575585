"""Optimizers and losses of a run."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.runspec import RunSpec


def make_optimizer(spec: RunSpec, params) -> torch.optim.Optimizer:
    """adam (betas 0.9, 0.999), sgd and rmsprop (alpha 0.99) with the run's lr, momentum and
    weight decay (coupled L2, as torch applies it)."""
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    raise ValueError(f"unknown optimizer {spec.optimizer!r}")


def loss_function(task: str) -> nn.Module:
    """Cross-entropy (mean over points) for classification, MSE (mean) for regression."""
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
