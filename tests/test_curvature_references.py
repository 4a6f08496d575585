"""The engine's loss and Gauss-Newton blocks against references written apart from it.

- ``reference_forward``: the MLP's forward pass written out here by hand from its parameter tensors
  (Linear, batch norm on running statistics, layer norm, activation, the residual template), with
  the block's parameters as the only variables, differentiated by torch.autograd.functional
  (hessian, jacobian). It shares no code with pipeline/curvature/objective.py or kronecker.py, so an
  off-by-one in which block is perturbed, a wrong normalization or a wrong loss scaling fails here.
- curvlinops (``HessianLinearOperator``, ``GGNLinearOperator`` restricted to the block's weight and
  bias, whose flattening is torch's order, like the engine's).

Tolerance: 1e-9 relative Frobenius on the matrices, 1e-9 relative on eigenvalues, bias share and the
natural-gradient norm. Also here: the zero floor of the spectral summary on planted spectra and on
the engine's own rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from curvlinops import GGNLinearOperator, HessianLinearOperator
from torch import nn

from pipeline.curvature import engine
from pipeline.curvature.ggn import NATGRAD_DAMPING, ggn_factor, natural_gradient_norm_gram
from pipeline.curvature.kronecker import loss_kronecker
from pipeline.curvature.spectral_summary import CLEAR_GAP, spectral_summary, zero_split
from pipeline.models.mlp import MLP

RTOL = 1e-9


def _model(activation: str, norm: str, residual: str = "none", d_out: int = 3, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    m = MLP(4, (6, 6), d_out, activation, norm, residual=residual).double()
    for block in m.blocks:
        if isinstance(block.norm, nn.BatchNorm1d | nn.LayerNorm):
            block.norm.weight.data.normal_()
            block.norm.bias.data.normal_()
        if isinstance(block.norm, nn.BatchNorm1d):
            block.norm.running_mean.normal_()
            block.norm.running_var.uniform_(0.5, 2.0)
    return m.eval()


_ACT = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
        "gelu": torch.nn.functional.gelu, "identity": lambda u: u}


def reference_forward(m: MLP, x: torch.Tensor, layer: int, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The MLP's outputs with block ``layer``'s (W, b) replaced, written out from the tensors."""
    z = x
    last = len(m.blocks) - 1
    for i, block in enumerate(m.blocks):
        w, b = (weight, bias) if i == layer else (block.linear.weight, block.linear.bias)
        u = z @ w.T + b
        norm = block.norm
        if isinstance(norm, nn.BatchNorm1d):
            u = (u - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias
        elif isinstance(norm, nn.LayerNorm):
            mean = u.mean(1, keepdim=True)
            var = ((u - mean) ** 2).mean(1, keepdim=True)
            u = (u - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
        h = _ACT["identity" if i == last else m.activation_name](u)
        if m.residual_at[i]:
            h = h + z
        z = h
    return z


def _split(layer: nn.Linear):
    return layer.weight.detach().clone(), layer.bias.detach().clone()


def _torch_order(blocks) -> torch.Tensor:
    """Assemble ((H_WW, H_Wb), (H_bW, H_bb)) from autograd.functional into (vec W, b) order."""
    (ww, wb), (bw, bb) = blocks
    q, d = ww.shape[:2]
    p = q * d
    top = torch.cat([ww.reshape(p, p), wb.reshape(p, q)], dim=1)
    bottom = torch.cat([bw.reshape(q, p), bb.reshape(q, q)], dim=1)
    return torch.cat([top, bottom])


def reference_loss_block(m: MLP, layer: int, X, y, loss_fn) -> torch.Tensor:
    w0, b0 = _split(m.blocks[layer].linear)
    return _torch_order(torch.autograd.functional.hessian(
        lambda w, b: loss_fn(reference_forward(m, X, layer, w, b), y), (w0, b0))).detach()


def reference_ggn_block(m: MLP, layer: int, X, task: str) -> torch.Tensor:
    """sum_n J_n^T H_n J_n with J from autograd.functional.jacobian and H_n written out."""
    w0, b0 = _split(m.blocks[layer].linear)
    jw, jb = torch.autograd.functional.jacobian(lambda w, b: reference_forward(m, X, layer, w, b), (w0, b0))
    n, k = jw.shape[:2]
    jac = torch.cat([jw.reshape(n, k, -1), jb.reshape(n, k, -1)], dim=2)  # (N, m, p), torch order
    out = reference_forward(m, X, layer, w0, b0)
    if task == "classification":
        prob = torch.softmax(out, 1)
        h_out = [(torch.diag(prob[i]) - torch.outer(prob[i], prob[i])) / n for i in range(n)]
    else:
        h_out = [2.0 * torch.eye(k, dtype=out.dtype) / (n * k)] * n
    return sum(jac[i].T @ h_out[i] @ jac[i] for i in range(n)).detach()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


CASES = [("tanh", "none", "none"), ("sigmoid", "batchnorm", "none"), ("gelu", "layernorm", "none"),
         ("relu", "none", "none"), ("tanh", "layernorm", "every"), ("sigmoid", "none", "every")]


@pytest.mark.parametrize(("activation", "norm", "residual"), CASES)
def test_loss_and_ggn_blocks_match_an_independent_reference(activation: str, norm: str, residual: str) -> None:
    m = _model(activation, norm, residual)
    X, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    loss_fn = nn.CrossEntropyLoss()
    for layer in range(len(m.blocks)):
        kron, g = loss_kronecker(m, layer, X, y, loss_fn)
        ref = reference_loss_block(m, layer, X, y, loss_fn)
        assert _rel(kron.dense(), ref) < RTOL, layer
        w0, b0 = _split(m.blocks[layer].linear)
        gw, gb = torch.autograd.grad(loss_fn(reference_forward(m, X, layer, w0.requires_grad_(),
                                                             b0.requires_grad_()), y), (w0, b0))
        assert _rel(g, torch.cat([gw.reshape(-1), gb])) < RTOL
        assert kron.trace() == pytest.approx(float(ref.trace()), rel=RTOL)
        assert kron.frobenius_sq() == pytest.approx(float((ref**2).sum()), rel=RTOL)
        v = torch.randn(ref.shape[0], dtype=torch.float64)
        assert _rel(kron.matvec(v), ref @ v) < RTOL

        factor = ggn_factor(m, layer, X, "classification")
        gref = reference_ggn_block(m, layer, X, "classification")
        assert _rel(factor.kronecker().dense(), gref) < RTOL
        assert _rel(factor.matvec(v), gref @ v) < RTOL
        assert factor.trace() == pytest.approx(float(gref.trace()), rel=RTOL)


def test_gram_route_matches_the_reference_spectrum_bias_share_and_natural_gradient() -> None:
    """p > N m': the Gram matrix of order N m' gives every nonzero eigenvalue of the p x p GGN, the
    bias share of its eigenvectors by the trace formula, and the damped natural-gradient norm by
    Woodbury, all as the reference's dense eigendecomposition and solve."""
    m = _model("tanh", "layernorm")
    X = torch.randn(5, 4, dtype=torch.float64)  # N m' = 10 < p = 42 (the second hidden block)
    layer = 1
    factor = ggn_factor(m, layer, X, "classification")
    gref = reference_ggn_block(m, layer, X, "classification")
    assert factor.gram_size == 10 < factor.n_params == 42
    lam, vecs = torch.linalg.eigh(gref)
    gram_values = torch.linalg.eigvalsh(factor.gram())
    np.testing.assert_allclose(gram_values.numpy(), lam[-10:].numpy(), rtol=1e-9, atol=1e-12 * float(lam.max()))
    assert float(lam[:-10].abs().max()) < 1e-12 * float(lam.max())  # the rest are zero
    mask = np.zeros(42, dtype=bool)
    mask[-6:] = True  # torch order: the q = 6 biases last
    ref_bias = float((lam.abs() * (vecs[mask] ** 2).sum(0)).sum() / lam.abs().sum())
    assert factor.bias_share() == pytest.approx(ref_bias, rel=1e-9)
    g = torch.randn(42, dtype=torch.float64)
    top = float(lam.max())
    ref_nat = float(g @ torch.linalg.solve(gref + NATGRAD_DAMPING * top * torch.eye(42, dtype=torch.float64), g))
    assert natural_gradient_norm_gram(g, factor, factor.gram(), top) == pytest.approx(ref_nat, rel=1e-9)


def test_regression_blocks_match_the_reference() -> None:
    m = _model("tanh", "none", d_out=2)
    X, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    for layer in range(3):
        kron, _ = loss_kronecker(m, layer, X, y, nn.MSELoss())
        assert _rel(kron.dense(), reference_loss_block(m, layer, X, y, nn.MSELoss())) < RTOL
        gref = reference_ggn_block(m, layer, X, "regression")
        assert _rel(ggn_factor(m, layer, X, "regression").kronecker().dense(), gref) < RTOL


def test_a_linear_model_with_mse_has_ggn_equal_to_its_hessian() -> None:
    torch.manual_seed(1)
    m = MLP(4, (), 2).double().eval()
    X, y = torch.randn(11, 4, dtype=torch.float64), torch.randn(11, 2, dtype=torch.float64)
    kron, _ = loss_kronecker(m, 0, X, y, nn.MSELoss())
    assert _rel(ggn_factor(m, 0, X, "regression").kronecker().dense(), kron.dense()) < RTOL


@pytest.mark.parametrize(("activation", "norm"), [("tanh", "batchnorm"), ("sigmoid", "layernorm")])
def test_loss_and_ggn_blocks_match_curvlinops(activation: str, norm: str) -> None:
    m = _model(activation, norm)
    X, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    loss_fn = nn.CrossEntropyLoss()
    for layer in range(3):
        lin = m.blocks[layer].linear
        params = [lin.weight, lin.bias]
        eye = torch.eye(lin.weight.numel() + lin.bias.numel(), dtype=torch.float64)
        h_ref = HessianLinearOperator(m, loss_fn, params, [(X, y)]) @ eye
        g_ref = GGNLinearOperator(m, loss_fn, params, [(X, y)]) @ eye
        kron, _ = loss_kronecker(m, layer, X, y, loss_fn)
        assert _rel(kron.dense(), h_ref) < RTOL
        assert _rel(ggn_factor(m, layer, X, "classification").kronecker().dense(), g_ref) < RTOL


def test_engine_rows_match_the_reference_spectra() -> None:
    """Through curvature_snapshot: exact loss and Gauss-Newton rows carry the reference eigenvalues."""
    m = _model("sigmoid", "batchnorm")
    X, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    rows, _ = engine.curvature_snapshot(m, X, y, nn.CrossEntropyLoss(), "classification",
                                        engine.CurvatureSettings(), seed=0, step=0)
    for row in rows:
        if row["kind"] == "local":
            continue
        ref = (reference_loss_block(m, row["layer_index"], X, y, nn.CrossEntropyLoss()) if row["kind"] == "loss"
               else reference_ggn_block(m, row["layer_index"], X, "classification"))
        lam = torch.linalg.eigvalsh(ref).numpy()
        np.testing.assert_allclose(row["eigenvalues"], lam, rtol=0, atol=1e-9 * np.abs(lam).max())
        assert row["trace"] == pytest.approx(lam.sum(), rel=1e-9)


# -- zeros from the matrix ----------------------------------------------------------------------

def _planted(n: int = 300, rank: int = 200, smallest: float = 1e-12, seed: int = 0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = np.concatenate([np.zeros(n - rank), np.geomspace(smallest, 1.0, rank) * rng.choice([-1, 1], rank)])
    values[-1] = 1.0
    a = (q * values) @ q.T
    return 0.5 * (a + a.T), values


def test_a_planted_rank_and_condition_number_are_recovered_exactly() -> None:
    """Rank 200 of 300, eigenvalues from 1 down to 1e-12: n_zero = 100 and the condition number is
    1e12 to the accuracy float64 leaves an eigenvalue of 1e-12 (eps n / 1e-12, about 1e-2)."""
    a, values = _planted()
    s = spectral_summary(np.linalg.eigvalsh(a))
    assert s.n_zero == 100
    assert s.condition_number == pytest.approx(1e12, rel=2e-2)
    assert s.log_abs_det == pytest.approx(np.log(np.abs(values[values != 0])).sum(), abs=0.05)
    assert s.zero_floor == pytest.approx(300 * np.finfo(float).eps, rel=1e-6)


def test_both_engines_count_a_planted_gauss_newton_null_space_exactly() -> None:
    """Inputs of rank 2 in R^6: z~ = (x, 1) spans 3 dimensions, so the first block's G = S^T S (rows
    R_n[c] (x) z~_n, p = 4 x 7 = 28 <= N m' = 80: the p x p route) has rank 4 x 3 = 12 and exactly
    16 zero eigenvalues, by the construction and by numpy's matrix_rank of the reference G. The MLP
    engine (Kronecker factor) and the any-model engine (per-sample Jacobians) both store n_zero = 16,
    and a zero floor under the smallest nonzero eigenvalue."""
    from pipeline.curvature.block_engine import block_curvature_snapshot
    from pipeline.models.block_graph import trace_block_graph

    torch.manual_seed(0)
    m = MLP(6, (4,), 3, "tanh").double().eval()
    X = torch.randn(40, 2, dtype=torch.float64) @ torch.randn(2, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    ref = reference_ggn_block(m, 0, X, "classification")
    assert np.linalg.matrix_rank(ref.numpy()) == 12
    graph = trace_block_graph(m, m.block_names())
    blocks = list(zip(graph.names, graph.params, strict=True))
    mlp_rows, _ = engine.curvature_snapshot(m, X, y, nn.CrossEntropyLoss(), "classification",
                                            engine.CurvatureSettings(), seed=0, step=0)
    any_rows, _ = block_curvature_snapshot(m, blocks, X, y, nn.CrossEntropyLoss(), "classification",
                                           engine.CurvatureSettings(), seed=0, step=0)
    lam = np.sort(np.linalg.eigvalsh(ref.numpy()))
    eps = np.finfo(float).eps
    # the floor's count: order 28 plus the terms per entry, N + m' = 42 through the Kronecker form,
    # N m' = 80 in one dot product of the explicit Jacobian factor
    for rows, count in ((mlp_rows, 28 + 40 + 2), (any_rows, 28 + 80)):
        row = next(r for r in rows if r["kind"] == "ggn" and r["layer_index"] == 0)
        assert row["method"] == "gram" and row["n_params"] == 28
        assert row["n_zero"] == 16
        assert row["zero_floor"] < lam[16]
        assert row["zero_floor"] == pytest.approx(count * eps * np.abs(row["eigenvalues"]).max(), rel=1e-12)


def test_a_spectrum_that_runs_into_round_off_has_no_zero_count() -> None:
    """Eigenvalues spread continuously through the floor: which are zero is a matter of tolerance, so
    n_zero, log|det| and the condition number are NULL; the other summaries stay."""
    rng = np.random.default_rng(1)
    lam = np.geomspace(1e-20, 1.0, 300) * rng.choice([-1, 1], 300)
    s = spectral_summary(lam)
    assert s.n_zero is None and s.condition_number is None and s.log_abs_det is None
    assert s.trace == pytest.approx(lam.sum()) and s.effective_rank is not None


def _summaries_under(lam: np.ndarray, n_solve: int, factor: float) -> tuple | None:
    tau, nonzero = zero_split(np.abs(lam), n_solve, factor)
    if nonzero is None:
        return None
    a = np.abs(lam)
    return int((~nonzero).sum()), float(a.max() / a[nonzero].min()), float(np.log(a[nonzero]).sum())


def test_stored_zero_counts_do_not_move_when_the_floor_is_halved_or_doubled() -> None:
    """On planted spectra and on every exact row the engine writes for small real networks, n_zero,
    the condition number and log|det| are the same under ZERO_FLOOR_FACTOR x 1/2 and x 2 wherever
    they are defined (the clear-gap band is CLEAR_GAP = 10 > 2 wide on either side)."""
    assert CLEAR_GAP >= 2
    spectra = [(_planted(seed=s)[0], 300) for s in range(3)]
    spectra = [(np.linalg.eigvalsh(a), n) for a, n in spectra]
    for activation, norm in (("relu", "none"), ("sigmoid", "batchnorm"), ("tanh", "layernorm")):
        m = _model(activation, norm)
        X, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
        rows, _ = engine.curvature_snapshot(m, X, y, nn.CrossEntropyLoss(), "classification",
                                            engine.CurvatureSettings(), seed=0, step=0)
        for row in rows:
            if row["zero_floor"]:
                # n_solve as the engine used it, recovered from its floor
                n_solve = round(row["zero_floor"] / (np.finfo(float).eps * np.abs(row["eigenvalues"]).max()))
                spectra.append((row["eigenvalues"], n_solve))
    defined = 0
    for lam, n_solve in spectra:
        base = _summaries_under(lam, n_solve, 1.0)
        defined += base is not None
        for factor in (0.5, 2.0):
            other = _summaries_under(lam, n_solve, factor)
            if base is not None and other is not None:
                assert other == base
    assert defined >= len(spectra) // 2
