"""Matrix-free spectral estimators from matrix-vector products (Hessian-, GGN-vector products).

- ``GraphHVP``: H v for a block objective, reusing one forward/backward graph: g = grad f is built
  once with create_graph, and each product is one more backward pass through it, d(g . v)/d theta.
- ``lanczos_extreme``: top-k or bottom-k eigenvalues by ``scipy.sparse.linalg.eigsh`` (implicitly
  restarted Lanczos) on a ``LinearOperator``, with a seeded v0 and the number of products capped;
  ``converged`` says whether ARPACK met its tolerance within the cap.
- ``hutchinson_trace``: tr H = E[v^T H v], Rademacher v; mean and standard error over m probes.
- ``hutchpp_trace``: Hutch++ (Meyer, Musco, Musco, Woodruff 2021): m/3 products sketch the top range
  Q, tr(Q^T H Q) exactly plus Hutchinson on the deflated rest (I - QQ^T) H (I - QQ^T) with m/3 probes.
- ``slq_density``: stochastic Lanczos quadrature (Ghorbani, Krishnan, Xiao 2019): n_v Lanczos runs
  of m steps each; the density is sum over runs and Ritz values theta_k of tau_k^2 N(t; theta_k, sigma^2)
  / n_v, tau_k the first component of the Ritz vector.
- ``power_iteration``: the top |eigenvalue| by repeated products (PyHessian's method), for comparison.

Every random draw comes from a numpy Generator the caller seeds from the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg as sla
import torch

from pipeline.curvature.objective import BlockObjective, ModelObjective

MatVec = Callable[[np.ndarray], np.ndarray]


class GraphHVP:
    """v -> H v for f at theta0 (float64 numpy in and out), counting products in ``calls``.

    ``obj`` is anything with ``f`` and a flat ``theta0``: a block's objective or the whole model's."""

    def __init__(self, obj: BlockObjective | ModelObjective):
        self.theta = obj.theta0.detach().clone().requires_grad_(True)
        (self.g,) = torch.autograd.grad(obj.f(self.theta), self.theta, create_graph=True)
        self.linear = not self.g.requires_grad  # constant gradient: H = 0
        self.n = self.theta.numel()
        self.calls = 0

    def gradient(self) -> torch.Tensor:
        return self.g.detach()

    def torch_matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.linear:
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(self.g, self.theta, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()

    def __call__(self, v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=self.theta.dtype, device=self.theta.device)
        return self.torch_matvec(t).cpu().numpy()


class CountingOperator:
    """Wraps a numpy matvec as a scipy LinearOperator and counts the products taken."""

    def __init__(self, matvec: MatVec, n: int):
        self.matvec, self.n, self.calls = matvec, n, 0

    def __call__(self, v: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.matvec(np.asarray(v, dtype=np.float64).reshape(-1))

    def linear_operator(self) -> sla.LinearOperator:
        return sla.LinearOperator((self.n, self.n), matvec=self, dtype=np.float64)


@dataclass(frozen=True)
class ExtremeEigs:
    values: np.ndarray  # ascending
    converged: bool
    n_matvec: int


#: ARPACK's relative accuracy target for Ritz values (the top eigenvalue is wanted to 1e-4).
LANCZOS_TOL = 1e-6


def lanczos_extreme(matvec: MatVec, n: int, k: int, which: str, budget: int, rng: np.random.Generator,
                    tol: float = LANCZOS_TOL) -> ExtremeEigs:
    """k largest (which='LA') or smallest ('SA') eigenvalues with at most ``budget`` products.

    ARPACK counts restarts, not products: with ncv Lanczos vectors each restart costs ncv - k
    products, so maxiter = (budget - ncv) // (ncv - k) keeps the count under the budget. When ARPACK
    does not converge within it, the eigenvalues it did converge are returned with converged=False.
    """
    k = max(1, min(k, n - 1))
    ncv = min(n, max(2 * k + 1, min(20, budget // 2)))
    maxiter = max(1, (budget - ncv) // max(1, ncv - k))
    op = CountingOperator(matvec, n)
    v0 = rng.standard_normal(n)
    try:
        values = sla.eigsh(op.linear_operator(), k=k, which=which, v0=v0, ncv=ncv, maxiter=maxiter, tol=tol,
                           return_eigenvectors=False)
        return ExtremeEigs(np.sort(values), True, op.calls)
    except sla.ArpackNoConvergence as exc:
        return ExtremeEigs(np.sort(np.asarray(exc.eigenvalues, dtype=np.float64)), False, op.calls)
    except sla.ArpackError:
        # ARPACK error 3 ("no shifts could be applied"): an implicit restart failed, seen on loss blocks
        # of tiny training sets whose spectrum is a huge cluster at 0. Plain Lanczos needs no restart.
        if budget - op.calls < 1:
            return ExtremeEigs(np.empty(0), False, op.calls)
        fallback = lanczos_ritz(op, n, k, which, budget - op.calls, v0, tol)
        return ExtremeEigs(fallback.values, fallback.converged, op.calls)


def lanczos_ritz(matvec: MatVec, n: int, k: int, which: str, steps: int, v0: np.ndarray,
                 tol: float = LANCZOS_TOL) -> ExtremeEigs:
    """k extreme Ritz values (ascending) after ``steps`` Lanczos steps from v0, without restarts.

    Full reorthogonalization (twice, against the whole basis Q) keeps Q orthonormal, so T = Q^T H Q is
    the tridiagonal of alpha_j = q_j^T H q_j and beta_j = ||r_j||. A Ritz value theta_i has residual
    ||H y_i - theta_i y_i|| = beta_m |s_{m,i}| (s_i its eigenvector of T); converged = every returned
    value's residual is at most tol * max|theta|. A breakdown (beta ~ 0) means Q spans the Krylov space
    of v0, invariant under H: it holds v0's component in every eigenspace, so (for a v0 with none of
    them zero, true almost surely for a random v0) its Ritz values are all the distinct eigenvalues.
    """
    m = max(1, min(n, steps))
    basis = np.zeros((n, m))
    alpha, beta = np.zeros(m), np.zeros(m)
    q = np.asarray(v0, dtype=np.float64) / np.linalg.norm(v0)
    used = 0
    for j in range(m):
        basis[:, j] = q
        w = np.asarray(matvec(q), dtype=np.float64)
        alpha[j] = q @ w
        for _ in range(2):
            w = w - basis[:, : j + 1] @ (basis[:, : j + 1].T @ w)
        beta[j] = np.linalg.norm(w)
        used = j + 1
        if beta[j] <= 1e-12 * max(1.0, abs(alpha[j])):
            break
        q = w / beta[j]
    t = np.diag(alpha[:used]) + np.diag(beta[: used - 1], 1) + np.diag(beta[: used - 1], -1)
    theta, vecs = np.linalg.eigh(t)
    pick = slice(max(0, used - k), used) if which == "LA" else slice(0, min(k, used))
    residual = beta[used - 1] * np.abs(vecs[-1, pick])
    scale = max(float(np.abs(theta).max()), 1e-300)
    converged = bool(np.all(residual <= tol * scale))
    return ExtremeEigs(np.sort(theta[pick]), converged, used)


def rademacher(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=(n, m))


@dataclass(frozen=True)
class TraceEstimate:
    trace: float
    stderr: float | None
    n_matvec: int


def hutchinson_trace(matvec: MatVec, n: int, m: int, rng: np.random.Generator) -> TraceEstimate:
    """mean of v^T H v over m Rademacher probes, with the standard error of that mean."""
    v = rademacher(rng, n, m)
    samples = np.array([v[:, i] @ matvec(v[:, i]) for i in range(m)])
    stderr = float(samples.std(ddof=1) / np.sqrt(m)) if m > 1 else None
    return TraceEstimate(float(samples.mean()), stderr, m)


def hutchpp_trace(matvec: MatVec, n: int, m: int, rng: np.random.Generator) -> TraceEstimate:
    """Hutch++ with m products: m/3 sketch, m/3 on the sketch basis, m/3 Hutchinson on the rest."""
    k = max(1, m // 3)
    s = rademacher(rng, n, k)
    hs = np.column_stack([matvec(s[:, i]) for i in range(k)])
    q, _ = np.linalg.qr(hs)
    hq = np.column_stack([matvec(q[:, i]) for i in range(q.shape[1])])
    top = float(np.trace(q.T @ hq))
    n_rest = max(1, m - k - q.shape[1])
    g = rademacher(rng, n, n_rest)
    g = g - q @ (q.T @ g)
    rest = np.array([g[:, i] @ matvec(g[:, i]) for i in range(n_rest)])  # g is already deflated
    stderr = float(rest.std(ddof=1) / np.sqrt(n_rest)) if n_rest > 1 else None
    return TraceEstimate(top + float(rest.mean()), stderr, k + q.shape[1] + n_rest)


def lanczos_tridiagonal(matvec: MatVec, v0: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """m steps of Lanczos with full reorthogonalization: (alpha (m'), beta (m'-1)), m' <= m."""
    n = v0.size
    basis = np.zeros((min(m, n), n))
    alpha, beta = [], []
    v = v0 / np.linalg.norm(v0)
    for j in range(min(m, n)):
        basis[j] = v
        w = matvec(v)
        a = float(w @ v)
        alpha.append(a)
        w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)  # full reorthogonalization (twice is enough)
        w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        if j == min(m, n) - 1 or b < 1e-12 * max(1.0, abs(a)):
            break
        beta.append(b)
        v = w / b
    return np.asarray(alpha), np.asarray(beta)


