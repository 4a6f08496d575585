"""The curvature engine against brute force, in float64.

Tolerances: exact methods agree with torch.autograd.functional.hessian to 1e-8 relative Frobenius;
Lanczos top eigenvalue within 1e-4 relative of the exact one; Hutchinson within 3 standard errors;
Hutch++ has lower variance than Hutchinson at equal products; the SLQ quadrature measure is within
Wasserstein-1 distance 0.05 x (spectral range) of the exact eigenvalue distribution.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from pipeline.curvature import engine
from pipeline.curvature.dense_hessian import METHODS, dense_hessian
from pipeline.curvature.ggn import GGNProduct, ggn_exact, natural_gradient_norm_cg, natural_gradient_norm_dense
from pipeline.curvature.local_hessian import (
    closed_form_applies,
    is_exactly_zero,
    local_hessian_closed_form,
    local_hessian_dense,
)
from pipeline.curvature.objective import PHIS, local_objective, loss_objective, neuron_order
from pipeline.curvature.spectral_summary import spectral_summary
from pipeline.curvature.stochastic import (
    GraphHVP,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_extreme,
    lanczos_ritz,
    power_iteration,
    slq_density,
)
from pipeline.models.mlp import MLP

EXACT_RTOL = 1e-8
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
NORMS = ("none", "batchnorm", "layernorm")


def _model(activation: str, norm: str, widths=(5, 4), d_in: int = 3, d_out: int = 3, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    m = MLP(d_in, widths, d_out, activation, norm).double()
    for block in m.blocks:
        if isinstance(block.norm, nn.BatchNorm1d):  # non-trivial running statistics and affine map
            block.norm.running_mean.normal_()
            block.norm.running_var.uniform_(0.5, 2.0)
            block.norm.weight.data.normal_()
            block.norm.bias.data.normal_()
    return m.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_local_hessian_every_method_matches_autograd(activation: str, norm: str) -> None:
    m = _model(activation, norm)
    z = torch.randn(7, 3, dtype=torch.float64)
    block = m.blocks[0]
    for phi in PHIS:
        obj = local_objective(block, z, phi)
        ref = torch.autograd.functional.hessian(obj.f, obj.theta0)
        methods = ["auto", "vmap", "autograd_rows"] + (["closed_form"] if closed_form_applies(block) else [])
        for method in methods:
            h = local_hessian_dense(block, z, phi, method)
            if float(ref.norm()) == 0:
                assert float(h.norm()) == 0, (phi, method)
            else:
                assert _rel(h, ref) < EXACT_RTOL, (phi, method)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_loss_block_every_method_matches_autograd(activation: str, norm: str) -> None:
    m = _model(activation, norm)
    X, y = torch.randn(9, 3, dtype=torch.float64), torch.randint(0, 3, (9,))
    for layer in range(3):
        obj = loss_objective(m, layer, X, y, nn.CrossEntropyLoss())
        ref = torch.autograd.functional.hessian(obj.f, obj.theta0)
        for method in METHODS:
            assert _rel(dense_hessian(obj, method), ref) < EXACT_RTOL, (layer, method)
        hvp = GraphHVP(obj)
        v = torch.randn(obj.n_params, dtype=torch.float64)
        assert _rel(hvp.torch_matvec(v), ref @ v) < EXACT_RTOL


def test_regression_loss_block_matches_autograd() -> None:
    m = _model("tanh", "none", d_out=1)
    X, y = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 1, dtype=torch.float64)
    obj = loss_objective(m, 1, X, y, nn.MSELoss())
    ref = torch.autograd.functional.hessian(obj.f, obj.theta0)
    assert _rel(dense_hessian(obj, "vmap"), ref) < EXACT_RTOL


def test_closed_form_is_block_diagonal_in_neuron_order() -> None:
    m = _model("sigmoid", "none")
    z = torch.randn(6, 3, dtype=torch.float64)
    blocks = local_hessian_closed_form(m.blocks[0], z, "sum")
    dense_torch = local_hessian_dense(m.blocks[0], z, "sum", "vmap")
    perm = neuron_order(5, 3)
    neuron = dense_torch[perm][:, perm]
    assert _rel(neuron, blocks.dense("neuron")) < EXACT_RTOL
    off = neuron.clone()
    for j in range(5):
        off[j * 4:(j + 1) * 4, j * 4:(j + 1) * 4] = 0
    assert float(off.abs().max()) == 0.0
    ref_eigs = torch.linalg.eigvalsh(dense_torch)
    assert torch.allclose(blocks.eigenvalues(), ref_eigs, atol=1e-12)


def test_local_hessian_is_exactly_zero_for_linear_phi_with_relu_and_identity() -> None:
    """README claim: phi in {sum, mean} with A'' = 0 gives H_i = 0; the loss block and GGN do not."""
    m = _model("relu", "none")
    X, y = torch.randn(12, 3, dtype=torch.float64), torch.randint(0, 3, (12,))
    with torch.no_grad():
        inter = m.intermediates(X)
    for i, block in enumerate(m.blocks):  # hidden ReLU blocks and the identity output block
        for phi in ("sum", "mean"):
            assert is_exactly_zero(block, phi)
            assert float(local_hessian_dense(block, inter.inputs[i], phi, "autograd_rows").abs().max()) == 0.0
        assert not is_exactly_zero(block, "half_sq_norm")
        assert float(local_hessian_dense(block, inter.inputs[i], "half_sq_norm", "vmap").abs().max()) > 0
        loss_h = dense_hessian(loss_objective(m, i, X, y, nn.CrossEntropyLoss()))
        assert float(loss_h.abs().max()) > 0
        assert float(torch.linalg.eigvalsh(ggn_exact(m, i, X, "classification")).max()) > 0
    sig = _model("sigmoid", "none")
    assert not is_exactly_zero(sig.blocks[0], "sum")
    assert float(local_hessian_dense(sig.blocks[0], X, "sum", "vmap").abs().max()) > 0


def test_ggn_is_psd_and_matches_explicit_sum() -> None:
    m = _model("tanh", "batchnorm")
    X = torch.randn(9, 3, dtype=torch.float64)
    for layer in range(3):
        g = ggn_exact(m, layer, X, "classification")
        assert float(torch.linalg.eigvalsh(g).min()) > -1e-12 * float(g.norm())
        from pipeline.curvature.objective import output_function

        f, theta = output_function(m, layer, X)
        jac = torch.autograd.functional.jacobian(f, theta)
        p = torch.softmax(f(theta), 1)
        ref = sum(jac[n].T @ ((torch.diag(p[n]) - torch.outer(p[n], p[n])) / 9) @ jac[n] for n in range(9))
        assert _rel(g, ref) < EXACT_RTOL
        v = torch.randn(theta.numel(), dtype=torch.float64)
        assert _rel(GGNProduct(m, layer, X, "classification").torch_matvec(v), g @ v) < EXACT_RTOL


def test_ggn_equals_hessian_for_linear_model_with_mse() -> None:
    torch.manual_seed(1)
    m = MLP(4, (), 2).double().eval()
    X, y = torch.randn(11, 4, dtype=torch.float64), torch.randn(11, 2, dtype=torch.float64)
    h = torch.autograd.functional.hessian(loss_objective(m, 0, X, y, nn.MSELoss()).f,
                                          loss_objective(m, 0, X, y, nn.MSELoss()).theta0)
    assert _rel(ggn_exact(m, 0, X, "regression"), h) < EXACT_RTOL


def test_natural_gradient_norm_cg_matches_dense_solve() -> None:
    m = _model("tanh", "none", widths=(8,))
    X = torch.randn(20, 3, dtype=torch.float64)
    g = ggn_exact(m, 0, X, "classification")
    grad = torch.randn(g.shape[0], dtype=torch.float64)
    top = float(torch.linalg.eigvalsh(g).max())
    dense = natural_gradient_norm_dense(grad, g, top)
    cg, converged = natural_gradient_norm_cg(grad.numpy(), lambda v: g.numpy() @ v, top, max_iter=500)
    assert converged and cg == pytest.approx(dense, rel=1e-5)
    assert natural_gradient_norm_dense(torch.zeros_like(grad), g, top) is None


def _indefinite_operator(n: int = 300, seed: int = 0):
    """A symmetric test matrix with a clear top eigenvalue and a spread, indefinite bulk."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([[10.0, 6.0, 5.0], rng.normal(0.0, 1.0, n - 3)])
    a = (q * lam) @ q.T
    return a, np.sort(lam)


