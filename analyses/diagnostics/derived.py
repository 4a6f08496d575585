"""The quantities the rules derive from ``analysis_features_layer`` (see the stage docstring:
local_eligible, the structural zeros of the local Hessian, the relative gradient norm, the loss-Hessian
effective rank and the chance similarity of adjacent layers)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy.special import gammaln

from pipeline.curvature.activations import has_zero_second_derivative


def expected_abs_cosine(n: np.ndarray) -> np.ndarray:
    """E|cos| of the angle between two independent uniform directions in R^n:
    Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)); n: (m,) positive -> (m,)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(n >= 1, np.exp(gammaln(n / 2) - gammaln((n + 1) / 2)) / math.sqrt(math.pi), np.nan)


def derive_columns(layer: pl.DataFrame, runs: pl.DataFrame) -> pl.DataFrame:
    """``analysis_features_layer`` rows plus the derived columns of the stage docstring (Derived quantities).

    layer: needs run_id, step, layer_index, activation, is_output, local_exactly_zero, in_features,
    out_features, local_near_zero_fraction, grad_norm (and the columns the rules read);
    runs: run_id, n_probe.
    """
    frame = layer.join(runs.select("run_id", "n_probe"), on="run_id", how="left")
    zero_act = [a for a in frame["activation"].unique().to_list() if a is None or has_zero_second_derivative(a)]
    structural = (1 - pl.col("n_probe") / (pl.col("in_features") + 1)).clip(lower_bound=0.0)
    first_grad = pl.col("grad_norm").sort_by("step").first().over(["run_id", "layer_index"])
    frame = frame.with_columns(
        hidden=~pl.col("is_output").fill_null(False),
        local_eligible=(~pl.col("is_output").fill_null(False) & ~pl.col("activation").is_in(zero_act)
                        & ~pl.col("local_exactly_zero").fill_null(False)),
        local_structural_zero_fraction=structural.fill_null(0.0),
        relative_grad_norm=pl.when(first_grad > 0).then(pl.col("grad_norm") / first_grad),
        is_first_snapshot=pl.col("step") == pl.col("step").min().over("run_id"),
        adjacent_chance=pl.Series(expected_abs_cosine(frame["out_features"].to_numpy())),
    )
    s = pl.col("local_structural_zero_fraction")
    return frame.with_columns(
        local_excess_near_zero=pl.when(s < 1).then((pl.col("local_near_zero_fraction") - s) / (1 - s)),
        adjacent_similarity_over_chance=pl.col("adjacent_similarity") / pl.col("adjacent_chance"),
        position=pl.when(pl.col("hidden")).then(pl.lit("hidden")).otherwise(pl.lit("output")),
        loss_effective_rank=pl.col("loss_effective_rank_ratio") * pl.col("out_features") * (pl.col("in_features") + 1),
    )
