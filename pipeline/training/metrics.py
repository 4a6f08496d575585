"""Quality metrics at a checkpoint, as the paper records them.

Classification: accuracy, macro precision / recall / F1 (zero_division = 0), and ROC AUC: binary
AUC for two classes, macro one-vs-rest AUC over the classes present otherwise (NULL when fewer than
two classes are present). Regression: R2, and MAE and RMSE in the target's original units.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "auc")
REGRESSION_METRICS = ("r2", "mae", "rmse")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float | None]:
    """y_true: (n,) int codes; proba: (n, K) class probabilities."""
    pred = proba.argmax(axis=1)
    labels = np.arange(proba.shape[1])
    out: dict[str, float | None] = {
        "accuracy": float((pred == y_true).mean()),
        "precision": float(skm.precision_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "recall": float(skm.recall_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "f1": float(skm.f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
    }
    present = np.unique(y_true)
    if len(present) < 2:
        out["auc"] = None
    elif proba.shape[1] == 2:
        out["auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
    else:
        out["auc"] = float(np.mean([skm.roc_auc_score(y_true == c, proba[:, c]) for c in present]))
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, target_std: float) -> dict[str, float | None]:
    """y_true, y_pred: (n,) standardized targets; MAE and RMSE are scaled back by target_std."""
    err = y_pred - y_true
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "r2": (1.0 - float((err**2).sum()) / ss_tot) if ss_tot > 0 else None,
        "mae": float(np.abs(err).mean()) * target_std,
        "rmse": math.sqrt(float((err**2).mean())) * target_std,
    }
