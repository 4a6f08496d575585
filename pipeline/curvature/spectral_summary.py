"""Spectral summary of a symmetric matrix (DESIGN definition 4; paper 001, section 3.5).

Given eigenvalues lambda (and optionally unit eigenvectors u_k with a mask of bias coordinates):

    zero_floor         tau = n_floor * eps * max|lambda|: an eigenvalue of the computed matrix is only
                       known to within the error of forming the matrix (each entry a sum of n_sum
                       rounded terms) plus the symmetric eigensolver's backward error, a modest
                       multiple of n_order eps ||H||_2 (n_order: the order of the matrix decomposed);
                       n_floor = n_order + n_sum, the caller's count (numpy.linalg.matrix_rank takes
                       n_order alone)
    clear gap          no |lambda| within a factor CLEAR_GAP of tau on either side, (tau / CLEAR_GAP,
                       CLEAR_GAP tau]: then zero (|lambda| <= tau) and nonzero are told apart by the
                       matrix, and neither changes when tau is halved or doubled. Without a clear gap
                       (a spectrum whose tail runs into round-off) the next three are NULL
    n_zero             the number of |lambda| <= tau
    log_abs_det        sum over nonzero of log|lambda|
    condition_number   max|lambda| / min nonzero |lambda|
    trace              sum lambda
    effective_rank     sum|lambda| / max|lambda|
    std, skewness      of the eigenvalues (population moments)
    negative_mass      sum_{lambda<0} |lambda| / sum|lambda|
    symmetry           W1(lambda, -lambda) / mean|lambda|   (0 = symmetric about zero: a saddle)
    near_zero_fraction share with |lambda| <= NEAR_ZERO_RTOL * max|lambda|  (eigenvalues "piled near zero")
    bias_share         sum_k |lambda_k| ||P_bias u_k||^2 / sum_k |lambda_k|, beside 1/(d+1)

Every ratio is None for the zero matrix. Only ``eigenvalues`` is needed; ``bias_share`` needs the
eigenvectors (it is None without them, unless the caller passes it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: tau = ZERO_FLOOR_FACTOR * n_floor * eps * max|lambda| (1: the rounding bound itself).
ZERO_FLOOR_FACTOR = 1.0
#: The zero/nonzero split is clear when no |lambda| lies in (tau / CLEAR_GAP, CLEAR_GAP tau].
CLEAR_GAP = 10.0
#: |lambda| <= NEAR_ZERO_RTOL * max|lambda| counts as "near zero" (paper 001, 5.2: saturation).
NEAR_ZERO_RTOL = 1e-3


@dataclass(frozen=True)
class SpectralSummary:
    trace: float
    top_eigenvalue: float | None
    bottom_eigenvalue: float | None
    condition_number: float | None
    effective_rank: float | None
    log_abs_det: float | None
    n_zero: int | None
    std: float
    skewness: float | None
    negative_mass: float | None
    symmetry: float | None
    near_zero_fraction: float | None
    bias_share: float | None
    zero_floor: float | None

    def as_row(self) -> dict:
        return asdict(self)


def wasserstein1_reflection(eigenvalues: np.ndarray) -> float:
    """W1 between the empirical distributions of lambda and -lambda (equal sizes: sorted matching)."""
    a = np.sort(eigenvalues)
    return float(np.mean(np.abs(a - np.sort(-a))))


def zero_split(abs_eigenvalues: np.ndarray, n_floor: int,
               factor: float | None = None) -> tuple[float, np.ndarray | None]:
    """(tau, mask of the nonzero |lambda|), the mask None when the split is not clear (see above);
    factor: ZERO_FLOOR_FACTOR unless given."""
    a = np.asarray(abs_eigenvalues, dtype=np.float64)
    factor = ZERO_FLOOR_FACTOR if factor is None else factor
    tau = factor * max(1, n_floor) * np.finfo(np.float64).eps * float(a.max())
    if np.any((a > tau / CLEAR_GAP) & (a <= tau * CLEAR_GAP)):
        return tau, None
    return tau, a > tau


def spectral_summary(eigenvalues: np.ndarray, eigenvectors: np.ndarray | None = None,
                     bias_mask: np.ndarray | None = None, n_floor: int | None = None,
                     bias_share: float | None = None) -> SpectralSummary:
    """eigenvalues: (n,); eigenvectors: (n, n) with columns u_k; bias_mask: (n,) bool; n_floor: the
    floor's count, order decomposed + terms summed per entry (default n); bias_share: the value,
    when the caller has it without eigenvectors (the Gauss-Newton trace formula)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    absl = np.abs(lam)
    top_abs = float(absl.max()) if lam.size else 0.0
    if top_abs == 0.0:
        return SpectralSummary(0.0, 0.0 if lam.size else None, 0.0 if lam.size else None, None, None, None,
                               int(lam.size), 0.0, None, None, None, None, None, 0.0 if lam.size else None)
    tau, nonzero = zero_split(absl, lam.size if n_floor is None else n_floor)
    total_abs = float(absl.sum())
    std = float(lam.std())
    skew = float(np.mean((lam - lam.mean()) ** 3) / std**3) if std > 0 else None
    bias = bias_share
    if eigenvectors is not None and bias_mask is not None:
        weight = (np.asarray(eigenvectors)[np.asarray(bias_mask)] ** 2).sum(axis=0)
        bias = float((absl * weight).sum() / total_abs)
    clear = nonzero is not None
    return SpectralSummary(
        trace=float(lam.sum()), top_eigenvalue=float(lam.max()), bottom_eigenvalue=float(lam.min()),
        condition_number=top_abs / float(absl[nonzero].min()) if clear else None,
        effective_rank=total_abs / top_abs,
        log_abs_det=float(np.log(absl[nonzero]).sum()) if clear else None,
        n_zero=int((~nonzero).sum()) if clear else None, std=std, skewness=skew,
        negative_mass=float(absl[lam < 0].sum() / total_abs),
        symmetry=wasserstein1_reflection(lam) / float(absl.mean()),
        near_zero_fraction=float((absl <= NEAR_ZERO_RTOL * top_abs).mean()), bias_share=bias, zero_floor=tau)
