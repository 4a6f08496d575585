"""Shared inputs of the diagnostics tests: a healthy layer row, the derived frame of planted rows, and
runs whose configurations make normalization twins."""

from __future__ import annotations

import json

import polars as pl

from analyses.diagnostics.derived import derive_columns

#: A healthy sigmoid hidden layer: no rule should fire on it.
HEALTHY = {
    "run_id": "r1", "step": 0, "layer_index": 0, "dataset": "toy", "norm": "none", "activation": "sigmoid",
    "is_output": False, "local_exactly_zero": False, "in_features": 9, "out_features": 16, "n_layers": 3,
    "grad_norm": 1.0, "saturation_fraction": 0.05, "local_near_zero_fraction": 0.1,
    "local_effective_rank_ratio": 0.2, "local_bias_share_ratio": 1.5, "loss_bias_share_ratio": 1.2,
    "loss_symmetry": 1.2, "loss_negative_mass": 0.1, "loss_near_zero_fraction": 0.2,
    "loss_effective_rank_ratio": 0.05, "loss_relative_std": 5.0, "weight_rank_ratio": 1.0,
    "weight_stable_rank": 4.0, "alignment": 0.2, "adjacent_similarity": 0.6,
}
FLOATS = [k for k, v in HEALTHY.items() if isinstance(v, float)]


def layer_frame(rows: list[dict], n_probe: int = 64) -> pl.DataFrame:
    """The derived layer frame of ``rows``, each HEALTHY but for what it plants."""
    layer = pl.DataFrame([{**HEALTHY, **r} for r in rows]).with_columns(pl.col(FLOATS).cast(pl.Float64))
    runs = pl.DataFrame({"run_id": sorted(set(layer["run_id"])), "n_probe": n_probe})
    return derive_columns(layer, runs)


def severities(findings: pl.DataFrame) -> list[str]:
    return findings.sort("run_id", "step", "layer_index")["severity"].to_list()


def runs_with_configs() -> pl.DataFrame:
    """An unnormalized run, its batch-norm and layer-norm twins, and a layer-norm run with another lr."""
    base = {"dataset": "toy", "widths": [8, 8], "activation": "sigmoid", "lr": 0.01, "seed": 0,
            "spectral_snapshots": 10}
    configs = {
        "plain": {**base, "norm": "none"},
        "bn": {**base, "norm": "batchnorm", "spectral_snapshots": 5},   # measurement setting ignored
        "ln": {**base, "norm": "layernorm"},
        "ln_other_lr": {**base, "norm": "layernorm", "lr": 0.1},        # no twin: another lr
    }
    return pl.DataFrame([{"run_id": k, "norm": v["norm"], "n_probe": 64, "config_json": json.dumps(v)}
                         for k, v in configs.items()])