def test_lanczos_top_eigenvalue_within_1e4_of_exact_on_a_real_block() -> None:
    m = _model("tanh", "none", widths=(24, 16), d_in=10)
    X, y = torch.randn(64, 10, dtype=torch.float64), torch.randint(0, 3, (64,))
    obj = loss_objective(m, 1, X, y, nn.CrossEntropyLoss())
    exact = torch.linalg.eigvalsh(dense_hessian(obj)).numpy()
    top = lanczos_extreme(GraphHVP(obj), obj.n_params, 4, "LA", budget=150, rng=np.random.default_rng(0))
    assert top.converged and top.n_matvec <= 150
    assert top.values.max() == pytest.approx(exact.max(), rel=1e-4)
    bottom = lanczos_extreme(GraphHVP(obj), obj.n_params, 4, "SA", budget=150, rng=np.random.default_rng(0))
    assert bottom.values.min() == pytest.approx(exact.min(), rel=1e-4, abs=1e-10)


def test_lanczos_respects_its_budget_and_reports_non_convergence() -> None:
    a, _ = _indefinite_operator()
    result = lanczos_extreme(lambda v: a @ v, 300, 8, "LA", budget=25, rng=np.random.default_rng(0))
    assert result.n_matvec <= 25 and not result.converged


def test_lanczos_falls_back_to_plain_lanczos_when_arpack_fails(monkeypatch) -> None:
    """ARPACK error 3 (a failed implicit restart, met on loss blocks of tiny training sets) must not end
    the run: the remaining budget goes to restart-free Lanczos, whose extremes match the exact ones."""
    import scipy.sparse.linalg as sla

    from pipeline.curvature import stochastic

    a, lam = _indefinite_operator()

    def failing_eigsh(op, **kwargs):
        for _ in range(5):  # ARPACK spends some products before it gives up
            op.matvec(np.ones(op.shape[0]))
        raise sla.ArpackError(3)

    monkeypatch.setattr(stochastic.sla, "eigsh", failing_eigsh)
    top = stochastic.lanczos_extreme(lambda v: a @ v, 300, 4, "LA", budget=120, rng=np.random.default_rng(0))
    assert top.n_matvec <= 120 and top.values.max() == pytest.approx(lam.max(), rel=1e-6)
    bottom = stochastic.lanczos_extreme(lambda v: a @ v, 300, 4, "SA", budget=120, rng=np.random.default_rng(0))
    assert bottom.values.min() == pytest.approx(lam.min(), rel=1e-6)
    short = stochastic.lanczos_extreme(lambda v: a @ v, 300, 4, "LA", budget=12, rng=np.random.default_rng(0))
    assert short.n_matvec <= 12 and not short.converged


