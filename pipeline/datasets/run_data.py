"""The data one run sees: its training subsample, label noise, the test split and the probe batch.

Everything here is seeded from the run (``seed`` and the data set name), so the same run spec
always yields the same rows, labels and probe batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from pipeline.datasets.preprocess import PreparedDataset, name_seed, prepare
from pipeline.datasets.registry import DatasetSpec, get_spec
from pipeline.errors import DatasetError
from pipeline.runspec import RunSpec


@dataclass(frozen=True)
class RunData:
    """Row indices refer to the prepared data set's X. Labels of the training rows may be noisy."""

    dataset: PreparedDataset
    train_rows: np.ndarray
    test_rows: np.ndarray
    probe_rows: np.ndarray
    y_train: np.ndarray  # labels as trained on (after label noise), aligned with train_rows
    n_noisy: int

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(X, y) for ``train``, ``test`` or ``probe``; y int64 for classification, float32 (n, 1) else."""
        X = self.dataset.X
        if split == "train":
            rows, y = self.train_rows, self.y_train
        elif split == "test":
            rows, y = self.test_rows, self.dataset.y[self.test_rows]
        elif split == "probe":
            pos = np.searchsorted(self.train_rows, self.probe_rows)
            rows, y = self.probe_rows, self.y_train[pos]
        else:
            raise ValueError(f"unknown split {split!r}")
        yt = torch.from_numpy(np.ascontiguousarray(y))
        if self.dataset.task == "regression":
            yt = yt.reshape(-1, 1)
        return torch.from_numpy(np.ascontiguousarray(X[rows])), yt


@lru_cache(maxsize=8)
def _prepared_cached(spec: DatasetSpec) -> PreparedDataset:
    return prepare(spec)


def prepared_dataset(name: str, custom: dict[str, DatasetSpec] | None = None,
                     preprocess: str = "standard") -> PreparedDataset:
    """The preprocessed data set (cached per process), prepared as ``preprocess`` says."""
    return _prepared_cached(dataclasses.replace(get_spec(name, custom), preprocess=preprocess))


def run_dataset(spec: RunSpec, custom: dict[str, DatasetSpec] | None = None) -> PreparedDataset:
    """The run's data set, prepared as its ``preprocess`` field says."""
    return prepared_dataset(spec.dataset, custom, spec.preprocess)


def run_data(spec: RunSpec, dataset: PreparedDataset) -> RunData:
    """Subsample ``train_fraction`` of the training split (stratified, at least one row per class and
    at least four rows), flip ``label_noise`` of the training labels to a uniformly drawn other class
    (classification) or add N(0, label_noise^2) to the target as prepared (regression: standardized, or
    in its own units under ``preprocess = "none"``), and draw the
    probe batch: ``probe_size`` training rows (all of them when fewer)."""
    rng = np.random.default_rng([spec.seed, name_seed(spec.dataset), 1])
    train = dataset.train_idx
    if spec.train_fraction < 1.0:
        train = _subsample(train, dataset, spec.train_fraction, rng)
    y_train = dataset.y[train].copy()
    n_noisy = 0
    if spec.label_noise > 0:
        flip = rng.random(len(train)) < spec.label_noise
        n_noisy = int(flip.sum())
        if dataset.task == "classification":
            shift = rng.integers(1, dataset.n_classes, size=len(train))
            y_train[flip] = (y_train[flip] + shift[flip]) % dataset.n_classes
        else:
            y_train[flip] += rng.normal(0.0, spec.label_noise, size=n_noisy).astype(np.float32)
    probe = train if spec.probe_size >= len(train) else np.sort(rng.choice(train, spec.probe_size, replace=False))
    return RunData(dataset, train, dataset.test_idx, probe, y_train, n_noisy)


def _subsample(train: np.ndarray, dataset: PreparedDataset, fraction: float,
               rng: np.random.Generator) -> np.ndarray:
    if dataset.task == "classification":
        labels = dataset.y[train]
        parts = []
        for c in np.unique(labels):
            g = train[labels == c]
            parts.append(rng.choice(g, size=max(1, int(round(fraction * len(g)))), replace=False))
        out = np.concatenate(parts)
    else:
        out = rng.choice(train, size=int(round(fraction * len(train))), replace=False)
    if len(out) < 4:
        raise DatasetError(f"dataset {dataset.name!r}: train_fraction {fraction} leaves {len(out)} training rows "
                           "(at least 4 needed)")
    return np.sort(out)
