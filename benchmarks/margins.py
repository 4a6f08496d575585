"""Margins and sharpness in the extraction worker: what they cost.

1. Margins at every representation by one backward pass of sum_n (f_i - f_j)(x_n) (the engine) against
   the per-point autograd loop (one backward per point: the brute-force reference of the tests), on the
   training split of a few data sets and models.
2. The share of a spectral snapshot that margins (train + test) and whole-model sharpness take, timed
   inside the same snapshot.

Run: ``.venv/bin/python benchmarks/margins.py`` (1 thread, as an extraction worker; medians of 5).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_time  # noqa: E402
from pipeline.curvature.engine import CurvatureSettings  # noqa: E402
from pipeline.curvature.sharpness import loss_sharpness_row  # noqa: E402
from pipeline.datasets.run_data import prepared_dataset, run_data  # noqa: E402
from pipeline.extract.checkpoint import evaluate_checkpoint, spectral_snapshot  # noqa: E402
from pipeline.models.mlp import build_model  # noqa: E402
from pipeline.runspec import SIZE_PRESETS, RunSpec  # noqa: E402
from pipeline.snapshot.margins import margin_rows, representation_names  # noqa: E402
from pipeline.training.optim import loss_function  # noqa: E402

CASES = [("iris", "small"), ("breast_cancer", "medium"), ("digits", "medium"), ("digits", "large")]


def per_point_margins(model, X, y) -> None:
    """The reference: one forward and one backward per point, every representation."""
    m64 = model.double().eval()
    for n in range(X.shape[0]):
        h = X[n:n + 1].double().clone().requires_grad_(True)
        reps = [h]
        for block in m64.blocks:
            h = block(h)
            reps.append(h)
        f = reps[-1][0].detach()
        i = int(y[n])
        others = f.clone()
        others[i] = -float("inf")
        j = int(others.argmax())
        torch.autograd.grad(reps[-1][0, i] - reps[-1][0, j], reps)
    model.float()


def snapshot_parts(name: str, size: str) -> tuple[float, float, float]:
    """Median seconds of a whole spectral snapshot (at initialization), of its margins and of its sharpness."""
    spec = RunSpec(dataset=name, size=size, widths=SIZE_PRESETS[size])
    data = run_data(spec, prepared_dataset(name))
    tensors = {s: data.tensors(s) for s in ("train", "test", "probe")}
    model = build_model(spec, tensors["train"][0].shape[1], data.dataset.output_dim)
    loss_fn = loss_function("classification")
    _, _, grads = evaluate_checkpoint(model, data, tensors, loss_fn)
    splits = {s: tensors[s] for s in ("train", "test")}
    settings = CurvatureSettings(spec.hessian_exact_limit, spec.hvp_budget, "sum", "cpu")
    t_snap = median_time(lambda: spectral_snapshot(model, tensors["probe"], grads, loss_fn, "classification",
                                                   settings, 0, 0, splits), 3)
    t_margin = median_time(lambda: margin_rows(model, splits), 5)
    t_sharp = median_time(lambda: loss_sharpness_row(model, *tensors["probe"], loss_fn, "classification",
                                                     np.random.default_rng(0)), 5)
    return t_snap, t_margin, t_sharp


def main() -> None:
    torch.set_num_threads(1)
    print("| data set | model | train points | representations | per-point loop (s) | one backward (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, size in CASES:
        spec = RunSpec(dataset=name, size=size, widths=SIZE_PRESETS[size])
        data = run_data(spec, prepared_dataset(name))
        X, y = data.tensors("train")
        model = build_model(spec, X.shape[1], data.dataset.output_dim)
        t_loop = median_time(lambda m=model, X=X, y=y: per_point_margins(m, X, y), 3)
        t_fast = median_time(lambda m=model, X=X, y=y: margin_rows(m, {"train": (X, y)}), 5)
        print(f"| {name} | {size} {list(spec.widths)} | {len(y)} | {len(representation_names(len(model.blocks)))} "
              f"| {t_loop:.3f} | {t_fast:.4f} | {t_loop / t_fast:.0f}x |")

    print()
    print("| data set | model | spectral snapshot (s) | margins, train + test (s) | share "
          "| sharpness + top eigenvalue (s) | share |")
    print("|---|---|---|---|---|---|---|")
    for name, size in CASES:
        t_snap, t_margin, t_sharp = snapshot_parts(name, size)
        print(f"| {name} | {size} | {t_snap:.3f} | {t_margin:.4f} | {t_margin / t_snap:.1%} | {t_sharp:.4f} "
              f"| {t_sharp / t_snap:.1%} |")
    print(f"\n(torch {torch.__version__}, 1 thread, {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