def test_plain_lanczos_on_a_low_rank_operator_is_exact_after_breakdown() -> None:
    rng = np.random.default_rng(5)
    u = np.linalg.qr(rng.normal(size=(400, 6)))[0]
    d = np.array([-3.0, -1.0, 0.5, 2.0, 4.0, 7.0])
    result = lanczos_ritz(lambda v: u @ (d * (u.T @ v)), 400, 3, "LA", steps=50, v0=rng.normal(size=400))
    # the Krylov space of a rank-6 operator has dimension 7 (its range and v0's null component)
    assert result.converged and result.n_matvec == 7
    np.testing.assert_allclose(result.values, [2.0, 4.0, 7.0], rtol=1e-10)
    bottom = lanczos_ritz(lambda v: u @ (d * (u.T @ v)), 400, 2, "SA", steps=50, v0=rng.normal(size=400))
    np.testing.assert_allclose(bottom.values, [-3.0, -1.0], rtol=1e-10)


def test_hutchinson_within_three_standard_errors() -> None:
    a, lam = _indefinite_operator()
    est = hutchinson_trace(lambda v: a @ v, 300, 200, np.random.default_rng(3))
    assert abs(est.trace - lam.sum()) < 3 * est.stderr


def test_hutchpp_has_lower_variance_than_hutchinson_at_equal_products() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    lam = 50.0 * 0.7 ** np.arange(200)  # decaying spectrum: where Hutch++ pays off
    a = (q * lam) @ q.T
    hutch = [hutchinson_trace(lambda v: a @ v, 200, 30, np.random.default_rng(s)).trace for s in range(60)]
    hpp = [hutchpp_trace(lambda v: a @ v, 200, 30, np.random.default_rng(s)) for s in range(60)]
    assert all(h.n_matvec <= 30 for h in hpp)
    assert np.var([h.trace for h in hpp]) < np.var(hutch)
    assert np.mean([h.trace for h in hpp]) == pytest.approx(lam.sum(), rel=0.05)


