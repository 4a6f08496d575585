"""The trivial predictor of a data set, scored like the runs: what a run's test metric must beat.

Fitted on the data set's own training split and scored on its test split by the functions that score
every checkpoint (pipeline/training/metrics.py), so it is in the units of the runs' primary metric:

- classification: the majority class of the training split (the smallest class code among equal
  counts), predicted for every test row; its test accuracy is the majority-class rate. A constant
  score ranks no row above another, so its test AUC is chance, 0.5 (NULL where the test split holds
  fewer than two classes, as for a run);
- regression: the training mean, predicted for every test row; its test R^2 is
  -n (mean_test - mean_train)^2 / SS_test, at or slightly below 0 (NULL for a constant test target).

It is a property of the data set, not of a run: a run's ``train_fraction`` or ``label_noise`` changes
what the run learns from, not the bar (the test split is the same for every run of a data set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.datasets.preprocess import PreparedDataset
from pipeline.training.metrics import classification_metrics, regression_metrics

#: ``datasets.baseline_name`` by task.
BASELINE_NAMES = {"classification": "majority class", "regression": "training mean"}


@dataclass(frozen=True)
class Baseline:
    """``name`` of the predictor; ``metric``: its test accuracy (classification) or test R^2
    (regression); ``auc``: its test AUC (classification only)."""

    name: str
    metric: float | None
    auc: float | None


def trivial_baseline(d: PreparedDataset) -> Baseline:
    """The trivial predictor of ``d`` fitted on its training split and scored on its test split."""
    y_train, y_test = d.y[d.train_idx], d.y[d.test_idx]
    if d.task == "classification":
        majority = int(np.bincount(y_train, minlength=d.n_classes).argmax())
        proba = np.zeros((len(y_test), d.n_classes))
        proba[:, majority] = 1.0
        scores = classification_metrics(y_test, proba)
        return Baseline(BASELINE_NAMES["classification"], scores["accuracy"], scores["auc"])
    mean = float(np.asarray(y_train, dtype=np.float64).mean())
    scores = regression_metrics(np.asarray(y_test, dtype=np.float64), np.full(len(y_test), mean), d.target_std)
    return Baseline(BASELINE_NAMES["regression"], scores["r2"], None)
