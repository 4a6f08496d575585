"""Benchmark: the curvature engine side by side with PyHessian and curvlinops, at the same accuracy.

Three loss-Hessian blocks of trained models on a probe batch of 128 standardized ``load_digits``
points (cross-entropy, eval mode, every parameter outside the block fixed):

- linear:    the hidden 1024 x 1024 ``nn.Linear`` (weight and bias, 1,049,600 parameters) of a tanh
             MLP 64 -> 1024 -> 1024 -> 10;
- conv:      a 256 -> 256 3x3 ``nn.Conv2d`` (590,080, padding 1) of a tanh CNN on the digits as 1 x 8 x 8
             images, run on the 2 x 2 maps after a 4 x 4 max-pool (on 2 shared cores a product over
             8 x 8 maps costs 15x more, and the exact trace grows with the positions squared);
- attention: one ``nn.MultiheadAttention`` (in_proj and out_proj, 66,048; d_model 128, 4 heads) of a
             one-layer Transformer reading the 8 rows of a digit as 8 tokens.

Each model is trained 2-3 epochs with Adam (float32) on the other 1,669 digits. Attention runs under
``second_order_attention()`` for every library (the math SDPA backend, twice differentiable).

Quantities, each timed from the model to the answer (the library's setup included: the engine's
objective and retained graph, PyHessian's ``hessian`` object, curvlinops' ``HessianLinearOperator``),
threads pinned (torch and threadpoolctl), in one process:

1. top eigenvalue to 1e-6 relative, the median of ``--repeats`` runs taken in turn (engine, PyHessian,
   curvlinops, engine, ...: a change in the shared machine's load falls on all alike). Reference: 40+
   steps of the engine's Lanczos in float64 from another start, certified by its residual (<= 1e-8 of
   the value). Engine: ``lanczos(...,
   stop_when_top_converged=True)`` (its own rule: the top Ritz value's residual <= 1e-4 of the
   scale, checked every 4 steps; the error of an isolated top eigenvalue is then about
   residual^2 / gap, far below 1e-6). PyHessian: ``eigenvalues(maxIter, tol=1e-6)`` (power
   iteration, stopping when the Rayleigh quotient changes by less than tol); if that misses 1e-6, tol is
   tightened tenfold (to 1e-8) while that still brings it closer. curvlinops: scipy ``eigsh(k=1,
   which="LA", tol=1e-6)`` on ``HessianLinearOperator.to_scipy()`` (ARPACK, the route curvlinops'
   documentation uses).
2. trace to 1 %. Reference: the exact trace, computed through the block's output z: for a block
   whose parameters enter one affine map z[n, o, s] = sum_k W[o, k] U[n, k, s] + b[o] (U: the block
   input as fan-in features at s positions), tr H = sum_{n, o, s, s'} (U_n^T U_n + 1)[s, s']
   d^2 L / dz[n, o, s] dz[n, o, s'], and d^2 L / dz^2 has no cross-sample terms, so C x S products
   in z space (each through the cheap rest of the network, batched with ``vmap``) give it exactly.
   Every library runs Rademacher Hutchinson in batches of 16 probes (engine: ``hutchinson_trace``;
   PyHessian: ``trace(maxIter=16, tol=0)``, which returns its samples; curvlinops: its operator on
   a 16-column matrix, the formula of its ``hutchinson_trace``, whose samples it does not return)
   until the standard error is at most 0.5 % of the estimate (a 2-SE interval of +-1 %) or
   ``--trace-seconds`` are spent (one run each). The three draw the same estimator, so they need the
   same number of probes in expectation, n* = var(v^T H v) / (0.005 tr H)^2 (the variance pooled over
   all the block's runs, the exact trace); what differs is the seconds per probe. A run stopped by time
   reports setup + n* x its seconds per probe, marked "projected" (at 1 % the loss blocks here need
   hundreds to thousands of probes). PyHessian's own rule (``trace(tol=1e-2)``:
   stop when the running mean moves less than 1 %) is a row of its own.
3. SLQ density at an equal budget: the engine's default 8 Lanczos runs of 40 steps
   (``matrix_free_summary``), PyHessian's ``density(iter=40, n_v=8)`` and curvlinops'
   ``lanczos_approximate_spectrum(ncv=40, num_repeats=8)`` (whose boundaries are an ``eigsh`` at
   tol 1e-2, counted). Accuracy: the trace the density implies (its first moment x p) and its top
   node, against the references.
4. product / gradient: seconds of one Hessian-vector product over seconds of one gradient of the same
   loss with respect to the block (median of ``--ratio-repeats`` after a warm-up): the engine's
   ``GraphHVP`` (one backward pass through the retained graph), PyHessian's
   ``hessian_vector_product`` (the same, on its retained ``.grad`` graph) and curvlinops' matvec
   (forward-over-reverse, the whole forward pass again each product).

The engine runs in each of ``--dtypes`` (float64 and float32: model, data and vectors; ``GraphHVP``
follows the objective's dtype), PyHessian and curvlinops in each of ``--anchor-dtypes`` (float32, their
usual; PyHessian draws its vectors in torch's default dtype, which is set for its calls), and the top
eigenvalue, cheap, for all three in every dtype. References are float64, and are kept in ``--cache``
(build/anchors_reference.json, keyed by a hash of the trained weights and the probe batch): the exact
traces take minutes on 2 cores, the attention block's most. PyHessian 0.1's
``density`` calls ``torch.eig``, a stub that raises since torch 1.9, so a stand-in (``torch.linalg.eigh`` of its
symmetric tridiagonal, in the old return layout) is installed for the duration of its calls.

    .venv/bin/python benchmarks/anchors.py [--quick] [--blocks linear,conv,attention]
        [--dtypes float64,float32] [--anchor-dtypes float32] [--threads 2] [--repeats 3] [--json PATH]

needs ``pip install -e '.[bench]'`` (PyHessian; curvlinops comes with ``dev``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_time  # noqa: E402
from pipeline.curvature.attention import second_order_attention  # noqa: E402
from pipeline.curvature.lanczos import lanczos  # noqa: E402
from pipeline.curvature.matrix_free import matrix_free_summary  # noqa: E402
from pipeline.curvature.parameter_group import ParameterGroup, loss_objective  # noqa: E402
from pipeline.curvature.stochastic import GraphHVP, hutchinson_trace  # noqa: E402

PROBES = 128
TOP_RTOL = 1e-6
#: Hutchinson stops once its standard error is at most this share of the estimate (2 SE = 1 %).
TRACE_SE_RTOL = 0.005
TRACE_BATCH = 16
DENSITY_VECTORS, DENSITY_STEPS = 8, 40
LOSS = nn.CrossEntropyLoss()


# ----------------------------------------------------------------------------------------------
# data and models


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """load_digits standardized, shuffled (seed 0): (X_probe, y_probe, X_train, y_train), float32."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = (data.data - data.data.mean(0)) / np.where(data.data.std(0) > 0, data.data.std(0), 1.0)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = torch.tensor(X[order], dtype=torch.float32), torch.tensor(data.target[order])
    return X[:PROBES], y[:PROBES], X[PROBES:], y[PROBES:]