def test_slq_density_close_to_exact_eigenvalues_in_w1() -> None:
    a, lam = _indefinite_operator()
    density = slq_density(lambda v: a @ v, 300, n_vectors=4, steps=40, rng=np.random.default_rng(1))
    assert density.weights.sum() == pytest.approx(1.0)
    w1 = scipy.stats.wasserstein_distance(density.nodes, lam, u_weights=density.weights)
    assert w1 < 0.05 * (lam.max() - lam.min())
    integral = np.trapezoid(density.density, density.grid)
    assert integral == pytest.approx(1.0, abs=0.02)
    exact_negative = np.abs(lam[lam < 0]).sum() / np.abs(lam).sum()
    assert density.negative_mass() == pytest.approx(exact_negative, abs=0.05)


def test_power_iteration_finds_the_dominant_eigenvalue() -> None:
    a, lam = _indefinite_operator()
    value, calls = power_iteration(lambda v: a @ v, 300, np.random.default_rng(0), rtol=1e-8)
    assert value == pytest.approx(lam[-1], rel=1e-4) and calls > 1


def test_spectral_summary_fields_against_numpy() -> None:
    rng = np.random.default_rng(0)
    b = rng.standard_normal((6, 6))
    h = b + b.T
    h[:, 0] = h[0, :] = 0.0  # one structural zero
    lam, vecs = np.linalg.eigh(h)
    mask = np.zeros(6, dtype=bool)
    mask[-2:] = True
    s = spectral_summary(lam, vecs, mask)
    nz = np.abs(lam) > 1e-9 * np.abs(lam).max()
    assert s.trace == pytest.approx(np.trace(h))
    assert s.n_zero == 1
    assert s.log_abs_det == pytest.approx(np.log(np.abs(lam[nz])).sum())
    assert s.condition_number == pytest.approx(np.abs(lam).max() / np.abs(lam[nz]).min())
    assert s.effective_rank == pytest.approx(np.abs(lam).sum() / np.abs(lam).max())
    assert s.negative_mass == pytest.approx(np.abs(lam[lam < 0]).sum() / np.abs(lam).sum())
    assert s.skewness == pytest.approx(scipy.stats.skew(lam))
    assert s.symmetry == pytest.approx(scipy.stats.wasserstein_distance(lam, -lam) / np.abs(lam).mean())
    ref_bias = sum(abs(lam[k]) * (vecs[mask, k] ** 2).sum() for k in range(6)) / np.abs(lam).sum()
    assert s.bias_share == pytest.approx(ref_bias)
    sym = spectral_summary(np.array([-2.0, -1.0, 1.0, 2.0]))
    assert sym.symmetry == pytest.approx(0.0) and sym.negative_mass == pytest.approx(0.5)
    zero = spectral_summary(np.zeros(4))
    assert zero.condition_number is None and zero.effective_rank is None and zero.negative_mass is None


def test_local_bias_share_matches_dense_eigendecomposition() -> None:
    m = _model("sigmoid", "none")
    z = torch.randn(8, 3, dtype=torch.float64)
    blocks = local_hessian_closed_form(m.blocks[0], z, "sum")
    dense = local_hessian_dense(m.blocks[0], z, "sum", "vmap")
    lam, vecs = np.linalg.eigh(dense.numpy())
    mask = np.zeros(dense.shape[0], dtype=bool)
    mask[5 * 3:] = True  # torch order: the q biases come last
    assert blocks.bias_share() == pytest.approx(spectral_summary(lam, vecs, mask).bias_share, rel=1e-8)


