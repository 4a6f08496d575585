"""Benchmarks of the curvature engine; every speed-up is a ratio to a baseline timed in the same run.

1. local:   local-Hessian eigenvalues of sigmoid layers q = d in {16, 32, 64, 128} (256 extrapolated),
            ``closed_form`` vs the paper's Algorithm 1 (``autograd_rows``) + dense ``eigvalsh``;
2. exact:   the exact loss block by ``vmap``, the row loop and ``torch.func.hessian``, by block size;
3. top:     the top eigenvalue of a loss block to 1e-4 relative: Lanczos vs power iteration
            (PyHessian's method), products and seconds; and one HVP against one gradient;
4. estimators: every matrix-free column against the exact spectrum on real blocks of 1-5k
            parameters (trained MLPs, loss and layer-norm local blocks, 10 probe seeds each): bias,
            spread and how often the exact value lies within 2 stored standard errors, for the
            engine before schema 6 (BASELINE_COMMIT's estimators, restated here) and now;
5. snapshot: seconds and products per snapshot by kind, BASELINE_COMMIT's engine (checked out with
            ``git archive`` and run in a subprocess) against the current one on the same snapshots;
6. corpus:  on a built corpus (``--db``, default build/corpus.duckdb): at least 50 stored Lanczos
            rows small enough to decompose, recomputed exactly, their stored errors checked; and the
            share of Lanczos rows whose ends converged;
7. extract: seconds per spectral snapshot from the extractor's own ``timings`` table, for the whole
            default config and for a stratified sample of configs/paper.toml, with the paper
            config's extraction time projected from that sample.

Threads are pinned (``--threads``, default 2, the machine's cores); times are medians of repeats.

    .venv/bin/python benchmarks/curvature.py [--only local,exact,top,estimators,snapshot,corpus,extract]
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
from pipeline.curvature import engine  # noqa: E402
from pipeline.curvature.dense_hessian import hessian_func, hessian_rows, hessian_vmap  # noqa: E402
from pipeline.curvature.kronecker import local_kronecker, loss_kronecker  # noqa: E402
from pipeline.curvature.lanczos import lanczos  # noqa: E402
from pipeline.curvature.local_hessian import local_hessian_closed_form  # noqa: E402
from pipeline.curvature.matrix_free import matrix_free_summary  # noqa: E402
from pipeline.curvature.objective import local_objective, loss_objective  # noqa: E402
from pipeline.curvature.stochastic import GraphHVP, power_iteration  # noqa: E402
from pipeline.models.mlp import MLP  # noqa: E402

#: The last commit before curvature estimates carried their errors (schema 5): the baseline.
BASELINE_COMMIT = "14e27b5"


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
    print("\n## Exact loss block: the Kronecker form vs vmap, the row loop and torch.func.hessian "
          "(tanh MLP, second hidden layer, N = 256)\n")
    print("| parameters | kronecker (s) | vmap (s) | rows (s) | func.hessian (s) | vmap / kronecker |")
    print("|---|---|---|---|---|---|")
    for w in widths:
        torch.manual_seed(0)
        m = MLP(w, (w, w), 3, "tanh").double().eval()
        X, y = torch.randn(256, w, dtype=torch.float64), torch.randint(0, 3, (256,))
        obj = loss_objective(m, 1, X, y, nn.CrossEntropyLoss())
        t_k = median_time(lambda mm=m, xx=X, yy=y: loss_kronecker(mm, 1, xx, yy, nn.CrossEntropyLoss())[0].dense(), 3)
        t_v = median_time(lambda o=obj: hessian_vmap(o), 3)
        t_r = median_time(lambda o=obj: hessian_rows(o), 3 if obj.n_params < 2000 else 1)
        t_f = median_time(lambda o=obj: hessian_func(o), 3)
        print(f"| {obj.n_params} | {t_k:.4f} | {t_v:.3f} | {t_r:.3f} | {t_f:.3f} | {t_v / t_k:.0f}x |")


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
          "error it actually reached; 'engine' is the extractor's Lanczos stopped once the top Ritz value "
          "converged.\n")
    print("| data set | layer | parameters | \\|l2\\| / \\|l1\\| | power to 1e-4 | Lanczos to 1e-4 | ratio "
          "| PyHessian rule: products, error | engine Lanczos: products, error |")
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
            by_lanczos = statistics.median(_products_to_accuracy(hvp, obj.n_params, dominant,
                                                                 np.random.default_rng(s), "lanczos") for s in range(5))
            ratios.append(power / by_lanczos)
            h = GraphHVP(obj)
            value, _ = power_iteration(h, obj.n_params, np.random.default_rng(0), rtol=1e-4, max_iter=5000)
            py = (h.calls, abs(value - dominant) / abs(dominant))
            r = lanczos(GraphHVP(obj), np.random.default_rng(0).standard_normal(obj.n_params), 300,
                        stop_when_top_converged=True)
            eng = (r.n_matvec, abs(r.ritz_values[np.argmax(np.abs(r.ritz_values))] - dominant) / abs(dominant))
            print(f"| {dataset} | {layer} | {obj.n_params} | {gap:.2f} | {power:.0f} | {by_lanczos:.0f} | "
                  f"{power / by_lanczos:.1f}x | {py[0]}, {py[1]:.1e} | {eng[0]}, {eng[1]:.0e} |")
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



# -- 4. estimators: bias, spread and coverage on real blocks ------------------------------------

def real_blocks(min_params: int = 1000, max_params: int = 5000) -> list[dict]:
    """Loss blocks and layer-norm local blocks of 1-5k parameters from MLPs trained 300 Adam steps on
    real data sets, with their exact eigenvalues (from the Kronecker form, which the tests check
    against autograd): what the matrix-free rows of the default corpus are made of."""
    from pipeline.datasets import prepared_dataset, run_data
    from pipeline.runspec import RunSpec

    out = []
    for dataset, activation, norm in (("breast_cancer", "sigmoid", "none"), ("breast_cancer", "tanh", "batchnorm"),
                                      ("wine", "tanh", "none"), ("wine", "relu", "none"),
                                      ("digits", "sigmoid", "layernorm"), ("glass", "sigmoid", "none")):
        spec = RunSpec(dataset=dataset, size="medium", widths=(64, 64), activation=activation, norm=norm)
        data = run_data(spec, prepared_dataset(dataset))
        X, y = data.tensors("train")
        torch.manual_seed(0)
        m = MLP(X.shape[1], (64, 64), data.dataset.output_dim, activation, norm)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(m(X), y).backward()
            opt.step()
        m = m.double().eval()
        Xp, yp = data.tensors("probe")
        Xp = Xp.double()
        with torch.no_grad():
            inter = m.intermediates(Xp)
        for layer in range(2):
            kron, _ = loss_kronecker(m, layer, Xp, yp, nn.CrossEntropyLoss())
            kinds = [("loss", kron)]
            if norm == "layernorm":
                kinds.append(("local", local_kronecker(m.blocks[layer], inter.inputs[layer], "sum")))
            for kind, k in kinds:
                if min_params <= k.n_params <= max_params:
                    lam, vecs = np.linalg.eigh(k.dense().numpy())
                    out.append({"name": f"{dataset} {activation} {norm} layer {layer} {kind}", "lam": lam,
                                "vecs": vecs, "kind": kind})
    return out


class _RotatedRademacher:
    """Rademacher draws rotated into an eigenbasis: Lanczos and Hutchinson see H only through its
    action on the probes, so diag(lambda) with probes V^T v gives the same numbers as H with v (to
    round-off) at O(n) per product instead of O(n^2)."""

    def __init__(self, rng: np.random.Generator, vecs: np.ndarray):
        self.rng, self.vecs = rng, vecs

    def choice(self, values, size):
        return self.vecs.T @ self.rng.choice(values, size=size)

    def standard_normal(self, size):
        return self.vecs.T @ self.rng.standard_normal(size)


def baseline_summary(lam: np.ndarray, vecs: np.ndarray, rng: np.random.Generator, budget: int = 150) -> dict:
    """The matrix-free row of the engine at BASELINE_COMMIT, restated: ARPACK top-8 (40 % of the
    budget) and bottom-8 (20 %), Hutch++ trace (20 %), and 2 SLQ runs sharing the rest, whose nodes gave
    negative mass, std, skewness, effective rank and near-zero fraction, with no standard errors."""
    import scipy.sparse.linalg as sla

    n = lam.size
    op = sla.LinearOperator((n, n), matvec=lambda v: lam * np.ravel(v), dtype=np.float64)
    rot = _RotatedRademacher(rng, vecs)

    def eigs(which, b):
        k, ncv = 8, min(n, max(17, min(20, b // 2)))
        try:
            return sla.eigsh(op, k=k, which=which, v0=rot.standard_normal(n), ncv=ncv,
                             maxiter=max(1, (b - ncv) // (ncv - k)), tol=1e-6, return_eigenvectors=False), True
        except sla.ArpackNoConvergence as exc:
            return np.asarray(exc.eigenvalues), False

    top, top_ok = eigs("LA", 2 * budget // 5)
    bottom, bottom_ok = eigs("SA", budget // 5)
    m = budget // 5
    k = m // 3
    s_ = np.column_stack([rot.choice(np.array([-1.0, 1.0]), size=n) for _ in range(k)])
    q, _ = np.linalg.qr(lam[:, None] * s_)
    g = np.column_stack([rot.choice(np.array([-1.0, 1.0]), size=n) for _ in range(max(1, m - 2 * k))])
    g = g - q @ (q.T @ g)
    trace = float(np.trace(q.T @ (lam[:, None] * q))) + float(np.mean(np.sum(g * (lam[:, None] * g), 0)))
    steps = max(2, (budget - 2 * budget // 5 - budget // 5 - budget // 5) // 2)
    runs = [lanczos(lambda v: lam * v, rot.choice(np.array([-1.0, 1.0]), size=n), steps) for _ in range(2)]
    theta = np.concatenate([r.ritz_values for r in runs])
    w = np.concatenate([r.weights for r in runs]) / 2
    mean = float(w @ theta)
    var = max(float(w @ theta**2) - mean**2, 0.0)
    top_abs = max(float(np.abs(np.concatenate([top, bottom])).max()), float(np.abs(theta).max()))
    return {"trace": trace, "std": var**0.5, "skewness": float(w @ (theta - mean) ** 3) / var**1.5,
            "negative_mass": float((w * np.abs(theta))[theta < 0].sum() / (w * np.abs(theta)).sum()),
            "effective_rank": n * float(w @ np.abs(theta)) / top_abs,
            "near_zero_fraction": float(w[np.abs(theta) <= 1e-3 * top_abs].sum()),
            "top_eigenvalue": float(top.max()) if top.size else None, "converged": top_ok,
            "bottom_eigenvalue": float(bottom.min()) if bottom.size else None, "bottom_converged": bottom_ok}


def exact_summaries(lam: np.ndarray) -> dict:
    import scipy.stats

    a = np.abs(lam)
    return {"trace": lam.sum(), "std": lam.std(), "skewness": scipy.stats.skew(lam),
            "negative_mass": a[lam < 0].sum() / a.sum(), "effective_rank": a.sum() / a.max(),
            "near_zero_fraction": float((a <= 1e-3 * a.max()).mean()),
            "top_eigenvalue": lam.max(), "bottom_eigenvalue": lam.min()}


ESTIMATED = ("trace", "std", "skewness", "negative_mass", "effective_rank", "near_zero_fraction")


def _covered(estimate: float, stderr: float | None, exact: float) -> bool | None:
    """|estimate - exact| <= 2 stderr, with a round-off allowance for columns exact to 1e-9."""
    if stderr is None:
        return None
    return abs(estimate - exact) <= 2 * stderr + 1e-9 * max(abs(exact), 1e-300)


def bench_estimators(seeds: int = 10) -> None:
    print("\n## Matrix-free columns against the exact spectrum on real blocks (1-5k parameters)\n")
    blocks = real_blocks()
    budget = engine.CurvatureSettings().hvp_budget
    steps = budget // engine.SLQ_VECTORS
    print(f"{len(blocks)} blocks ({sum(b['kind'] == 'loss' for b in blocks)} loss, "
          f"{sum(b['kind'] == 'local' for b in blocks)} layer-norm local) x {seeds} probe seeds. 'before': "
          f"the engine at {BASELINE_COMMIT} (150 products: ARPACK ends, Hutch++, 2 SLQ runs of 15 steps); "
          f"'after': {engine.SLQ_VECTORS} Lanczos runs of {steps} steps ({budget} products), with the exact "
          "trace and Frobenius norm of the Kronecker form (as the engine passes them for q <= 181 at N = 256) "
          "and, in the last column, without them (wide layers). Relative errors (estimate - exact) / |exact|; "
          "bias = their median, spread = their interquartile range; coverage = share within 2 stored "
          "standard errors (before: none stored). ReLU loss blocks are PSD: their negative mass (exactly 0 "
          "up to round-off) is left out of its row.\n")
    cols = {c: {"before": [], "after": [], "after_free": [], "cov": [], "cov_free": []} for c in ESTIMATED}
    ends = {"before": [0, 0, 0], "after": [0, 0, 0]}
    for b in blocks:
        lam, vecs = b["lam"], b["vecs"]
        ex = exact_summaries(lam)
        psd = lam.min() > -1e-12 * np.abs(lam).max()
        for seed in range(seeds):
            before = baseline_summary(lam, vecs, np.random.default_rng([seed, 1]))
            after = matrix_free_summary(lambda v, lam=lam: lam * v, lam.size, engine.SLQ_VECTORS, steps,
                                        _RotatedRademacher(np.random.default_rng([seed, 2]), vecs),
                                        trace=lam.sum(), frobenius_sq=float((lam**2).sum()))
            free = matrix_free_summary(lambda v, lam=lam: lam * v, lam.size, engine.SLQ_VECTORS, steps,
                                       _RotatedRademacher(np.random.default_rng([seed, 3]), vecs))
            for c in ESTIMATED:
                if c == "negative_mass" and psd:
                    continue
                scale = abs(ex[c]) if ex[c] != 0 else 1.0
                cols[c]["before"].append((before[c] - ex[c]) / scale)
                if after[c] is not None:
                    cols[c]["after"].append((after[c] - ex[c]) / scale)
                    cols[c]["cov"].append(_covered(after[c], after[f"{c}_stderr"], ex[c]))
                    cols[c]["after_free"].append((free[c] - ex[c]) / scale)
                    cols[c]["cov_free"].append(_covered(free[c], free[f"{c}_stderr"], ex[c]))
            for name, row in (("before", before), ("after", after)):
                ends[name][0] += 1
                ends[name][1] += bool(row["bottom_converged"]) and row["bottom_eigenvalue"] is not None
                if row["bottom_eigenvalue"] is not None:
                    ends[name][2] = max(ends[name][2], abs(row["bottom_eigenvalue"] - lam.min()) / np.abs(lam).max())

    def stat(v):
        v = np.asarray(v, float)
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        return f"{med:+.3f} / {q3 - q1:.3f}"

    print("| column | before: bias / spread | after: bias / spread | after: coverage | "
          "after, trace estimated: bias / spread | coverage |")
    print("|---|---|---|---|---|---|")
    for c in ESTIMATED:
        d = cols[c]
        if not d["after"]:
            print(f"| {c} | {stat(d['before'])} | NULL (not estimable from quadrature) | - | NULL | - |")
            continue
        cov = [x for x in d["cov"] if x is not None]
        cov_free = [x for x in d["cov_free"] if x is not None]
        print(f"| {c} | {stat(d['before'])} | {stat(d['after'])} | {np.mean(cov):.0%} | {stat(d['after_free'])} | "
              f"{np.mean(cov_free):.0%} |")
    for name, (n, ok, worst) in ends.items():
        print(f"\n{name}: bottom eigenvalue converged in {ok} of {n} rows; largest bottom error "
              f"{worst:.1e} of the spectral scale.")


# -- 5. seconds and products per snapshot, baseline engine vs now -------------------------------

_SNAPSHOT_SCRIPT = r"""
import json, statistics, sys, time
import torch
from threadpoolctl import threadpool_limits
from pipeline.curvature.engine import CurvatureSettings, curvature_snapshot
from pipeline.datasets.run_data import prepared_dataset, run_data
from pipeline.models.build import build_network
from pipeline.runspec import SIZE_PRESETS, RunSpec
from pipeline.training.optim import loss_function
torch.set_num_threads(1)
out = []
for kw in json.loads(sys.argv[1]):
    spec = RunSpec(**kw, widths=SIZE_PRESETS[kw["size"]])
    data = prepared_dataset(spec.dataset)
    rd = run_data(spec, data)
    model = build_network(spec, data.X.shape[1], data.output_dim, data.feature_names)
    X, y = rd.tensors("train")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = loss_function(data.task)
    for _ in range(100):
        opt.zero_grad(); loss_fn(model(X), y).backward(); opt.step()
    model.eval()
    Xp, yp = rd.tensors("probe")
    times, rows = [], None
    with threadpool_limits(1):
        curvature_snapshot(model, Xp, yp, loss_fn, data.task, CurvatureSettings(), 0, 1)  # warm (imports)
        for _ in range(3):
            t = time.perf_counter()
            rows, _ = curvature_snapshot(model, Xp, yp, loss_fn, data.task, CurvatureSettings(), 0, 1)
            times.append(time.perf_counter() - t)
    kinds = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"seconds": 0.0, "n_hvp": 0, "methods": []})
        k["seconds"] += r["seconds"]; k["n_hvp"] += int(r["n_hvp"] or 0); k["methods"].append(r["method"])
    out.append({"spec": kw, "seconds": statistics.median(times), "kinds": kinds,
                "params": [r["n_params"] for r in rows if r["kind"] == "loss"]})
