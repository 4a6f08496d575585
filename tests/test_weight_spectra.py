"""Definition 5 and 6 estimators against brute-force references (float64, stated tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from pipeline.snapshot.saturation import max_derivative, saturation_stats
from pipeline.snapshot.weight_spectra import adjacent_similarity, singular_summary, weight_gradient_alignment

RTOL = 1e-10


def test_singular_summary_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(7, 5))
    s = singular_summary(torch.tensor(m))
    ref = np.linalg.svd(m, compute_uv=False)
    np.testing.assert_allclose(s.singular_values, ref, rtol=RTOL)
    assert s.numerical_rank == np.linalg.matrix_rank(m) == 5
    assert s.spectral_norm == pytest.approx(ref[0], rel=RTOL)
    assert s.frobenius_norm == pytest.approx(np.linalg.norm(m), rel=RTOL)
    assert s.stable_rank == pytest.approx(np.linalg.norm(m) ** 2 / ref[0] ** 2, rel=RTOL)


def test_numerical_rank_sees_a_rank_deficient_float32_matrix() -> None:
    rng = np.random.default_rng(1)
    low = (rng.normal(size=(20, 3)) @ rng.normal(size=(3, 12))).astype(np.float32)
    assert singular_summary(torch.tensor(low)).numerical_rank == 3
    zero = singular_summary(torch.zeros(4, 3))
    assert zero.numerical_rank == 0 and zero.stable_rank is None


def test_alignment_matches_explicit_sum() -> None:
    rng = np.random.default_rng(2)
    w, g = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    ref = sum(s[k] * abs(u[:, k] @ g @ vt[k]) for k in range(len(s))) / (np.linalg.norm(w) * np.linalg.norm(g))
    assert weight_gradient_alignment(torch.tensor(w), torch.tensor(g)) == pytest.approx(ref, rel=RTOL)
    # G = W: sum sigma_k^2 / ||W||_F^2 = 1
    assert weight_gradient_alignment(torch.tensor(w), torch.tensor(w)) == pytest.approx(1.0, rel=RTOL)
    assert weight_gradient_alignment(torch.tensor(w), torch.zeros(6, 4)) is None


def test_adjacent_similarity_matches_scipy_principal_angles() -> None:
    rng = np.random.default_rng(3)
    w_l, w_next = rng.normal(size=(8, 5)), rng.normal(size=(4, 8))
    sim, k = adjacent_similarity(torch.tensor(w_l), torch.tensor(w_next))
    sr = min(np.linalg.norm(m) ** 2 / np.linalg.norm(m, 2) ** 2 for m in (w_l, w_next))
    assert k == max(1, round(sr))
    u_l = np.linalg.svd(w_l)[0][:, :k]
    v_next = np.linalg.svd(w_next)[2][:k].T
    ref = np.cos(scipy.linalg.subspace_angles(u_l, v_next)).mean()
    assert sim == pytest.approx(ref, rel=1e-9)


def test_adjacent_similarity_is_one_for_a_shared_subspace() -> None:
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(10, 2)))[0]
    rows = np.linalg.qr(rng.normal(size=(6, 2)))[0].T  # orthonormal rows: equal singular values
    cols = np.linalg.qr(rng.normal(size=(5, 2)))[0]
    w_l = 2.0 * basis @ rows  # left singular space = span(basis), stable rank 2
    w_next = 3.0 * cols @ basis.T  # right singular space = span(basis), stable rank 2
    sim, k = adjacent_similarity(torch.tensor(w_l), torch.tensor(w_next))
    assert k == 2 and sim == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("activation,expected", [("relu", 1.0), ("sigmoid", 0.25), ("tanh", 1.0)])
def test_max_derivative(activation: str, expected: float) -> None:
    assert max_derivative(activation) == pytest.approx(expected, abs=1e-9)


def test_gelu_max_derivative_is_about_1_129() -> None:
    assert max_derivative("gelu") == pytest.approx(1.1289, abs=1e-3)


def test_saturation_against_brute_force() -> None:
    u = torch.tensor([[0.0, 8.0, -9.0], [1.0, -0.5, 12.0]], dtype=torch.float64)
    # sigmoid'(u) = s(1-s) < 0.05 * 0.25 for |u| > ~4.37: entries 8, -9, 12 -> 3 of 6
    saturated, dead = saturation_stats(u, "sigmoid")
    s = torch.sigmoid(u)
    assert saturated == pytest.approx(float(((s * (1 - s)) < 0.0125).double().mean()))
    assert saturated == pytest.approx(0.5) and dead is None


def test_relu_saturation_and_dead_units() -> None:
    u = torch.tensor([[-1.0, 2.0, -3.0], [-0.5, -1.0, 4.0]])
    saturated, dead = saturation_stats(u, "relu")
    assert saturated == pytest.approx(4 / 6)  # every u <= 0 passes no gradient
    assert dead == pytest.approx(1 / 3)  # unit 0 is negative on every point
    assert saturation_stats(u, "identity") == (None, None)


def test_adjacent_k_is_the_rounded_smaller_stable_rank() -> None:
    rng = np.random.default_rng(5)
    u = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    v = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    w_l = u[:, :6] @ np.diag([3.0, 3.0, 3.0, 0.01, 0.01, 0.01]) @ v.T  # stable rank ~3
    w_next = rng.normal(size=(4, 10))
    w_next = w_next / np.linalg.norm(w_next, 2)
    w_next[0] *= 0.0  # one direction fewer
    sr_next = np.linalg.norm(w_next) ** 2 / np.linalg.norm(w_next, 2) ** 2
    _, k = adjacent_similarity(torch.tensor(w_l), torch.tensor(w_next))
    assert k == max(1, round(min(3.0, sr_next)))
    assert k in (1, 2, 3)


def test_weight_matrices_split_packed_projections_and_read_kernels_as_matrices() -> None:
    from pipeline.models.transformer import SelfAttention
    from pipeline.snapshot.weight_matrices import matrix_parts, matrix_shape, principal_tensor

    torch_attn = dict((n, tuple(p.shape)) for n, p in torch.nn.MultiheadAttention(6, 2).named_parameters())
    assert [(p, s.start, s.stop) for p, s in matrix_parts("in_proj_weight", torch_attn["in_proj_weight"])] == [
        ("q", 0, 6), ("k", 6, 12), ("v", 12, 18)]
    ours = {n: tuple(p.shape) for n, p in SelfAttention(8, 2).named_parameters()}
    assert [p for p, _ in matrix_parts("qkv.weight", ours["qkv.weight"])] == ["q", "k", "v"]
    assert principal_tensor(list(ours.items())) == list(ours).index("qkv.weight")
    assert matrix_parts("out.weight", ours["out.weight"]) == [("all", slice(0, 8))]
    assert matrix_parts("qkv.weight", (10, 4)) == [("all", slice(0, 10))]  # not three equal thirds: one matrix
    assert matrix_shape((5, 3, 2, 2)) == (5, 12)  # a conv kernel: out_channels x (in_channels k k)
    assert principal_tensor([("b.weight", (2, 3)), ("a.weight", (3, 2)), ("norm.weight", (6,))]) == 1  # tie: name
    assert principal_tensor([("norm.weight", (6,)), ("linear.bias", (6,))]) is None


def test_matrix_spectra_rows_of_an_attention_block_match_svdvals_of_each_part() -> None:
    from pipeline.extract.checkpoint import matrix_spectra_rows
    from pipeline.models.transformer import SelfAttention

    torch.manual_seed(0)
    block = SelfAttention(8, 2)
    weights = [(n, p) for n, p in block.named_parameters() if p.dim() >= 2]
    grads = [torch.randn_like(p) for _, p in weights]
    rows = {(r["tensor"], r["part"]): r for r in matrix_spectra_rows(3, weights, grads)}
    assert set(rows) == {("qkv.weight", "q"), ("qkv.weight", "k"), ("qkv.weight", "v"), ("out.weight", "all")}
    w, g = block.qkv.weight.detach().double(), grads[[n for n, _ in weights].index("qkv.weight")].double()
    for k, part in enumerate("qkv"):
        row = rows[("qkv.weight", part)]
        assert (row["layer_index"], row["rows"], row["cols"], row["principal"]) == (3, 8, 8, True)
        rows_k = slice(8 * k, 8 * (k + 1))
        np.testing.assert_allclose(row["weight_sv"], torch.linalg.svdvals(w[rows_k]).numpy(), rtol=1e-10)
        np.testing.assert_allclose(row["grad_sv"], torch.linalg.svdvals(g[rows_k]).numpy(), rtol=1e-10)
        assert row["alignment"] == pytest.approx(weight_gradient_alignment(w[rows_k], g[rows_k]), rel=1e-12)
    assert not rows[("out.weight", "all")]["principal"]