def _snapshot(exact_limit: int, budget: int = 150):
    m = _model("tanh", "none", widths=(24, 16), d_in=10)
    X, y = torch.randn(64, 10, dtype=torch.float64), torch.randint(0, 3, (64,))
    settings = engine.CurvatureSettings(exact_limit=exact_limit, hvp_budget=budget)
    return engine.curvature_snapshot(m.float(), X.float(), y, nn.CrossEntropyLoss(), "classification",
                                     settings, seed=0, step=5)


def test_engine_rows_cover_every_layer_and_kind() -> None:
    rows, extras = _snapshot(exact_limit=10_000)
    assert [(r["layer_index"], r["kind"]) for r in rows] == [(i, k) for i in range(3) for k in engine.KINDS]
    assert {r["method"] for r in rows} <= {"closed_form", "vmap", "rows", "exact"}
    assert [r["method"] for r in rows if r["kind"] == "local"] == ["closed_form"] * 3
    assert all(r["converged"] and len(r["eigenvalues"]) == r["n_params"] for r in rows)
    assert all(e["gradient_pressure"] is not None and e["natural_gradient_norm"] > 0 for e in extras)


def test_engine_falls_back_without_allocating_dense_matrices(monkeypatch) -> None:
    exact_rows, exact_extras = _snapshot(exact_limit=10_000, budget=400)

    def forbidden(*args, **kwargs):
        raise AssertionError("a dense p x p matrix was requested above the exact limit")

    monkeypatch.setattr(engine, "dense_hessian", forbidden)
    monkeypatch.setattr(engine, "ggn_exact", forbidden)
    rows, extras = _snapshot(exact_limit=0, budget=400)
    for exact, approx in zip(exact_rows, rows, strict=True):
        if exact["kind"] == "local":
            assert approx["method"] == "closed_form"
            continue
        assert approx["method"] == "lanczos" and approx["density"] is not None
        assert approx["n_hvp"] <= 400
        assert len(approx["eigenvalues"]) < approx["n_params"] or approx["n_params"] <= 2 * engine.TOP_K
        assert approx["top_eigenvalue"] == pytest.approx(exact["top_eigenvalue"], rel=1e-3)
        assert abs(approx["trace"] - exact["trace"]) < 4 * approx["trace_stderr"] + 1e-9 * abs(exact["trace"])
    for e, a in zip(exact_extras, extras, strict=True):
        assert a["gradient_pressure"] == pytest.approx(e["gradient_pressure"], rel=1e-8)


@pytest.mark.parametrize("chunked", [False, True], ids=["one-piece", "block-by-block"])
@pytest.mark.parametrize("n", [4, 9, 40])
def test_closed_form_spectrum_both_routes_match_the_dense_blocks(n: int, chunked: bool, monkeypatch) -> None:
    """N <= (d+1)/2 takes the factored N x N route; both give every eigenvalue and the same bias share,
    whether the neuron blocks are decomposed together or one at a time (the memory bound for wide layers)."""
    from pipeline.curvature import local_hessian
    from pipeline.curvature.local_hessian import local_closed_form_spectrum

    if chunked:
        monkeypatch.setattr(local_hessian, "CLOSED_FORM_CHUNK_BYTES", 1)

    torch.manual_seed(n)
    m = MLP(20, (6,), 2, "tanh").double().eval()
    z = torch.randn(n, 20, dtype=torch.float64)
    blocks = local_hessian_closed_form(m.blocks[0], z, "sum")
    values, bias = local_closed_form_spectrum(m.blocks[0], z, "sum")
    assert values.numel() == 6 * 21
    assert torch.allclose(values, blocks.eigenvalues(), atol=1e-12)
    assert bias == pytest.approx(blocks.bias_share(), rel=1e-9)
    if n < 21:  # rank bound: at most N nonzero eigenvalues per block
        assert int((values.abs() <= 1e-12).sum()) >= 6 * (21 - n)
