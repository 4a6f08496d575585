"""Benchmark: seconds of one loss Hessian-vector product of a whole model, near the paper's 9M.

A matrix-free row costs about ``hvp_budget`` such products per block and kind, each one forward and
backward pass of the N probes (reverse-over-forward, ``torch.func.jvp`` of ``grad``) through the
network, so this is the unit of a snapshot's cost where a full snapshot would take hours. Each model
is built untrained in float64 (as the engine works), and the first product (warm-up) is dropped;
prints the median of the rest.

    .venv/bin/python benchmarks/product_cost.py [--threads 2] [--repeats 3] [--probes 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (family, data set, widths): a 6.5M-parameter Transformer (d_model 448, 4 layers) and a
#: 4.1M-parameter 2-D CNN (two convolutions of 640 channels).
MODELS = [("transformer", "wine", (448,) * 4), ("cnn2d", "digits", (640, 640))]


def product_seconds(family: str, dataset: str, widths: tuple[int, ...], probes: int, repeats: int) -> tuple[int, float]:
    import torch

    from pipeline.datasets.run_data import prepared_dataset, run_data
    from pipeline.models.build import build_network
    from pipeline.models.mlp import count_parameters
    from pipeline.runspec import RunSpec

    spec = RunSpec(dataset=dataset, family=family, size="custom", widths=widths, probe_size=probes,
                   activation="gelu")
    data_set = prepared_dataset(dataset)
    X, y = run_data(spec, data_set).tensors("probe")
    torch.manual_seed(0)
    model = build_network(spec, data_set.X.shape[1], data_set.output_dim, data_set.feature_names).double().eval()
    X = X.double()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, p, (X,)), y)

    v = {k: torch.randn_like(t) for k, t in params.items()}
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        torch.func.jvp(torch.func.grad(loss), (params,), (v,))
        times.append(time.perf_counter() - t)
    return count_parameters(model), statistics.median(times[1:])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"one loss Hessian-vector product, {args.threads} thread(s), N = {args.probes}, "
          f"median of {args.repeats} after a warm-up")
    print("| family | widths | parameters | seconds / product |\n|---|---|---:|---:|")
    for family, dataset, widths in MODELS:
        p, seconds = product_seconds(family, dataset, widths, args.probes, args.repeats)
        print(f"| {family} ({dataset}) | {'x'.join(map(str, widths))} | {p:,} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
