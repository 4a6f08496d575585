"""The coupling map: what the HVP estimator costs against the exact Hessian and a per-product loop.

For deep plain MLPs (B blocks of width 16 on 128 probe points, float64, one thread):
1. ``exact``: the full Hessian by ``torch.autograd.functional.hessian`` (the tests' reference), then
   the Frobenius norm of every block H_ij;
2. ``loop``: the same B x m Rademacher products as the estimator, one reverse-over-reverse backward
   pass each through a gradient graph built once (``hvp_loop``);
3. ``vmap``: the estimator as extraction runs it, forward-over-reverse products vmap-ed in chunks.
Ratios against ``exact`` and ``loop`` measured in the same run; the estimate's error against the
exact kappa in jackknife standard errors; and the product count against the Hutchinson traces of the
B diagonal blocks at the same m (equal by construction: the column blocks come from those products).

Run: ``.venv/bin/python benchmarks/coupling.py`` (medians of 3).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_time  # noqa: E402
from pipeline.curvature.coupling import (  # noqa: E402
    block_loss,
    coupling_map,
    exact_coupling,
    hvp_loop,
    rademacher_block_probes,
)
from pipeline.models.block_graph import trace_block_graph  # noqa: E402
from pipeline.models.mlp import MLP  # noqa: E402

PROBES = 8
REPEATS = 3


def main() -> None:
    torch.set_num_threads(1)
    print(f"coupling map, m = {PROBES} probes per block, medians of {REPEATS} (1 thread, float64)")
    print("| blocks | parameters | exact Hessian (s) | HVP loop (s) | vmap HVPs (s) | exact / vmap | loop / vmap "
          "| max abs(kappa - exact) / SE | HVPs (= Hutchinson traces) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for depth in (5, 10, 20):
        torch.manual_seed(0)
        model = MLP(13, (16,) * (depth - 1), 3, activation="sigmoid").double().eval()
        g = torch.Generator().manual_seed(0)
        X = torch.randn(128, 13, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (128,), generator=g)
        graph = trace_block_graph(model, model.block_names())
        loss = block_loss(model, graph, X, y, nn.CrossEntropyLoss())
        P = loss.theta0.numel()
        t_exact = median_time(lambda loss=loss: exact_coupling(loss), 1 if P > 4000 else REPEATS)
        probes = rademacher_block_probes(loss.slices, P, PROBES, np.random.default_rng(0))
        V = torch.as_tensor(probes.reshape(-1, P))
        t_loop = median_time(lambda loss=loss, V=V: hvp_loop(loss.f, loss.theta0, V), REPEATS)
        t_vmap = median_time(lambda loss=loss: coupling_map(loss, PROBES, np.random.default_rng(0)), REPEATS)
        est = coupling_map(loss, PROBES, np.random.default_rng(0))
        exact, _ = exact_coupling(loss)
        off = ~np.eye(loss.n_blocks, dtype=bool)
        z = float(np.max(np.abs(est.kappa - exact)[off] / est.stderr[off]))
        print(f"| {loss.n_blocks} | {P:,} | {t_exact:.2f} | {t_loop:.3f} | {t_vmap:.3f} | {t_exact / t_vmap:.0f}x "
              f"| {t_loop / t_vmap:.1f}x | {z:.2f} | {est.n_hvp} |")


if __name__ == "__main__":
    main()