@dataclass
class AffinePart:
    """One affine map inside a block: z[n, o, s] = sum_k W[o, k] U[n, k, s] + b[o] at the model's
    parameters, and the loss as a function of z (everything after it, the rest fixed)."""

    patches: torch.Tensor  # U (N, K, S)
    z: torch.Tensor  # (N, C, S)
    rest: Callable[[torch.Tensor], torch.Tensor]


class DigitsMLP(nn.Module):
    block = ("hidden.weight", "hidden.bias")

    def __init__(self) -> None:
        super().__init__()
        self.first, self.hidden, self.head = nn.Linear(64, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(torch.tanh(self.first(x)))))

    def affine_parts(self, X: torch.Tensor, y: torch.Tensor) -> list[AffinePart]:
        u = torch.tanh(self.first(X))
        z = self.hidden(u)
        return [AffinePart(u.unsqueeze(-1), z.unsqueeze(-1), lambda z: LOSS(self.head(torch.tanh(z[..., 0])), y))]


class DigitsCNN(nn.Module):
    block = ("conv.weight", "conv.bias")

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv, self.head = nn.Conv2d(1, 256, 3, padding=1), nn.Conv2d(256, 256, 3, padding=1), \
            nn.Linear(1024, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(torch.tanh(self.stem(x.view(-1, 1, 8, 8))), 4)  # (N, 256, 2, 2)

    def after(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(z).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.conv(self.features(x)))

    def affine_parts(self, X: torch.Tensor, y: torch.Tensor) -> list[AffinePart]:
        h = self.features(X)
        z = self.conv(h)
        n, c = z.shape[:2]
        return [AffinePart(F.unfold(h, 3, padding=1), z.reshape(n, c, -1),
                           lambda z: LOSS(self.after(z.reshape(n, c, 2, 2)), y))]


class DigitsAttention(nn.Module):
    """The 8 rows of a digit as 8 tokens of 8 features, projected to d_model 128; one multi-head
    attention with a residual and a layer norm; mean over tokens; a linear head."""

    block = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias")

    def __init__(self, d: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.embed, self.pos = nn.Linear(8, d), nn.Parameter(0.02 * torch.randn(8, d))
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x.view(-1, 8, 8)) + self.pos

    def after(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(h + a).mean(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x)
        return self.after(h, self.attn(h, h, h, need_weights=False)[0])

    def context(self, qkv: torch.Tensor) -> torch.Tensor:
        """nn.MultiheadAttention's forward from its in-projection (N, T, 3d) to before out_proj."""
        n, t, _ = qkv.shape
        heads, d = self.attn.num_heads, self.attn.embed_dim
        q, k, v = (u.reshape(n, t, heads, d // heads).transpose(1, 2) for u in qkv.split(d, -1))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)

    def affine_parts(self, X: torch.Tensor, y: torch.Tensor) -> list[AffinePart]:
        h = self.tokens(X)
        qkv = F.linear(h, self.attn.in_proj_weight, self.attn.in_proj_bias)
        ctx = self.context(qkv)
        out = self.attn.out_proj(ctx)
        return [
            AffinePart(h.transpose(1, 2), qkv.transpose(1, 2),
                       lambda z: LOSS(self.after(h, self.attn.out_proj(self.context(z.transpose(1, 2)))), y)),
            AffinePart(ctx.transpose(1, 2), out.transpose(1, 2),
                       lambda z: LOSS(self.after(h, z.transpose(1, 2)), y)),
        ]


BLOCKS: dict[str, tuple[type[nn.Module], int]] = {"linear": (DigitsMLP, 3), "conv": (DigitsCNN, 2),
                                                   "attention": (DigitsAttention, 3)}


def trained(name: str, X: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """The block's model, trained ``epochs`` epochs with Adam (lr 1e-3, batches of 64), in eval mode."""
    cls, epochs = BLOCKS[name]
    torch.manual_seed(0)
    model = cls()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        for i in range(0, len(X), 64):
            opt.zero_grad()
            LOSS(model(X[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return model.eval()


def only_block(model: nn.Module) -> list[nn.Parameter]:
    """requires_grad on the block's parameters alone (how PyHessian and curvlinops see a block)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in model.block)
        p.grad = None
    params = dict(model.named_parameters())
    return [params[n] for n in model.block]


# ----------------------------------------------------------------------------------------------
# references


def exact_trace(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk_bytes: int = 2**28) -> float:
    """tr H of the block exactly, through its affine maps' outputs (module docstring), float64."""
    total = 0.0
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        parts = model.affine_parts(X, y)
    for part in parts:
        z, u = part.z.detach(), part.patches.detach()
        n, c, s = z.shape
        gram = u.transpose(1, 2) @ u + 1.0  # (N, S, S): U^T U, and the bias's 1 at every pair
        grad_rest = torch.func.grad(part.rest)

        def hz(v: torch.Tensor, grad_rest=grad_rest, z=z) -> torch.Tensor:
            return torch.func.jvp(grad_rest, (z,), (v,))[1]

        batched = torch.func.vmap(hz)
        per_chunk = max(1, chunk_bytes // (8 * 4 * z.numel()))
        o_all = torch.arange(c).repeat_interleave(s)
        t_all = torch.arange(s).repeat(c)
        for i in range(0, c * s, per_chunk):
            o, t = o_all[i:i + per_chunk], t_all[i:i + per_chunk]
            j = torch.arange(len(o))
            v = torch.zeros(len(o), n, c, s, dtype=z.dtype)
            v[j, :, o, t] = 1.0
            r = batched(v)  # r[j, n, o, s'] = d2L / dz[n, o, s'] dz[n, o_j, t_j] for probe j = (o_j, t_j)
            total += float((r[j, :, o, :] * gram[:, :, t].permute(2, 0, 1)).sum())
    return total


@dataclass
class Reference:
    top: float
    top_residual: float
    trace: float
    n_params: int


def reference(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cache: Path | None) -> Reference:
    """Float64 references: the top eigenvalue by a long Lanczos run certified by its residual, and the
    exact trace; read from ``cache`` (a JSON file keyed by a hash of the block's model weights and the probe
    batch) when it holds them, and added to it otherwise."""
    m = model.double()
    X = X.double()
    digest = hashlib.sha256()
    for t in [*m.state_dict().values(), X, y]:
        digest.update(t.detach().contiguous().numpy().tobytes())
    key = digest.hexdigest()
    stored = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    if key in stored:
        return Reference(**stored[key])
    group = ParameterGroup.of(m, m.block)
    hvp = GraphHVP(loss_objective(m, group, X, y, LOSS))
    v0 = np.random.default_rng(12345).standard_normal(hvp.n)
    steps = 40
    while True:
        run = lanczos(hvp, v0, steps)
        top, res = float(run.ritz_values[-1]), float(run.residuals[-1])
        if res <= 1e-8 * abs(top) or steps >= 160:
            break
        steps *= 2
    ref = Reference(top, res, exact_trace(m, X, y), hvp.n)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**stored, key: asdict(ref)}, indent=1))
    return ref


# ----------------------------------------------------------------------------------------------
# measurement helpers


@dataclass
class Row:
    block: str
    quantity: str
    method: str
    dtype: str
    seconds: float
    products: int
    value: float
    error: float  # relative to the reference
    note: str = ""
    extra: dict = field(default_factory=dict)


def timed(fn: Callable[[], tuple[float, int, str]], repeats: int) -> tuple[float, int, float, str]:
    """Median seconds of ``repeats`` calls of fn() -> (value, products, note); the last call's rest."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    value, products, note = out
    return statistics.median(times), products, value, note


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def torch_eig_shim() -> Iterator[None]:
    """``torch.eig(T, eigenvectors=True)`` for PyHessian 0.1's density (torch.eig raises since torch 1.9):
    its T is symmetric tridiagonal, so eigh, with the eigenvalues as the old (real, imaginary) pairs."""
    def eig(t: torch.Tensor, eigenvectors: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        w, v = torch.linalg.eigh(t)
        return torch.stack([w, torch.zeros_like(w)], 1), v

    old = torch.eig  # a stub that raises since torch 1.9
    torch.eig = eig
    try:
        yield
    finally:
        torch.eig = old


class Counter:
    """Counts the Hessian-vector products PyHessian and curvlinops take (they do not count them)."""

    def __init__(self) -> None:
        self.n = 0


def pyhessian_counted(counter: Counter) -> object:
    """The pyhessian.hessian module with its hessian_vector_product counting into ``counter``."""
    import pyhessian.utils as utils

    ph = sys.modules["pyhessian.hessian"]  # the package's name ``hessian`` is the class, not the module

    def counted(gradsH, params, v):  # noqa: N803 (PyHessian's names)
        counter.n += 1
        return utils.hessian_vector_product(gradsH, params, v)

    ph.hessian_vector_product = counted
    return ph


def curvlinops_operator(model: nn.Module, X: torch.Tensor, y: torch.Tensor, counter: Counter):
    """curvlinops' Hessian of the block (check_deterministic off: it would spend products on a check),
    with its matrix products counted by columns."""
    from curvlinops import HessianLinearOperator

    op = HessianLinearOperator(model, LOSS, only_block(model), [(X, y)], check_deterministic=False)
    matmat = op._matmat

    def counted(m):
        counter.n += m[0].shape[-1]
        return matmat(m)

    op._matmat = counted
    return op


def engine_hvp(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> GraphHVP:
    return GraphHVP(loss_objective(model, ParameterGroup.of(model, model.block), X, y, LOSS))


def rel(value: float, ref: float) -> float:
    return abs(value - ref) / abs(ref)


# ----------------------------------------------------------------------------------------------
# 1. top eigenvalue


def round_robin(fns: dict[str, Callable[[], tuple[float, int, str]]], repeats: int
                ) -> dict[str, tuple[float, int, float, str]]:
    """Each fn ``repeats`` times, in turn (so a change in the shared machine's load falls on every
    method alike): label -> (median seconds, products, value, note) of its last call."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    last: dict[str, tuple[float, int, str]] = {}
    for _ in range(repeats):
        for label, fn in fns.items():
            t = time.perf_counter()
            last[label] = fn()
            times[label].append(time.perf_counter() - t)
    return {k: (statistics.median(times[k]), last[k][1], last[k][0], last[k][2]) for k in fns}


def top_rows(block: str, model: nn.Module, X: torch.Tensor, y: torch.Tensor, ref: Reference, dtype: str,
             libs: set[str], repeats: int, max_iter: int) -> list[Row]:
    from scipy.sparse.linalg import eigsh

    seeds = iter(range(10**6))
    counter = Counter()
    ph = pyhessian_counted(counter)

    def engine() -> tuple[float, int, str]:
        hvp = engine_hvp(model, X, y)
        run = lanczos(hvp, np.random.default_rng(next(seeds)).standard_normal(hvp.n), 200,
                      stop_when_top_converged=True)
        return float(run.ritz_values[-1]), hvp.calls, f"residual {run.residuals[-1] / abs(run.ritz_values[-1]):.0e}"

    def pyhessian(tol: float = TOP_RTOL) -> tuple[float, int, str]:
        counter.n = 0
        torch.manual_seed(next(seeds))
        only_block(model)
        with default_dtype(X.dtype):
            (value,), _ = ph.hessian(model, LOSS, data=(X, y), cuda=False).eigenvalues(max_iter, tol)
        only_block(model)
        return value, counter.n, f"tol {tol:.0e}" + (", maxIter reached" if counter.n >= max_iter else "")

    def curvlinops() -> tuple[float, int, str]:
        counter.n = 0
        op = curvlinops_operator(model, X, y, counter).to_scipy()
        v0 = np.random.default_rng(next(seeds)).standard_normal(op.shape[0])
        (value,) = eigsh(op, k=1, which="LA", tol=TOP_RTOL, v0=v0, return_eigenvectors=False)
        return float(value), counter.n, "eigsh tol 1e-6"

    fns = {"engine lanczos (own rule)": engine, "pyhessian eigenvalues (power)": pyhessian,
           "curvlinops eigsh (ARPACK)": curvlinops}
    fns = {k: f for k, f in fns.items() if k.split()[0] in libs}
    out = round_robin(fns, repeats)
    rows = [Row(block, "top", k, dtype, t, n, v, rel(v, ref.top), note) for k, (t, n, v, note) in out.items()]
    # PyHessian's rule (relative change < tol) stops before its error is tol where the top is crowded:
    # tighten tol tenfold while that still brings it closer
    tol, err = TOP_RTOL, [r.error for r in rows if r.method.startswith("pyhessian")]
    while err and TOP_RTOL < err[-1] and tol > 1e-8 and (len(err) < 2 or err[-1] < err[-2] / 2):
        tol /= 10
        t, n, v, note = timed(lambda tol=tol: pyhessian(tol), repeats)
        rows.append(Row(block, "top", "pyhessian eigenvalues (power)", dtype, t, n, v, rel(v, ref.top), note))
        err.append(rel(v, ref.top))
    return rows


# ----------------------------------------------------------------------------------------------
# 2. trace


@dataclass
class Pooled:
    """Running mean and variance of Hutchinson samples, pooled over batches."""

    m: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations

    def add(self, m: int, mean: float, var: float) -> None:
        delta = mean - self.mean
        total = self.m + m
        self.m2 += (m - 1) * var + delta**2 * self.m * m / total
        self.mean += delta * m / total
        self.m = total

    @property
    def stderr(self) -> float:
        return math.sqrt(self.m2 / (self.m - 1) / self.m) if self.m > 1 else math.inf


def sequential_trace(setup: Callable[[], object], batch: Callable[[object], tuple[int, float, float]],
                     seconds: float, max_products: int) -> tuple[float, int, Pooled, float, float]:
    """Batches of Hutchinson probes until SE <= TRACE_SE_RTOL |mean|, or ``seconds`` or ``max_products``
    are spent. Returns (elapsed, products, pooled, setup seconds, seconds per probe)."""
    t0 = time.perf_counter()
    state = setup()
    t_setup = time.perf_counter() - t0
    pooled = Pooled()
    while True:
        pooled.add(*batch(state))
        elapsed = time.perf_counter() - t0
        if pooled.stderr <= TRACE_SE_RTOL * abs(pooled.mean) or elapsed >= seconds or pooled.m >= max_products:
            return elapsed, pooled.m, pooled, t_setup, (elapsed - t_setup) / pooled.m


def trace_row(block: str, method: str, dtype: str, ref: Reference, run: tuple) -> Row:
    """A Hutchinson run's row; one stopped by time gets its projection from :func:`project_traces`."""
    elapsed, products, pooled, t_setup, per_probe = run
    reached = pooled.stderr <= TRACE_SE_RTOL * abs(pooled.mean)
    note = f"SE {pooled.stderr / abs(pooled.mean):.2%}"
    if not reached:
        note += f", stopped by time at {products} probes (the error is theirs)"
    return Row(block, "trace", method, dtype, elapsed, products, pooled.mean, rel(pooled.mean, ref.trace), note,
               {"reached": reached, "setup_s": t_setup, "per_probe_s": per_probe, "m": pooled.m, "m2": pooled.m2})


def project_traces(rows: list[Row], ref: Reference) -> None:
    """Every library draws the same Rademacher probes' distribution: the probes the rule needs, n* =
    var(v^T H v) / (TRACE_SE_RTOL tr H)^2, come from the variance pooled over all runs of the block and
    the exact trace; a run stopped by time is given setup + n* x its seconds per probe ("projected")."""
    runs = [r for r in rows if r.extra]
    var = sum(r.extra["m2"] for r in runs) / sum(r.extra["m"] - 1 for r in runs)
    needed = math.ceil(var / (TRACE_SE_RTOL * ref.trace) ** 2)
    for r in runs:
        if not r.extra["reached"]:
            r.seconds = r.extra["setup_s"] + r.extra["per_probe_s"] * needed
            r.note += f": projected to {needed} probes ({r.extra['per_probe_s'] * 1e3:.0f} ms a probe)"
            r.products = needed


def trace_rows(block: str, model: nn.Module, X: torch.Tensor, y: torch.Tensor, ref: Reference, dtype: str,
               libs: set[str], seconds: float, max_products: int) -> list[Row]:
    rows = []
    rng = np.random.default_rng(7)

    def engine_batch(hvp: GraphHVP) -> tuple[int, float, float]:
        est = hutchinson_trace(hvp, hvp.n, TRACE_BATCH, rng)
        return TRACE_BATCH, est.trace, est.stderr**2 * TRACE_BATCH

    if "engine" in libs:
        rows.append(trace_row(block, "engine hutchinson_trace", dtype, ref,
                              sequential_trace(lambda: engine_hvp(model, X, y), engine_batch, seconds, max_products)))
    if "pyhessian" not in libs:
        return rows

    counter = Counter()
    ph = pyhessian_counted(counter)
    torch.manual_seed(7)

    def ph_setup() -> object:
        only_block(model)
        return ph.hessian(model, LOSS, data=(X, y), cuda=False)

    def ph_batch(h) -> tuple[int, float, float]:
        with default_dtype(X.dtype):
            samples = np.array(h.trace(maxIter=TRACE_BATCH, tol=0.0))
        return samples.size, float(samples.mean()), float(samples.var(ddof=1))

    rows.append(trace_row(block, "pyhessian trace (Hutchinson)", dtype, ref,
                          sequential_trace(ph_setup, ph_batch, seconds, max_products)))

    def ph_own() -> tuple[float, int, str]:
        counter.n = 0
        with default_dtype(X.dtype):
            samples = ph_setup().trace(maxIter=max_products, tol=1e-2)
        return float(np.mean(samples)), counter.n, "its rule: running mean moves < 1 %"

    t, k, v, note = timed(ph_own, 1)
    rows.append(Row(block, "trace", "pyhessian trace (own rule, tol 1e-2)", dtype, t, k, v, rel(v, ref.trace), note))
    only_block(model)

    def cl_batch(op) -> tuple[int, float, float]:
        from curvlinops.sampling import random_vector

        g = torch.stack([random_vector(op.shape[1], "rademacher", op.device, op.dtype)
                         for _ in range(TRACE_BATCH)], 1)
        samples = (g * (op @ g)).sum(0).double().numpy()
        return samples.size, float(samples.mean()), float(samples.var(ddof=1))

    rows.append(trace_row(block, "curvlinops Hutchinson (16 columns a product)", dtype, ref,
                          sequential_trace(lambda: curvlinops_operator(model, X, y, Counter()), cl_batch, seconds,
                                           max_products)))
    return rows


# ----------------------------------------------------------------------------------------------
# 3. density


def density_rows(block: str, model: nn.Module, X: torch.Tensor, y: torch.Tensor, ref: Reference, dtype: str,
                 libs: set[str], n_vectors: int, steps: int) -> list[Row]:
    from curvlinops import lanczos_approximate_spectrum
    from curvlinops.papyan2020traces.spectrum import approximate_boundaries

    rows = []
    budget = f"{n_vectors} x {steps}"

    def note(top: float) -> str:
        return f"{budget}; top node off by {rel(top, ref.top):.1e}"

    if "engine" in libs:
        t0 = time.perf_counter()
        hvp = engine_hvp(model, X, y)
        out = matrix_free_summary(hvp, hvp.n, n_vectors, steps, np.random.default_rng(3))
        t = time.perf_counter() - t0
        del hvp
        rows.append(Row(block, "density", "engine matrix_free_summary", dtype, t, out["n_hvp"], out["trace"],
                        rel(out["trace"], ref.trace),
                        note(out["top_eigenvalue"]) + f"; trace SE {out['trace_stderr'] / abs(out['trace']):.1%}"))
    if "pyhessian" not in libs:
        return rows

    counter = Counter()
    ph = pyhessian_counted(counter)
    torch.manual_seed(3)
    t0 = time.perf_counter()
    only_block(model)
    with default_dtype(X.dtype), torch_eig_shim():
        nodes, weights = ph.hessian(model, LOSS, data=(X, y), cuda=False).density(iter=steps, n_v=n_vectors)
    t = time.perf_counter() - t0
    only_block(model)
    first = float(np.mean([np.dot(w, e) for e, w in zip(nodes, weights, strict=True)])) * ref.n_params
    rows.append(Row(block, "density", "pyhessian density (SLQ)", dtype, t, counter.n, first, rel(first, ref.trace),
                    note(float(np.max(nodes)))))

    counter = Counter()
    torch.manual_seed(3)
    t0 = time.perf_counter()
    op = curvlinops_operator(model, X, y, counter)
    bounds = approximate_boundaries(op)
    grid, dens = lanczos_approximate_spectrum(op, steps, num_repeats=n_vectors, boundaries=bounds)
    t = time.perf_counter() - t0
    g, d = grid.double().numpy(), dens.double().numpy()
    first = float(np.trapezoid(g * d, g)) * ref.n_params
    rows.append(Row(block, "density", "curvlinops lanczos_approximate_spectrum", dtype, t, counter.n, first,
                    rel(first, ref.trace), note(float(bounds[1])) + " (its eigsh bound)"))
    return rows


# ----------------------------------------------------------------------------------------------
# 4. product / gradient


@dataclass
class CostRow:
    block: str
    dtype: str
    gradient_ms: float
    engine_ms: float
    pyhessian_ms: float
    curvlinops_ms: float


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median of ``repeats`` calls after one warm-up call."""
    fn()
    return median_time(fn, repeats)


def cost_row(block: str, model: nn.Module, X: torch.Tensor, y: torch.Tensor, dtype: str, repeats: int) -> CostRow:
    params = only_block(model)
    grad = median_seconds(lambda: torch.autograd.grad(LOSS(model(X), y), params), repeats)
    hvp = engine_hvp(model, X, y)
    v = np.random.default_rng(0).standard_normal(hvp.n)
    engine = median_seconds(lambda: hvp(v), repeats)
    import pyhessian.utils as utils

    with default_dtype(X.dtype):
        h = pyhessian_counted(Counter()).hessian(model, LOSS, data=(X, y), cuda=False)
        vs = [torch.randn_like(p) for p in h.params]
        ph = median_seconds(lambda: utils.hessian_vector_product(h.gradsH, h.params, vs), repeats)
    only_block(model)
    op = curvlinops_operator(model, X, y, Counter())
    vt = torch.as_tensor(v, dtype=X.dtype)
    cl = median_seconds(lambda: op @ vt, repeats)
    return CostRow(block, dtype, 1e3 * grad, 1e3 * engine, 1e3 * ph, 1e3 * cl)


# ----------------------------------------------------------------------------------------------


def print_rows(rows: list[Row]) -> None:
    print("| block | quantity | method | dtype | seconds | products | value | rel. error | note |")
    print("|---|---|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.block} | {r.quantity} | {r.method} | {r.dtype} | {r.seconds:.2f} | {r.products} | "
              f"{r.value:.6g} | {r.error:.1e} | {r.note} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="linear,conv,attention")
    parser.add_argument("--dtypes", default="float64,float32", help="the engine's dtypes")
    parser.add_argument("--anchor-dtypes", default="float32", help="PyHessian's and curvlinops' dtypes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the top-eigenvalue runs (median)")
    parser.add_argument("--ratio-repeats", type=int, default=5)
    parser.add_argument("--trace-seconds", type=float, default=6.0,
                        help="time limit of one library's Hutchinson run; beyond it the time is projected")
    parser.add_argument("--max-iter", type=int, default=300, help="PyHessian's maxIter for the top eigenvalue")
    parser.add_argument("--density", default=f"{DENSITY_VECTORS}x{DENSITY_STEPS}", help="vectors x steps")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "anchors_reference.json",
                        help="where the references are kept between runs (keyed by the weights' hash)")
    parser.add_argument("--quick", action="store_true",
                        help="one repeat, 2 s Hutchinson runs, 4 x 20 densities, maxIter 100")
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.ratio_repeats, args.trace_seconds, args.density, args.max_iter = 1, 3, 2.0, "4x20", 100
    n_vectors, steps = map(int, args.density.split("x"))

    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    warnings.filterwarnings("ignore", message=".*create_graph=True.*")  # PyHessian's backward(create_graph)
    dtypes = {"float64": torch.float64, "float32": torch.float32}
    engine_dtypes, anchor_dtypes = args.dtypes.split(","), args.anchor_dtypes.split(",")
    X_probe, y_probe, X_train, y_train = digits()
    print(f"anchors: {args.threads} thread(s), N = {PROBES} digits probes; top to {TOP_RTOL:.0e}; trace to "
          f"SE <= {TRACE_SE_RTOL:.1%} (Hutchinson runs cut at {args.trace_seconds:g} s and projected); density "
          f"{n_vectors} x {steps}; top medians of {args.repeats}; engine in {args.dtypes}, anchors in "
          f"{args.anchor_dtypes}", flush=True)
    rows: list[Row] = []
    costs: list[CostRow] = []
    refs = {}
    start = time.perf_counter()
    with second_order_attention():
        for block in args.blocks.split(","):
            t = time.perf_counter()
            model = trained(block, X_train, y_train)
            t_train = time.perf_counter() - t
            t = time.perf_counter()
            ref = reference(model, X_probe, y_probe, args.cache)
            refs[block] = asdict(ref)
            print(f"\n## {block}: {ref.n_params:,} parameters (trained {t_train:.0f} s); reference top "
                  f"{ref.top:.9g} (residual {ref.top_residual:.0e}), exact trace {ref.trace:.6g} "
                  f"({time.perf_counter() - t:.0f} s)\n", flush=True)
            block_rows: list[Row] = []
            for name in dict.fromkeys(engine_dtypes + anchor_dtypes):
                libs = ({"engine"} if name in engine_dtypes else set()) | \
                    ({"pyhessian", "curvlinops"} if name in anchor_dtypes else set())
                model = model.to(dtypes[name])
                X = X_probe.to(dtypes[name])
                costs.append(cost_row(block, model, X, y_probe, name, args.ratio_repeats))
                # the top is cheap: every library in every dtype (PyHessian's floor differs between them)
                block_rows += top_rows(block, model, X, y_probe, ref, name, {"engine", "pyhessian", "curvlinops"},
                                       args.repeats, args.max_iter)
                block_rows += trace_rows(block, model, X, y_probe, ref, name, libs, args.trace_seconds, 4096)
                block_rows += density_rows(block, model, X, y_probe, ref, name, libs, n_vectors, steps)
            project_traces(block_rows, ref)
            block_rows.sort(key=lambda r: ("top trace density".split().index(r.quantity), r.method))
            print_rows(block_rows)
            rows += block_rows
    print("\n## One Hessian-vector product against one gradient of the same loss (ms; ratio to the gradient)\n")
    print("| block | dtype | gradient | engine GraphHVP | PyHessian hvp | curvlinops matvec |")
    print("|---|---|---:|---:|---:|---:|")
    for c in costs:
        print(f"| {c.block} | {c.dtype} | {c.gradient_ms:.1f} | "
              f"{c.engine_ms:.1f} ({c.engine_ms / c.gradient_ms:.2f}x) | "
              f"{c.pyhessian_ms:.1f} ({c.pyhessian_ms / c.gradient_ms:.2f}x) | "
              f"{c.curvlinops_ms:.1f} ({c.curvlinops_ms / c.gradient_ms:.2f}x) |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "costs": [asdict(c) for c in costs],
                                         "references": refs, "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
