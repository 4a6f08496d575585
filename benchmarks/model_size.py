"""Benchmark: seconds and peak memory of one spectral snapshot per model size, and the cost model.

One spectral snapshot (:func:`pipeline.extract.run.measure_checkpoint` with ``is_spectral``: every
block's local, loss and Gauss-Newton rows, pressure, natural-gradient norm, weight and gradient
spectra, saturation, margins, sharpness) of an untrained model at each size of a ladder, each in a
fresh process on ``--threads`` threads (extraction runs one thread per run), so that its peak
resident memory (``ru_maxrss``) is its own. The smallest size is the baseline measured in the same
invocation.

Cost model (the README states it): above the exact limit every row is Lanczos or a Gram matrix, and
the time is dominated by the ``hvp_budget`` Hessian-vector products per block and kind, each one
forward-and-backward pass of the N probes through the network, O(N p) for p parameters, plus the
full reorthogonalization, O(p_i steps^2) per run. At a fixed depth, N and budget the seconds are
predicted to grow like p (the ``predicted`` column: baseline seconds x p / p_baseline). Peak memory
is modelled as linear in p too, a + b p (the Lanczos basis, 8 p_i steps bytes, is one of several
p-sized terms): a and b are fitted on the two smallest sizes and the model is checked on the rest.

    .venv/bin/python benchmarks/model_size.py [--family mlp] [--threads 1] [--repeats 1]

One size instead of a ladder, at another probe count and budget (the near-9M rows of
docs/benchmarks.md), printing how many Lanczos tops converged per kind:

    .venv/bin/python benchmarks/model_size.py --family transformer --widths 512,512,512,512 --probes 32 --hvp-budget 80
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: family -> (data set, ladder of widths): each ladder's largest model is about 9M parameters for the
#: MLP; the CNN's and Transformer's are smaller because a snapshot of theirs costs far more per
#: parameter on a CPU (see the README).
LADDERS = {
    "mlp": ("digits", [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048)]),
    "cnn2d": ("digits", [(32, 32), (64, 64), (128, 128)]),
    "transformer": ("wine", [(32, 32, 32, 32), (64, 64, 64, 64), (128, 128, 128, 128)]),
}


def measure_one(family: str, dataset: str, widths: tuple[int, ...], threads: int, probes: int = 128,
                hvp_budget: int = 320, product_dtype: str = "float32") -> dict:
    """One snapshot of one model, in this process: parameters, seconds, per-kind seconds, peak RSS."""
    import torch
    from threadpoolctl import threadpool_limits

    from pipeline.curvature.engine import CurvatureSettings
    from pipeline.datasets.run_data import prepared_dataset, run_data
    from pipeline.extract.run import measure_checkpoint, measured_margin_splits
    from pipeline.models.build import build_network
    from pipeline.models.mlp import count_parameters
    from pipeline.runspec import RunSpec
    from pipeline.training.optim import loss_function

    torch.set_num_threads(threads)
    spec = RunSpec(dataset=dataset, family=family, size="custom", widths=widths, probe_size=probes,
                   hvp_budget=hvp_budget, activation="relu" if family == "mlp" else "gelu")
    data_set = prepared_dataset(dataset)
    data = run_data(spec, data_set)
    tensors = {s: data.tensors(s) for s in ("train", "test", "probe")}
    torch.manual_seed(0)
    model = build_network(spec, data_set.X.shape[1], data_set.output_dim, data_set.feature_names)
    settings = CurvatureSettings(spec.hessian_exact_limit, spec.hvp_budget, "sum", "cpu", product_dtype)
    with threadpool_limits(limits=threads):
        t = time.perf_counter()
        _, _, snap = measure_checkpoint(model, data, tensors, loss_function(data_set.task), settings, 0, 0, True,
                                        measured_margin_splits(data, tensors))
        seconds = time.perf_counter() - t
    spectra = snap.tables()["hessian_spectra"]
    lanczos = [r for r in spectra if r["method"] == "lanczos"]
    by_kind: dict[str, float] = {}
    for r in spectra:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + r["seconds"]
    return {"params": count_parameters(model), "largest_block": max(r["n_params"] for r in spectra),
            "blocks": len({r["layer_index"] for r in spectra}), "seconds": seconds, "by_kind": by_kind,
            "converged": {kind: [sum(bool(r["converged"]) for r in lanczos if r["kind"] == kind),
                                 sum(r["kind"] == kind for r in lanczos)] for kind in ("local", "loss", "ggn")},
            "methods": sorted({f"{r['kind']}:{r['method']}" for r in spectra}),
            "products": {kind: sum(r["n_hvp"] for r in spectra if r["kind"] == kind)
                         for kind in ("local", "loss", "ggn")},
            "lanczos": [f"{r['layer_index']}:{r['kind']}:{r['product_dtype']}:{r['stop_reason']}:{r['n_hvp']}:"
                        f"{r['seconds']:.1f}s" for r in lanczos],
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_case(family: str, dataset: str, widths: tuple[int, ...], threads: int, probes: int, hvp_budget: int,
             product_dtype: str = "float32") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--one", family, dataset, ",".join(map(str, widths)),
                          "--threads", str(threads), "--probes", str(probes), "--hvp-budget", str(hvp_budget),
                          "--product-dtype", product_dtype],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{family} {widths} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="+", default=["mlp"], choices=sorted(LADDERS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--probes", type=int, default=128, help="probe points N (the corpus's probe_size)")
    parser.add_argument("--hvp-budget", type=int, default=320,
                        help="products per matrix-free row (the corpus's hvp_budget)")
    parser.add_argument("--widths", help="one size instead of the ladder (e.g. 512,512,512,512): its row "
                                         "only, with no cost model checked; needs one --family")
    parser.add_argument("--product-dtype", nargs="+", default=["float32"], choices=("float32", "float64"),
                        help="dtype(s) of the matrix-free products; with --widths, one row per dtype")
    parser.add_argument("--one", nargs=3, metavar=("FAMILY", "DATASET", "WIDTHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        family, dataset, widths = args.one
        print(json.dumps(measure_one(family, dataset, tuple(int(w) for w in widths.split(",")), args.threads,
                                     args.probes, args.hvp_budget, args.product_dtype[0])))
        return
    print(f"model-size benchmark: {os.cpu_count()} cores, {args.threads} thread(s), probe N = {args.probes}, "
          f"hvp_budget {args.hvp_budget}, {args.repeats} repeat(s), medians; one fresh process per snapshot")
    if args.widths:
        if len(args.family) != 1:
            raise SystemExit("--widths measures one size of one --family")
        (family,) = args.family
        dataset, widths = LADDERS[family][0], tuple(int(w) for w in args.widths.split(","))
        print("\n| family | widths | products | parameters | largest block | blocks | seconds / snapshot | "
              "local / loss / GGN s | local / loss / GGN products | Lanczos top converged (local / loss / GGN) | "
              "peak RSS |\n|---|---|---|---:|---:|---:|---:|---|---|---|---:|")
        for dtype in args.product_dtype:
            r = run_case(family, dataset, widths, args.threads, args.probes, args.hvp_budget, dtype)
            kinds = " / ".join(f"{r['by_kind'].get(kind, 0.0):.0f}" for kind in ("local", "loss", "ggn"))
            spent = " / ".join(f"{r['products'][kind]}" for kind in ("local", "loss", "ggn"))
            conv = " / ".join(f"{a}/{b}" for a, b in (r["converged"][k] for k in ("local", "loss", "ggn")))
            print(f"| {family} ({dataset}) | {'x'.join(map(str, widths))} | {dtype} | {r['params']:,} | "
                  f"{r['largest_block']:,} | {r['blocks']} | {r['seconds']:.1f} | {kinds} | {spent} | {conv} | "
                  f"{r['peak_rss'] / 2**20:,.0f} MiB |")
            print("Lanczos rows (block:kind:dtype:stop:products:seconds): " + ", ".join(r["lanczos"]))
        print("\nmethods (kind:method): " + ", ".join(r["methods"]))
        return
    print("\n| family | widths | parameters | largest block | seconds / snapshot | vs smallest | predicted (x p) "
          "| local / loss / GGN s | peak RSS | predicted RSS |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    notes = []
    for family in args.family:
        dataset, ladder = LADDERS[family]
        measured = []
        for widths in ladder:
            runs = [run_case(family, dataset, widths, args.threads, args.probes, args.hvp_budget)
                    for _ in range(args.repeats)]
            measured.append((widths, runs[0], statistics.median(x["seconds"] for x in runs),
                             max(x["peak_rss"] for x in runs)))
        (_, first, base_s, base_rss), (_, second, _, second_rss) = measured[0], measured[1]
        bytes_per_param = (second_rss - base_rss) / (second["params"] - first["params"])
        for k, (widths, r, seconds, rss) in enumerate(measured):
            predicted = base_s * r["params"] / first["params"]
            rss_model = "(fitted)" if k < 2 else \
                f"{(base_rss + bytes_per_param * (r['params'] - first['params'])) / 2**20:,.0f} MiB"
            kinds = " / ".join(f"{r['by_kind'].get(kind, 0.0):.0f}" for kind in ("local", "loss", "ggn"))
            print(f"| {family} | {'x'.join(map(str, widths))} | {r['params']:,} | {r['largest_block']:,} | "
                  f"{seconds:.1f} | {seconds / base_s:.2f}x | {predicted:.1f} | {kinds} | "
                  f"{rss / 2**20:,.0f} MiB | {rss_model} |", flush=True)
            notes.append(f"{family} {'x'.join(map(str, widths))}: {', '.join(r['methods'])}")
    print("\nmethods (kind:method) per snapshot:\n" + "\n".join(f"- {n}" for n in notes))


if __name__ == "__main__":
    main()
