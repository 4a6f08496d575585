"""Benchmarks of the curvature engine; every speed-up is a ratio to a baseline timed in the same run.

1. local:   local-Hessian eigenvalues of sigmoid layers q = d in {16, 32, 64, 128} (256 extrapolated),
            ``closed_form`` vs the paper's Algorithm 1 (``autograd_rows``) + dense ``eigvalsh``;
2. exact:   the exact loss block by ``vmap``, the row loop and ``torch.func.hessian``, by block size;
3. top:     the top eigenvalue of a loss block to 1e-4 relative: Lanczos (eigsh) vs power iteration
            (PyHessian's method), products and seconds; and one HVP against one gradient;
4. extract: seconds per spectral snapshot from the extractor's own ``timings`` table, for the whole
            default config and for a stratified sample of configs/paper.toml, with the paper
            config's extraction time projected from that sample.

Threads are pinned (``--threads``, default 2, the machine's cores); times are medians of repeats.

    .venv/bin/python benchmarks/curvature.py [--only local,exact,top,extract]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_time  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.curvature.dense_hessian import hessian_func, hessian_rows, hessian_vmap  # noqa: E402
from pipeline.curvature.local_hessian import local_hessian_closed_form  # noqa: E402
from pipeline.curvature.objective import local_objective, loss_objective  # noqa: E402
from pipeline.curvature.stochastic import GraphHVP, lanczos_extreme, power_iteration  # noqa: E402
from pipeline.models.mlp import MLP  # noqa: E402


def sigmoid_layer(width: int, n: int = 256, seed: int = 0):
    torch.manual_seed(seed)
    block = MLP(width, (width,), 2, "sigmoid").double().eval().blocks[0]
    z = torch.randn(n, width, dtype=torch.float64)
    return block, z


def bench_local(sizes=(16, 32, 64, 128), extrapolate=256) -> None:
    print("\n## Local Hessian eigenvalues: closed_form vs autograd_rows + dense eigvalsh (sigmoid, N = 256)\n")
    print("| layer | parameters | autograd_rows (s) | eigvalsh (s) | baseline total (s) | closed_form (s) "
          "| speed-up |")
    print("|---|---|---|---|---|---|---|")
    last = None
    for w in sizes:
        block, z = sigmoid_layer(w)
        p = w * (w + 1)
        closed = median_time(lambda b=block, zz=z: local_hessian_closed_form(b, zz, "sum").eigenvalues(), 5)
        repeats = 3 if p <= 5000 else 1
        obj = local_objective(block, z, "sum")
        rows = median_time(lambda o=obj: hessian_rows(o), repeats)
        dense = hessian_rows(obj)
        eig = median_time(lambda d=dense: torch.linalg.eigvalsh(d), repeats)
        del dense
        print(f"| {w}x{w} | {p} | {rows:.3f} | {eig:.3f} | {rows + eig:.3f} | {closed:.4f} | "
              f"{(rows + eig) / closed:,.0f}x |")
        last = (p, rows, eig)
    if extrapolate:
        w = extrapolate
        block, z = sigmoid_layer(w)
        p = w * (w + 1)
        closed = median_time(lambda: local_hessian_closed_form(block, z, "sum").eigenvalues(), 3)
        obj = local_objective(block, z, "sum")
        n_rows = 1000  # time a subset of Algorithm 1's rows; the dense matrix itself would be p^2 doubles
        theta = obj.theta0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(obj.f(theta), theta, create_graph=True)
        t = time.perf_counter()
        for j in range(n_rows):
            torch.autograd.grad(g[j], theta, retain_graph=True)
        rows = (time.perf_counter() - t) * p / n_rows
        eig = last[2] * (p / last[0]) ** 3
        print(f"| {w}x{w} (extrapolated: {n_rows} rows timed and scaled by p; eigvalsh scaled by p^3 "
              f"from {int(np.sqrt(last[0]))}; dense matrix {p * p * 8 / 2**30:.0f} GiB) | {p} | {rows:.0f} | "
              f"{eig:.0f} | {rows + eig:.0f} | {closed:.3f} | {(rows + eig) / closed:,.0f}x |")


def bench_exact(widths=(8, 16, 20, 24, 32, 48, 64)) -> None:
    print("\n## Exact loss block: vmap vs row loop vs torch.func.hessian (tanh MLP, first hidden layer, N = 256)\n")
    print("| parameters | vmap (s) | rows (s) | func.hessian (s) | fastest | rows / vmap |")
    print("|---|---|---|---|---|---|")
    for w in widths:
        torch.manual_seed(0)
        m = MLP(w, (w, w), 3, "tanh").double().eval()
        X, y = torch.randn(256, w, dtype=torch.float64), torch.randint(0, 3, (256,))
        obj = loss_objective(m, 1, X, y, nn.CrossEntropyLoss())
        t_v = median_time(lambda o=obj: hessian_vmap(o), 3)
        t_r = median_time(lambda o=obj: hessian_rows(o), 3 if obj.n_params < 2000 else 1)
        t_f = median_time(lambda o=obj: hessian_func(o), 3)
        best = min((t_v, "vmap"), (t_r, "rows"), (t_f, "func.hessian"))[1]
        print(f"| {obj.n_params} | {t_v:.3f} | {t_r:.3f} | {t_f:.3f} | {best} | {t_r / t_v:.1f}x |")


def trained_block(dataset: str = "breast_cancer", width: int = 64, steps: int = 400):
    """Layer 1 of a medium sigmoid MLP trained with Adam on a real data set: a realistic loss block."""
    from pipeline.datasets import prepared_dataset, run_data
    from pipeline.runspec import RunSpec

    spec = RunSpec(dataset=dataset, size="custom", widths=(width, width), activation="sigmoid")
    data = run_data(spec, prepared_dataset(dataset))
    X, y = data.tensors("train")
    torch.manual_seed(0)
    m = MLP(X.shape[1], (width, width), data.dataset.output_dim, "sigmoid")
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(X), y).backward()
        opt.step()
    Xp, yp = data.tensors("probe")
    return m.double().eval(), Xp.double(), yp


def _products_to_accuracy(matvec, n: int, dominant: float, rng, method: str, rtol: float = 1e-4,
                          cap: int = 3000) -> int:
    """Products until the estimate of the dominant eigenvalue is within rtol of the exact one (oracle
    stopping): power iteration's Rayleigh quotient, or the extreme Ritz value of plain Lanczos."""
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    if method == "power":
        for k in range(1, cap + 1):
            hv = matvec(v)
            if abs(float(v @ hv) - dominant) <= rtol * abs(dominant):
                return k
            v = hv / np.linalg.norm(hv)
        return cap
    basis, alpha, beta = [v], [], []
    for k in range(1, cap + 1):
        w = matvec(basis[-1])
        alpha.append(float(w @ basis[-1]))
        q = np.array(basis)
        w = w - q.T @ (q @ w)
        w = w - q.T @ (q @ w)
        t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
        ritz = np.linalg.eigvalsh(t)
        if abs(ritz[np.argmax(np.abs(ritz))] - dominant) <= rtol * abs(dominant):
            return k
        beta.append(float(np.linalg.norm(w)))
        basis.append(w / beta[-1])
    return cap


