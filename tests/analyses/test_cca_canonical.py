"""CCA math: recovers a planted canonical correlation of 0.9 (against a brute-force eigenproblem), and the
Wilks test separates planted from independent blocks."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.cca.canonical import fit_cca

RHO = 0.9


def planted_blocks(n: int, rho: float, seed: int, p: int = 5, q: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """x (n, p), y (n, q) whose population first canonical correlation is rho, the others 0: one shared
    factor z, x1 = z + s e1, y1 = z + s e2 with 1 / (1 + s²) = rho, the rest noise, each block then
    mixed by a random invertible matrix (canonical correlations are invariant to it)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    s = np.sqrt(1 / rho - 1)
    x = rng.normal(size=(n, p))
    y = rng.normal(size=(n, q))
    x[:, 0] = z + s * rng.normal(size=n)
    y[:, 0] = z + s * rng.normal(size=n)
    return x @ rng.normal(size=(p, p)), y @ rng.normal(size=(q, q))


def _brute_force_cancorr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sqrt of the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx, descending."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    ev = np.sort(np.linalg.eigvals(m).real)[::-1][: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(ev, 0, None))


def test_recovers_planted_canonical_correlation() -> None:
    x, y = planted_blocks(2000, RHO, seed=0)
    fit = fit_cca(x, y)
    assert abs(fit.cancorr[0] - RHO) < 0.05
    np.testing.assert_allclose(fit.cancorr, _brute_force_cancorr(x, y), atol=1e-10)
    assert fit.p_value[0] < 1e-10 and fit.p_value[1] > 0.01
    # the variates have unit variance and correlate at rho_1; loadings are correlations with them
    assert np.corrcoef(fit.x_scores[:, 0], fit.y_scores[:, 0])[0, 1] == pytest.approx(fit.cancorr[0], abs=1e-10)
    assert fit.x_scores[:, 0].std(ddof=1) == pytest.approx(1.0, abs=1e-10)
    assert fit.x_loadings[2, 0] == pytest.approx(np.corrcoef(x[:, 2], fit.x_scores[:, 0])[0, 1], abs=1e-10)


def test_wilks_does_not_reject_independent_blocks() -> None:
    rng = np.random.default_rng(3)
    fit = fit_cca(rng.normal(size=(2000, 5)), rng.normal(size=(2000, 4)))
    assert fit.p_value[0] > 0.05
    assert fit.cancorr[0] < 0.1
