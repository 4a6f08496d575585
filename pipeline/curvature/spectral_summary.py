"""Spectral summary of a symmetric matrix (DESIGN definition 4; paper 001, section 3.5).

Given eigenvalues lambda (and optionally unit eigenvectors u_k with a mask of bias coordinates):

    nonzero            |lambda| > ZERO_RTOL * max|lambda|
    trace              sum lambda
    log_abs_det        sum over nonzero of log|lambda|;  n_zero = number of the rest
    condition_number   max|lambda| / min nonzero |lambda|
    effective_rank     sum|lambda| / max|lambda|
    std, skewness      of the eigenvalues (population moments)
    negative_mass      sum_{lambda<0} |lambda| / sum|lambda|
    symmetry           W1(lambda, -lambda) / mean|lambda|   (0 = symmetric about zero: a saddle)
    near_zero_fraction share with |lambda| <= NEAR_ZERO_RTOL * max|lambda|  (eigenvalues "piled near zero")
    bias_share         sum_k |lambda_k| ||P_bias u_k||^2 / sum_k |lambda_k|, beside 1/(d+1)

Every ratio is None for the zero matrix. Only ``eigenvalues`` is needed; ``bias_share`` needs the
eigenvectors (it is None without them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: |lambda| <= ZERO_RTOL * max|lambda| counts as an exact (structural) zero in float64.
ZERO_RTOL = 1e-9
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
    n_zero: int
    std: float
    skewness: float | None
    negative_mass: float | None
    symmetry: float | None
    near_zero_fraction: float | None
    bias_share: float | None

    def as_row(self) -> dict:
        return asdict(self)


def wasserstein1_reflection(eigenvalues: np.ndarray) -> float:
    """W1 between the empirical distributions of lambda and -lambda (equal sizes: sorted matching)."""
    a = np.sort(eigenvalues)
    return float(np.mean(np.abs(a - np.sort(-a))))


def spectral_summary(eigenvalues: np.ndarray, eigenvectors: np.ndarray | None = None,
                     bias_mask: np.ndarray | None = None) -> SpectralSummary:
    """eigenvalues: (n,); eigenvectors: (n, n) with columns u_k; bias_mask: (n,) bool."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    absl = np.abs(lam)
    top_abs = float(absl.max()) if lam.size else 0.0
    if top_abs == 0.0:
        return SpectralSummary(0.0, 0.0 if lam.size else None, 0.0 if lam.size else None, None, None, None,
                               int(lam.size), 0.0, None, None, None, None, None)
    nonzero = absl > ZERO_RTOL * top_abs
    total_abs = float(absl.sum())
    std = float(lam.std())
    skew = float(np.mean((lam - lam.mean()) ** 3) / std**3) if std > 0 else None
    bias = None
    if eigenvectors is not None and bias_mask is not None:
        weight = (np.asarray(eigenvectors)[np.asarray(bias_mask)] ** 2).sum(axis=0)
        bias = float((absl * weight).sum() / total_abs)
    return SpectralSummary(
        trace=float(lam.sum()), top_eigenvalue=float(lam.max()), bottom_eigenvalue=float(lam.min()),
        condition_number=top_abs / float(absl[nonzero].min()), effective_rank=total_abs / top_abs,
        log_abs_det=float(np.log(absl[nonzero]).sum()), n_zero=int((~nonzero).sum()), std=std, skewness=skew,
        negative_mass=float(absl[lam < 0].sum() / total_abs),
        symmetry=wasserstein1_reflection(lam) / float(absl.mean()),
        near_zero_fraction=float((absl <= NEAR_ZERO_RTOL * top_abs).mean()), bias_share=bias)
