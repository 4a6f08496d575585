"""The predictors of the gap: the feature columns of ``analysis_gap_models``, the fixed transform
each enters the regression under, and the predictor sets (*specifications*) that are fitted.

Transforms: slog(x) = sign(x) ln(1 + |x|) for the margin statistics (the lower fence is often
negative) and the scale-like predictors, ln for the parameter count, none for the already
logarithmic spectral-norm product.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.kit.features import slog

#: Paper 004's result: R^2 of the linear model on margin statistics, and its number of models.
PAPER_R2, PAPER_N_MODELS = 0.89, 377
#: Representations every network has (input, first hidden layer's output, logits).
MARGIN_REPRESENTATIONS = ("input", "h0", "output")
#: Jiang et al.'s signature: quartiles and fences.
SIGNATURE = ("q1", "median", "q3", "lower_fence", "upper_fence")


def margin_column(rep: str, stat: str, correct_only: bool = True) -> str:
    """``m_<rep>_<stat>`` over correctly classified points, ``m_all_<rep>_<stat>`` over all of them."""
    return f"m_{rep}_{stat}" if correct_only else f"m_all_{rep}_{stat}"


#: The margin columns in table order: per representation, per statistic, correct points then all points.
MARGIN_COLUMNS = tuple(margin_column(r, s, c) for r in MARGIN_REPRESENTATIONS for s in SIGNATURE for c in (True, False))
OTHER_PREDICTORS = ("hessian_trace", "hessian_top_eigenvalue", "sharpness", "grad_norm",
                    "log_spectral_norm_product", "distance_from_init", "n_params")
#: The transform of every feature column before the regression.
TRANSFORMS: dict[str, str] = {
    **{c: "slog" for c in MARGIN_COLUMNS},
    "hessian_trace": "slog", "hessian_top_eigenvalue": "slog", "sharpness": "slog", "grad_norm": "slog",
    "log_spectral_norm_product": "identity", "distance_from_init": "slog", "n_params": "ln",
}
_APPLY = {"slog": slog, "ln": lambda x: np.log(np.asarray(x, float)), "identity": lambda x: np.asarray(x, float)}

#: The main specification: the signature at every shared representation, correct points only.
MAIN = "margins_all_layers"


def _margin_features(reps: tuple[str, ...], correct_only: bool = True) -> tuple[str, ...]:
    return tuple(margin_column(r, s, correct_only) for r in reps for s in SIGNATURE)


#: name -> (family, feature columns, description)
SPECIFICATIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    MAIN: ("margins", _margin_features(MARGIN_REPRESENTATIONS),
           "margin signature at input, h0 and output (correct points)"),
    "margins_output": ("margins", _margin_features(("output",)), "margin signature at the output"),
    "margins_h0": ("margins", _margin_features(("h0",)), "margin signature at the first hidden layer"),
    "margins_input": ("margins", _margin_features(("input",)), "margin signature at the input"),
    "margins_all_points": ("margins", _margin_features(MARGIN_REPRESENTATIONS, False),
                           "margin signature at input, h0 and output (all points)"),
    **{p: ("other", (p,), p.replace("_", " ")) for p in OTHER_PREDICTORS},
    "other_predictors": ("other", OTHER_PREDICTORS, "all the other predictors together"),
    "margins_and_other": ("combined", _margin_features(MARGIN_REPRESENTATIONS) + OTHER_PREDICTORS,
                          "margin signature and the other predictors"),
}


def column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` of ``frame`` as float (n,), NaN where NULL."""
    return frame[name].cast(pl.Float64).fill_null(math.nan).to_numpy()


def design(frame: pl.DataFrame, features: tuple[str, ...]) -> np.ndarray:
    """Feature columns of ``frame`` under their fixed transforms: (n, k) float, NaN where missing."""
    cols = [_APPLY[TRANSFORMS[f]](column(frame, f)) for f in features]
    return np.column_stack(cols) if cols else np.empty((frame.height, 0))


def complete(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows (n,) with every feature of X (n, k) and the target y (n,) finite."""
    return np.isfinite(X).all(axis=1) & np.isfinite(y)