@dataclass(frozen=True)
class SpectralDensity:
    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray  # Ritz values of every run, concatenated
    weights: np.ndarray  # their quadrature weights tau^2 / n_v (sum to 1)
    sigma: float
    n_matvec: int

    def negative_mass(self) -> float | None:
        """sum_{theta<0} w |theta| / sum w |theta|: the share of |lambda| mass below zero, from quadrature."""
        total = float((self.weights * np.abs(self.nodes)).sum())
        if total == 0:
            return None
        return float((self.weights * np.abs(self.nodes))[self.nodes < 0].sum() / total)


def slq_density(matvec: MatVec, n: int, n_vectors: int, steps: int, rng: np.random.Generator,
                grid_size: int = 200, sigma_rel: float = 0.01) -> SpectralDensity:
    """SLQ density on a grid over [min Ritz - 5 sigma, max Ritz + 5 sigma], sigma = sigma_rel * range."""
    nodes, weights, calls = [], [], 0
    for _ in range(n_vectors):
        v0 = rademacher(rng, n, 1)[:, 0]
        alpha, beta = lanczos_tridiagonal(matvec, v0, steps)
        calls += len(alpha)
        t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
        theta, vecs = np.linalg.eigh(t)
        nodes.append(theta)
        weights.append(vecs[0] ** 2 / n_vectors)
    nodes_a, weights_a = np.concatenate(nodes), np.concatenate(weights)
    lo, hi = float(nodes_a.min()), float(nodes_a.max())
    sigma = sigma_rel * max(hi - lo, abs(hi), abs(lo), 1e-12)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_size)
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes_a[None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return SpectralDensity(grid, kernel @ weights_a, nodes_a, weights_a, sigma, calls)


def power_iteration(matvec: MatVec, n: int, rng: np.random.Generator, rtol: float = 1e-4,
                    max_iter: int = 1000) -> tuple[float, int]:
    """Dominant eigenvalue (largest |lambda|, signed) by power iteration, stopping when the Rayleigh
    quotient changes by less than rtol relative (PyHessian's rule). Returns (value, products)."""
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    value, calls = None, 0
    for _ in range(max_iter):
        hv = matvec(v)
        calls += 1
        new = float(v @ hv)
        norm = np.linalg.norm(hv)
        if norm == 0:
            return 0.0, calls
        v = hv / norm
        if value is not None and abs(new - value) <= rtol * abs(value):
            return new, calls
        value = new
    return value, calls