def bench_top() -> None:
    print("\n## Dominant eigenvalue of a loss block to 1e-4 relative error: Lanczos vs power iteration\n")
    print("Blocks of 64-64 sigmoid MLPs after 400 Adam steps; N = 256 probe points. 'to 1e-4' columns count the "
          "products until the estimate is truly within 1e-4 of the exact eigenvalue (oracle stopping, median of "
          "5 seeds); 'PyHessian rule' stops power iteration when the estimate changes by < 1e-4 and reports the "
          "error it actually reached; 'engine' is eigsh as the extractor calls it.\n")
    print("| data set | layer | parameters | \\|l2\\| / \\|l1\\| | power to 1e-4 | Lanczos to 1e-4 | ratio "
          "| PyHessian rule: products, error | engine eigsh: products, error |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for dataset in ("breast_cancer", "wine", "glass", "digits"):
        m, X, y = trained_block(dataset)
        for layer in (1, 2):
            obj = loss_objective(m, layer, X, y, nn.CrossEntropyLoss())
            exact = torch.linalg.eigvalsh(hessian_vmap(obj)).numpy()
            dominant = float(exact[np.argmax(np.abs(exact))])
            gap = np.sort(np.abs(exact))[-2] / abs(dominant)
            hvp = GraphHVP(obj)
            power = statistics.median(_products_to_accuracy(hvp, obj.n_params, dominant, np.random.default_rng(s),
                                                            "power") for s in range(5))
            lanczos = statistics.median(_products_to_accuracy(hvp, obj.n_params, dominant,
                                                              np.random.default_rng(s), "lanczos") for s in range(5))
            ratios.append(power / lanczos)
            h = GraphHVP(obj)
            value, _ = power_iteration(h, obj.n_params, np.random.default_rng(0), rtol=1e-4, max_iter=5000)
            py = (h.calls, abs(value - dominant) / abs(dominant))
            h = GraphHVP(obj)
            r = lanczos_extreme(h, obj.n_params, 1, "LM", budget=2000, rng=np.random.default_rng(0), tol=1e-4)
            eng = (h.calls, abs(r.values[np.argmax(np.abs(r.values))] - dominant) / abs(dominant))
            print(f"| {dataset} | {layer} | {obj.n_params} | {gap:.2f} | {power:.0f} | {lanczos:.0f} | "
                  f"{power / lanczos:.1f}x | {py[0]}, {py[1]:.1e} | {eng[0]}, {eng[1]:.0e} |")
    print(f"\npower iteration needs {statistics.median(ratios):.1f}x the products of Lanczos (median over blocks) "
          "to reach the same true accuracy.")
    m, X, y = trained_block("breast_cancer")
    obj = loss_objective(m, 1, X, y, nn.CrossEntropyLoss())
    hvp = GraphHVP(obj)
    v = torch.randn(obj.n_params, dtype=torch.float64)
    t_hvp = median_time(lambda: hvp.torch_matvec(v), 50)
    theta = obj.theta0.clone().requires_grad_(True)
    t_grad = median_time(lambda: torch.autograd.grad(obj.f(theta), theta), 50)
    t_fresh = median_time(lambda: GraphHVP(obj).torch_matvec(v), 20)
    print(f"\none HVP reusing the graph: {t_hvp * 1e3:.2f} ms; one gradient (forward + backward): "
          f"{t_grad * 1e3:.2f} ms; ratio {t_hvp / t_grad:.2f}. A fresh HVP (new graph each time): "
          f"{t_fresh * 1e3:.2f} ms, {t_fresh / t_hvp:.1f}x the reused one.")


def _extract(config: Path, tmp: Path, limit_ids: list[str] | None, workers: int) -> tuple[float, Path]:
    db, shards = tmp / "c.duckdb", tmp / "shards"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "pipeline", "extract", "--config", str(config), "--shards", str(shards),
           "--workers", str(workers), "--quiet"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t
    subprocess.run([sys.executable, "-m", "pipeline", "ingest", "--config", str(config), "--shards", str(shards),
                    "--db", str(db), "--quiet"], cwd=ROOT, env=env, check=True, capture_output=True)
    return wall, db


def _sample_config(paper: Path, per_group: int, out: Path) -> tuple[Path, dict]:
    """A config holding a stratified sample of the paper runs: per (study, size), ``per_group`` runs
    spread evenly over the group's data sets. Returns the config and each group's full run count."""
    import tomllib

    raw = tomllib.loads(paper.read_text())
    cfg = load_config(paper)
    groups: dict[tuple[str, str], list] = {}
    for study in cfg.studies:
        for r in study.runs:
            groups.setdefault((study.name, r.size), []).append(r)
    lines = ['[corpus]\nname = "paper_sample"\n', "[run]"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in raw["run"].items()]
    counts = {}
    for (study, size), runs in sorted(groups.items()):
        counts[(study, size)] = len(runs)
        pick = [runs[int(i)] for i in np.linspace(0, len(runs) - 1, per_group)]
        for j, r in enumerate(pick):
            d = r.to_dict()
            grid = {k: d[k] for k in ("dataset", "size", "activation", "optimizer", "init", "lr", "momentum")}
            lines.append(f'\n[[study]]\nname = "{study}-{size}-{j}"\n[study.grid]')
            lines += [f"{k} = {v!r}".replace("'", '"') for k, v in grid.items()]
    out.write_text("\n".join(lines) + "\n")
    return out, counts


def bench_extract(workers: int, per_group: int) -> None:
    print("\n## Extraction time per spectral snapshot (from the extractor's `timings` table)\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-curv-") as tmp:
        tmp = Path(tmp)
        (tmp / "default").mkdir()
        wall, db = _extract(ROOT / "configs" / "default.toml", tmp / "default", None, workers)
        rows.append(("default (all runs)", wall, db))
        (tmp / "paper").mkdir()
        sample, counts = _sample_config(ROOT / "configs" / "paper.toml", per_group, tmp / "sample.toml")
        wall_s, db_s = _extract(sample, tmp / "paper", None, workers)
        rows.append((f"paper (stratified sample, {per_group} per study x size)", wall_s, db_s))
        print("| corpus | runs | wall (s) | spectral snapshots | median s / snapshot | mean s / snapshot "
              "| share of run time in spectral work |")
        print("|---|---|---|---|---|---|---|")
        for name, wall, db in rows:
            con = duckdb.connect(str(db), read_only=True)
            n_runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
            med, mean, n, spec = con.execute(
                "SELECT median(seconds), avg(seconds), count(*), sum(seconds) FROM timings "
                "WHERE what = 'spectral'").fetchall()[0]
            total = con.execute("SELECT sum(wall_seconds) FROM runs").fetchall()[0][0]
            print(f"| {name} | {n_runs} | {wall:.1f} | {n} | {med:.3f} | {mean:.3f} | {spec / total:.0%} |")
            con.close()
        print("\nLanczos rows (blocks above the exact limit) whose ARPACK runs met their tolerance in budget:\n")
        print("| corpus | kind | Lanczos rows | top-k converged | bottom-k converged |")
        print("|---|---|---|---|---|")
        for name, _, db in rows:
            con = duckdb.connect(str(db), read_only=True)
            for kind, n, top, bottom in con.execute("""
                    SELECT kind, count(*), sum(converged::INTEGER), sum(bottom_converged::INTEGER)
                    FROM hessian_spectra WHERE method = 'lanczos' GROUP BY kind ORDER BY kind""").fetchall():
                print(f"| {name} | {kind} | {n} | {top} | {'n/a (PSD)' if bottom is None else bottom} |")
            con.close()
        con = duckdb.connect(str(db_s), read_only=True)
        per_group_mean = dict(((s, z), v) for s, z, v in con.execute("""
            SELECT split_part(st.study, '-', 1), r.size, avg(r.wall_seconds)
            FROM runs r JOIN studies st USING (run_id) GROUP BY 1, 2""").fetchall())
        con.close()
        cpu = sum(n * per_group_mean[g] for g, n in counts.items())
        sampled = sum(1 for _ in counts) * per_group
        print(f"\nprojection for configs/paper.toml ({sum(counts.values())} runs): sum over (study, size) of "
              f"runs x mean sampled run time = {cpu / 60:.1f} CPU-minutes, / {workers} workers = "
              f"**{cpu / workers / 60:.1f} minutes** of extraction (sample: {sampled} runs measured in "
              f"{wall_s:.0f} s wall; run times measured with {workers} workers sharing the cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="local,exact,top,extract")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-group", type=int, default=3, help="paper runs sampled per (study, size)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.only.split(","))
    print(f"# Curvature benchmarks ({os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads)")
    if "local" in parts:
        bench_local()
    if "exact" in parts:
        bench_exact()
    if "top" in parts:
        bench_top()
    if "extract" in parts:
        bench_extract(args.workers, args.per_group)


if __name__ == "__main__":
    main()
