"""The Lanczos process with full reorthogonalization, and what one run of it tells about a symmetric H.

m steps from a unit start q_1 build an orthonormal basis Q = [q_1 .. q_m] of the Krylov space
span{q_1, H q_1, .., H^(m-1) q_1} and the tridiagonal T = Q^T H Q (alpha_j on the diagonal, beta_j
beside it). With T = S diag(theta) S^T:

- Ritz values theta_k (ascending) approximate eigenvalues of H from the inside: theta_1 >= lambda_min,
  theta_m <= lambda_max. Each has the residual ||H y_k - theta_k y_k|| = beta_m |S[m-1, k]| (y_k = Q s_k),
  and for a symmetric H some eigenvalue lies within that residual of theta_k: a computable error bar.
- Quadrature: the weights tau_k^2 = S[0, k]^2 (sum 1) and nodes theta_k form the m-point Gauss rule of
  the spectral measure of q_1, sum_k tau_k^2 f(theta_k) ~ q_1^T f(H) q_1, exact for every polynomial f
  of degree <= 2m - 1 (so the first three moments are exact from m >= 2 steps).

Reorthogonalization (classical Gram-Schmidt against all of Q, a second pass when the first cancels
most of the vector: DGKS) keeps Q orthonormal to working precision, so no spurious copies of
converged Ritz values appear and the residual formula holds. It costs 4 n j flops at step j (8 n j
with the second pass) and keeps Q in memory (8 n m bytes). An early breakdown (beta_j ~ 0) means
the Krylov space is invariant: its Ritz values are exact eigenvalues and their residuals are 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MatVec = Callable[[np.ndarray], np.ndarray]

#: beta_j <= BREAKDOWN_RTOL * ||T_j|| ends the run: the Krylov space is invariant (relative, so a matrix
#: of any scale, 1e-13 as well as 1e3, runs the same).
BREAKDOWN_RTOL = 1e-12
#: A Ritz value counts as converged when its residual is at most RITZ_RTOL x max|theta| (so an
#: eigenvalue of H lies within 1e-4 of the spectral scale of it; for an isolated extreme eigenvalue the
#: error is far smaller, about residual^2 / gap).
RITZ_RTOL = 1e-4
#: A second Gram-Schmidt pass is made when the first leaves less than this share of ||w|| (the
#: classical 1/sqrt(2)): the basis then stays orthogonal to working precision at about half the
#: cost of always reorthogonalizing twice, which dominates a step on a large block with cheap products.
REORTH_KAPPA = 0.7071
#: How often a run that only wants its top eigenvalue checks for convergence.
TOP_CHECK_EVERY = 4


@dataclass(frozen=True)
class LanczosRun:
    """One Lanczos run: Ritz values (ascending), their Gauss weights and residual bounds, and the
    tridiagonal itself (alpha (m,), beta (m - 1,)), whose leading k x k part is the run after k steps."""

    ritz_values: np.ndarray  # (m,), ascending
    weights: np.ndarray  # (m,), tau_k^2, sum 1
    residuals: np.ndarray  # (m,), beta_m |S[m-1, k]|; 0 after a breakdown
    breakdown: bool
    n_matvec: int
    alpha: np.ndarray
    beta: np.ndarray

    def truncated(self, steps: int) -> LanczosRun:
        """The same run stopped after ``steps`` steps (its Gauss rule of fewer nodes), free of products."""
        k = max(1, min(steps, self.alpha.size))
        return _from_tridiagonal(self.alpha[:k], self.beta[:k], broke=self.breakdown and k == self.alpha.size)

    @property
    def scale(self) -> float:
        """max |theta|: the run's estimate of ||H||_2 (a lower bound)."""
        return float(np.abs(self.ritz_values).max()) if self.ritz_values.size else 0.0

    @property
    def converged(self) -> np.ndarray:
        """Per Ritz value: residual <= RITZ_RTOL x scale."""
        return self.residuals <= RITZ_RTOL * self.scale

    def moment(self, power: int) -> float:
        """sum_k tau_k^2 theta_k^power ~ q_1^T H^power q_1 (exact for power <= 2m - 1)."""
        return float(self.weights @ self.ritz_values**power)

    def quadrature(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """sum_k tau_k^2 f(theta_k) ~ q_1^T f(H) q_1."""
        return float(self.weights @ f(self.ritz_values))


class LanczosProcess:
    """A Lanczos run that can be continued: ``advance(k)`` takes up to k more steps (at most
    ``max_steps`` in all, fewer after a breakdown), ``run()`` is the run so far. The basis (8 n
    max_steps bytes) is allocated once, so a caller that decides step by step how far to go pays
    nothing for stopping early and nothing extra for going on."""

    def __init__(self, matvec: MatVec, v0: np.ndarray, max_steps: int):
        v0 = np.asarray(v0, dtype=np.float64).reshape(-1)
        self.matvec = matvec
        self.n = v0.size
        self.max_steps = max(1, min(int(max_steps), self.n))
        self.basis = np.empty((self.max_steps, self.n))
        self.alpha, self.beta = np.zeros(self.max_steps), np.zeros(self.max_steps)
        self.q = v0 / np.linalg.norm(v0)
        self.used, self.broke, self.t_norm = 0, False, 0.0

    @property
    def done(self) -> bool:
        """No step is left: the run broke down (its Krylov space is invariant) or used max_steps."""
        return self.broke or self.used >= self.max_steps

    def advance(self, k: int) -> None:
        """Up to k more steps."""
        for _ in range(k):
            if self.done:
                return
            j = self.used
            self.basis[j] = self.q
            w = np.asarray(self.matvec(self.q), dtype=np.float64).reshape(-1)
            self.alpha[j] = self.q @ w
            # the three-term recurrence, then classical Gram-Schmidt against the whole basis, a second time
            # only when the first removed most of what was left (||w|| fell below REORTH_KAPPA of its
            # length: cancellation may have left components of the basis behind; Daniel, Gragg, Kaufman
            # and Stewart 1976)
            w = w - self.alpha[j] * self.q - (self.beta[j - 1] * self.basis[j - 1] if j else 0.0)
            before = np.linalg.norm(w)
            w = w - self.basis[: j + 1].T @ (self.basis[: j + 1] @ w)
            after = np.linalg.norm(w)
            if after < REORTH_KAPPA * before:
                w = w - self.basis[: j + 1].T @ (self.basis[: j + 1] @ w)
                after = np.linalg.norm(w)
            self.beta[j] = after
            self.used = j + 1
            self.t_norm = max(self.t_norm, abs(self.alpha[j]) + self.beta[j] + (self.beta[j - 1] if j else 0.0))
            if self.beta[j] <= BREAKDOWN_RTOL * self.t_norm or self.t_norm == 0:
                self.broke = True
                return
            self.q = w / self.beta[j]

    def run(self) -> LanczosRun:
        return _from_tridiagonal(self.alpha[: self.used], self.beta[: self.used], self.broke)


def lanczos(matvec: MatVec, v0: np.ndarray, steps: int, stop_when_top_converged: bool = False) -> LanczosRun:
    """``steps`` Lanczos steps (at most n) from v0 (any nonzero vector; it is normalized).

    stop_when_top_converged: end early once the largest Ritz value has converged (checked every
    TOP_CHECK_EVERY steps), for callers that want the top eigenvalue alone."""
    process = LanczosProcess(matvec, v0, steps)
    while not process.done:
        process.advance(TOP_CHECK_EVERY if stop_when_top_converged else process.max_steps)
        if stop_when_top_converged and not process.done and process.run().converged[-1]:
            break
    return process.run()


def _from_tridiagonal(alpha: np.ndarray, beta: np.ndarray, broke: bool) -> LanczosRun:
    """alpha (k,), beta (k,): beta[:-1] off the diagonal, beta[-1] the residual norm after step k."""
    k = alpha.size
    t = np.diag(alpha) + np.diag(beta[: k - 1], 1) + np.diag(beta[: k - 1], -1)
    theta, vecs = np.linalg.eigh(t)
    residuals = np.zeros(k) if broke else beta[k - 1] * np.abs(vecs[-1])
    return LanczosRun(theta, vecs[0] ** 2, residuals, broke, k, alpha.copy(), beta.copy())