print(json.dumps(out))
"""

SNAPSHOT_SPECS = [
    {"dataset": "breast_cancer", "size": "medium", "activation": "sigmoid"},
    {"dataset": "wine", "size": "medium", "activation": "relu"},
    {"dataset": "diabetes", "size": "medium", "activation": "tanh"},
    {"dataset": "digits", "size": "medium", "activation": "sigmoid", "norm": "layernorm"},
    {"dataset": "digits", "size": "large", "activation": "relu"},
    {"dataset": "iris", "size": "small", "activation": "relu"},
]


def _run_snapshots(root: Path) -> list[dict]:
    import json

    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-c", _SNAPSHOT_SCRIPT, json.dumps(SNAPSHOT_SPECS)], cwd=root, env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_snapshot() -> None:
    print(f"\n## Seconds and products per spectral snapshot: the engine at {BASELINE_COMMIT} vs now\n")
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_COMMIT], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        before = _run_snapshots(Path(tmp))
    after = _run_snapshots(ROOT)
    print("Each network trained 100 full-batch Adam steps, then one snapshot timed 3 times (median, one thread "
          "as in a worker, after a warm-up call); both engines at their defaults (hvp_budget 150 before, "
          f"{engine.CurvatureSettings().hvp_budget} now). Products: the rows' n_hvp summed over layers (before: "
          "p per exact loss block and the Lanczos budget; now: q pre-activation products per Kronecker form, "
          "m' vector-Jacobian products per Gauss-Newton factor, and the Lanczos products).\n")
    print("| network | parameters per layer | before (s) | after (s) | after / before | products before "
          "(local/loss/ggn) | products after | methods after (loss; ggn) |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = []
    for b, a in zip(before, after, strict=True):
        spec = b["spec"]
        name = f"{spec['dataset']} {spec['size']} {spec['activation']} {spec.get('norm', 'none')}"
        prods = lambda r: "/".join(str(r["kinds"][k]["n_hvp"]) for k in ("local", "loss", "ggn"))  # noqa: E731
        methods = ", ".join(a["kinds"]["loss"]["methods"]) + "; " + ", ".join(a["kinds"]["ggn"]["methods"])
        ratios.append(a["seconds"] / b["seconds"])
        params = "/".join(str(p) for p in a["params"])
        print(f"| {name} | {params} | {b['seconds']:.3f} | {a['seconds']:.3f} | {a['seconds'] / b['seconds']:.2f}x | "
              f"{prods(b)} | {prods(a)} | {methods} |")
    print(f"\nmedian after / before: {statistics.median(ratios):.2f}x")


# -- 6. a built corpus: stored errors against exact recomputation --------------------------------

def bench_corpus(db: Path, sample: int = 120) -> None:
    import snapshot_loader
    from pipeline.training.optim import loss_function

    print(f"\n## Stored matrix-free rows of {db} against exact recomputation\n")
    if not db.exists():
        print(f"({db} does not exist: run `make report` first)")
        return
    with snapshot_loader.open(db) as corpus:
        conv = corpus.sql("""SELECT kind, count(*) AS n, sum(converged::INT) AS top,
                                    sum(bottom_converged::INT) AS bottom
                             FROM hessian_spectra WHERE method = 'lanczos' GROUP BY kind ORDER BY kind""")
        methods = corpus.sql("SELECT kind, method, count(*) AS n FROM hessian_spectra GROUP BY ALL ORDER BY ALL")
        rows = corpus.sql(f"""
            SELECT h.*, r.task FROM hessian_spectra h JOIN runs r USING (run_id)
            WHERE h.method = 'lanczos' AND h.kind IN ('loss', 'local') AND h.n_params <= 5000
            ORDER BY hash(h.run_id || h.step::VARCHAR || h.layer_index::VARCHAR || h.kind) LIMIT {sample}""")
        hits = {c: [] for c in ("trace", "std", "skewness", "negative_mass", "effective_rank")}
        end_ok = []
        for r in rows.iter_rows(named=True):
            model = corpus.model(r["run_id"], r["step"]).double().eval()
            X, y = corpus.probe_batch(r["run_id"])
            X = X.double()
            y = y.double() if r["task"] == "regression" else y
            if r["kind"] == "loss":
                kron, _ = loss_kronecker(model, r["layer_index"], X, y, loss_function(r["task"]))
            else:
                with torch.no_grad():
                    z = model.intermediates(X).inputs[r["layer_index"]]
                kron = local_kronecker(model.blocks[r["layer_index"]], z, "sum")
            lam = np.linalg.eigvalsh(kron.dense().numpy())
            ex = exact_summaries(lam)
            for c in hits:
                se = r["trace_stderr"] if c == "trace" else r[f"{c}_stderr"]
                if r[c] is not None and not (c == "negative_mass" and lam.min() > -1e-12 * np.abs(lam).max()):
                    hits[c].append(_covered(r[c], se, ex[c]))
            # a residual bounds the distance to *an* eigenvalue; for a converged end that is the end itself
            # (allowance 1e-10 of the scale: two float64 eigensolvers agree to about 1e-12 here, and a run
            # that broke down reports residual 0)
            tol = 1e-10 * np.abs(lam).max()
            for value, residual, ok, exact_end in ((r["top_eigenvalue"], r["top_residual"], r["converged"], lam.max()),
                                                   (r["bottom_eigenvalue"], r["bottom_residual"],
                                                    r["bottom_converged"], lam.min())):
                error = abs(value - exact_end)
                end_ok.append((ok, error <= residual + tol, error / np.abs(lam).max()))
    print(f"{rows.height} Lanczos rows (loss and local, at most 5,000 parameters) recomputed exactly from their "
          "stored weights and probe batch:\n")
    print("| column | rows | within 2 stored standard errors |")
    print("|---|---|---|")
    for c, v in hits.items():
        v = [x for x in v if x is not None]
        print(f"| {c} | {len(v)} | {np.mean(v):.0%} |" if v else f"| {c} | 0 | - |")
    done = [e for e in end_ok if e[0]]
    undone = [e for e in end_ok if not e[0]]
    print(f"\nconverged ends (top and bottom) within their stored residuals of the exact end: "
          f"{sum(e[1] for e in done)} of {len(done)} (largest error of a converged end "
          f"{max(e[2] for e in done):.1e} of the spectral scale); unconverged ends: {len(undone)}"
          + (f", largest error {max(e[2] for e in undone):.1e}" if undone else ""))
    print("\nAll Lanczos rows of the corpus, per kind: converged ends\n")
    print("| kind | Lanczos rows | top converged | bottom converged |")
    print("|---|---|---|---|")
    for k, n, top, bottom in conv.iter_rows():
        print(f"| {k} | {n} | {top} ({top / n:.0%}) | {bottom} ({bottom / n:.0%}) |")
    print("\nRows by kind and method:\n")
    print("| kind | method | rows |")
    print("|---|---|---|")
    for k, m, n in methods.iter_rows():
        print(f"| {k} | {m} | {n} |")


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
    parser.add_argument("--only", default="local,exact,top,estimators,snapshot,corpus,extract")
    parser.add_argument("--db", type=Path, default=ROOT / "build" / "corpus.duckdb",
                        help="a built corpus for the 'corpus' part")
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
    if "estimators" in parts:
        bench_estimators()
    if "snapshot" in parts:
        bench_snapshot()
    if "corpus" in parts:
        bench_corpus(args.db)
    if "extract" in parts:
        bench_extract(args.workers, args.per_group)


if __name__ == "__main__":
    main()
