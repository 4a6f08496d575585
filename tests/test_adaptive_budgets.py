"""Matrix-free rows that spend products until their targets are met, in float32 products.

- adaptive_summary never spends more than its cap; a row whose runs settle early stops with
  ``targets`` far below it; its standard errors stay calibrated (the exact value within 2 of them in
  at least 80 % of 30 seeds, the bar tests/test_curvature.py sets for the fixed design) and no larger
  than the fixed 8 x 40 design's on the same operator (within 1 %), by median over the seeds;
- float32 products: checked per row (one product in both dtypes); accepted on the untrained test
  models, refused for a confident classifier (which then runs on float64); the float32 rows'
  summaries lie within their float64 standard errors of the float64 rows', and their extremes within
  the stored residuals of the exact ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.curvature import block_engine, engine
from pipeline.curvature.engine import CurvatureSettings
from pipeline.curvature.matrix_free import STOP_REASONS, LanczosBudget, adaptive_summary, matrix_free_summary
from pipeline.curvature.parameter_group import ParameterGroup, loss_objective
from pipeline.curvature.precision import CHECK_RTOL, ProductModel, checked_products
from pipeline.curvature.stochastic import GraphHVP
from pipeline.models.mlp import MLP
from tests.test_block_curvature import _cnn, _data, _graph_blocks, _transformer
from tests.test_curvature import _clustered_operator, _exact_summaries

SUMMARIES = ("trace", "std", "skewness", "negative_mass", "effective_rank")


def test_a_row_whose_runs_settle_stops_on_its_targets_far_below_the_cap() -> None:
    """3 I: every run breaks down after one step, exact, and every probe sees the same spectrum."""
    row = adaptive_summary(lambda v: 3.0 * v, 400, np.random.default_rng(0), LanczosBudget(), definite=True)
    # (a standard deviation of round-off may ask for a ninth run)
    assert row["stop_reason"] == "targets" and row["lanczos_runs"] <= 9 and row["n_hvp"] == row["lanczos_runs"]
    assert row["top_eigenvalue"] == pytest.approx(3.0, rel=1e-12) and row["converged"]
    assert row["trace"] == pytest.approx(1200.0, rel=1e-12) and row["trace_stderr"] == pytest.approx(0.0, abs=1e-9)
    assert row["effective_rank"] == pytest.approx(400.0, rel=1e-12)


def test_a_row_that_cannot_meet_its_targets_says_so() -> None:
    """The clustered spectrum's skewness is too noisy over probes for a 5 % target at 320 products."""
    a, lam = _clustered_operator()
    row = adaptive_summary(lambda v: a @ v, lam.size, np.random.default_rng(0), LanczosBudget(stderr_rtol=0.05))
    assert row["stop_reason"] == "budget" and row["n_hvp"] > 320 - 40


@pytest.mark.parametrize("cap", [40, 320, 1000])
def test_no_row_spends_more_than_its_cap(cap: int) -> None:
    a, lam = _clustered_operator()
    row = adaptive_summary(lambda v: a @ v, lam.size, np.random.default_rng(1), LanczosBudget(max_products=cap))
    assert row["n_hvp"] <= cap and row["stop_reason"] in STOP_REASONS and row["lanczos_runs"] >= 8


def test_a_budget_refuses_fewer_than_two_steps_a_run() -> None:
    with pytest.raises(ValueError, match="runs >= 2"):
        LanczosBudget(runs=8, max_products=10)


@pytest.mark.parametrize("exact_moments", [False, True], ids=["estimated-trace", "exact-trace"])
def test_adaptive_rows_are_calibrated_and_no_less_precise_than_the_fixed_design(exact_moments: bool) -> None:
    a, lam = _clustered_operator()
    exact = _exact_summaries(lam)
    kwargs = {"trace": lam.sum(), "frobenius_sq": (lam**2).sum()} if exact_moments else {}
    hits = {k: 0 for k in exact}
    ratio = {k: [] for k in exact}
    for seed in range(30):
        row = adaptive_summary(lambda v: a @ v, lam.size, np.random.default_rng(seed), LanczosBudget(), **kwargs)
        fixed = matrix_free_summary(lambda v: a @ v, lam.size, 8, 40, np.random.default_rng(seed), **kwargs)
        assert row["n_hvp"] <= 320 and row["converged"] and row["bottom_converged"]
        assert abs(row["top_eigenvalue"] - lam.max()) <= row["top_residual"] + 1e-12
        for k, x in exact.items():
            se = row["trace_stderr" if k == "trace" else f"{k}_stderr"]
            hits[k] += abs(row[k] - x) <= 2 * se + 1e-9 * abs(x)
            fixed_se = fixed["trace_stderr" if k == "trace" else f"{k}_stderr"]
            if fixed_se:
                ratio[k].append(se / fixed_se)
    assert all(h >= 24 for h in hits.values()), hits
    # (1 %: a run stopped once its top is certified carries a residual of up to 1e-4 of the scale into
    # the effective rank's error, where 40 steps had driven it to round-off)
    assert all(np.median(r) <= 1.01 for r in ratio.values() if r), {k: np.median(r) for k, r in ratio.items()}


def _matrix_free_blocks():
    """(model, X, y, block name, parameter names) of every block of the CNN and the Transformer."""
    for build, d_in in ((_cnn, 16), (_transformer, 5)):
        model = build()
        X, y = _data(d_in, n=12)
        for name, params in _graph_blocks(model):
            yield model, X, y, name, params


def test_float32_products_pass_their_check_on_untrained_blocks() -> None:
    """Every block of the test CNN and Transformer: one float32 product agrees with the float64 one to
    CHECK_RTOL (measured about 3e-7), so the rows run on float32 products."""
    worst = 0.0
    for model, X, y, name, params in _matrix_free_blocks():
        m64 = model.double().eval().requires_grad_(False)
        group = ParameterGroup.of(m64, params)
        h64 = GraphHVP(loss_objective(m64, group, X, y, nn.CrossEntropyLoss()))
        if h64.linear:
            continue
        low = ProductModel(m64, X, y, "float32")
        h32 = GraphHVP(loss_objective(low.model, group, *low.inputs, nn.CrossEntropyLoss()))
        chosen = checked_products(h32, h64, group.n_params, "float32")
        assert chosen.dtype_name == "float32" and chosen.check_products == 2, name
        worst = max(worst, chosen.measured)
    print(f"largest relative float32 product error: {worst:.2e} (accepted up to {CHECK_RTOL:.0e})")
    assert 0 < worst <= CHECK_RTOL


def test_a_confident_classifier_falls_back_to_float64_products() -> None:
    """An MLP trained on wine to a confident softmax (1 - p ~ 1e-13 at the median): its loss Hessian's
    float32 products err by 2e-4 to 8e-4 of the float64 ones (p (1 - p) cancels), the check refuses
    them, and the rows run on float64 with their tops within their residuals of the exact ones."""
    from sklearn.datasets import load_wine

    data, target = load_wine(return_X_y=True)
    X = torch.tensor((data - data.mean(0)) / data.std(0), dtype=torch.float32)
    y = torch.tensor(target)
    torch.manual_seed(0)
    model = MLP(13, (64, 64), 3, "relu")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.eval()
    args = (model, X[:128], y[:128], nn.CrossEntropyLoss(), "classification")
    rows, _ = engine.curvature_snapshot(*args, CurvatureSettings(exact_limit=0, hvp_budget=160), 0, 0)
    exact, _ = engine.curvature_snapshot(*args, CurvatureSettings(exact_limit=10_000), 0, 0)
    loss = [(r, e) for r, e in zip(rows, exact, strict=True) if r["kind"] == "loss"]
    assert [r["product_dtype"] for r, _ in loss] == ["float64"] * 3
    for r, e in loss:
        assert r["method"] == "lanczos" and r["converged"]
        assert abs(r["top_eigenvalue"] - e["top_eigenvalue"]) <= r["top_residual"] + 1e-10 * e["top_eigenvalue"]


@pytest.mark.parametrize("build,d_in", [(_cnn, 16), (_transformer, 5)], ids=["cnn2d", "transformer"])
def test_float32_rows_are_within_the_float64_rows_errors(build, d_in: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss and local rows, and the Gauss-Newton rows on products (no Jacobian factor allowed)."""
    monkeypatch.setattr(block_engine, "jacobian_factor_fits", lambda n, m, p: False)
    model = build()
    X, y = _data(d_in, n=12)
    args = (model, _graph_blocks(model), X, y, nn.CrossEntropyLoss(), "classification")
    with monkeypatch.context() as exact_factor:
        exact_factor.setattr(block_engine, "jacobian_factor_fits", lambda n, m, p: True)
        exact, _ = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=5000), 0, 0)
    rows = {dtype: block_engine.block_curvature_snapshot(
        *args, CurvatureSettings(exact_limit=0, product_dtype=dtype), 0, 0)[0] for dtype in ("float64", "float32")}
    compared = 0
    for e, r64, r32 in zip(exact, rows["float64"], rows["float32"], strict=True):
        if r32["method"] != "lanczos" or r32["exactly_zero"]:  # a zero row: one float64 product showed it
            continue
        assert r32["product_dtype"] == "float32" and r64["product_dtype"] == "float64"
        compared += 1
        for column in SUMMARIES:
            se = r64["trace_stderr" if column == "trace" else f"{column}_stderr"]
            if r64[column] is None or se is None:
                continue
            assert abs(r32[column] - r64[column]) <= se + 1e-6 * (abs(r64[column]) + 1e-12), (e["kind"], column)
        for end in ("top", "bottom"):
            if r32[f"{end}_eigenvalue"] is not None and (r32["converged"] if end == "top" else r32["bottom_converged"]):
                assert abs(r32[f"{end}_eigenvalue"] - e[f"{end}_eigenvalue"]) <= \
                    r32[f"{end}_residual"] + 1e-12 * abs(e["top_eigenvalue"]), (e["kind"], end)
    assert compared >= 6  # every block's loss and Gauss-Newton rows at least


def test_a_convolution_above_the_closed_forms_cost_is_estimated_within_its_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cost cap at 0 the CNN's convolutions take the Lanczos route on local products: its
    extremes within their residuals of the closed form's, its trace within 3 standard errors."""
    from pipeline.curvature import conv_local

    model = _cnn()
    X, y = _data(16, n=12)
    args = (model, _graph_blocks(model), X, y, nn.CrossEntropyLoss(), "classification")
    exact, _ = block_engine.block_curvature_snapshot(*args, CurvatureSettings(), 0, 0)
    linear = nn.Linear(7, 3)  # m = 8; R = 3 points: the thin route, k = 3; R = 5: k = m = 8
    assert conv_local.conv_closed_form_cost(linear, torch.randn(3, 7)) == 3 * (3**3 + 3 * 8 * 3)
    assert conv_local.conv_closed_form_cost(linear, torch.randn(5, 7)) == 3 * (8**3 + 5 * 8 * 8)
    monkeypatch.setattr(block_engine, "CLOSED_FORM_MAX_COST", 0.0)
    est, _ = block_engine.block_curvature_snapshot(*args, CurvatureSettings(exact_limit=0), 0, 0)
    local = [(e, r) for e, r in zip(exact, est, strict=True) if e["kind"] == "local" and not e["exactly_zero"]]
    assert local and all(e["method"] == "closed_form" and r["method"] == "lanczos" for e, r in local)
    for e, r in local:
        scale = abs(e["top_eigenvalue"]) + abs(e["bottom_eigenvalue"])
        assert abs(r["top_eigenvalue"] - e["top_eigenvalue"]) <= r["top_residual"] + 1e-12 * scale
        assert abs(r["bottom_eigenvalue"] - e["bottom_eigenvalue"]) <= r["bottom_residual"] + 1e-12 * scale
        assert abs(r["trace"] - e["trace"]) <= 3 * r["trace_stderr"] + 1e-12 * scale


def test_refined_natural_gradient_norm_matches_the_dense_solve_with_float32_inner_products() -> None:
    """Iterative refinement: float32 products inside, float64 residuals outside, to CG's 1e-6."""
    from pipeline.curvature.ggn import natural_gradient_norm_dense, natural_gradient_norm_refined

    rng = np.random.default_rng(3)
    s = rng.normal(size=(150, 300)) * np.geomspace(1e-3, 1.0, 300)  # G = S^T S, a spread spectrum
    g_mat, grad = s.T @ s, rng.normal(size=300)
    top = float(np.linalg.eigvalsh(g_mat).max())
    g32 = g_mat.astype(np.float32)
    calls = {"high": 0, "low": 0}

    def high(v):
        calls["high"] += 1
        return g_mat @ v

    def low(v):
        calls["low"] += 1
        return (g32 @ v.astype(np.float32)).astype(np.float64)

    value, converged = natural_gradient_norm_refined(grad, high, low, top, max_iter=500)
    exact = natural_gradient_norm_dense(torch.tensor(grad), torch.tensor(g_mat), top)
    assert converged and value == pytest.approx(exact, rel=1e-6)
    assert calls["high"] <= 4 < calls["low"]  # a few float64 residuals, the rest float32
    capped, ok = natural_gradient_norm_refined(grad, high, low, top, max_iter=5)
    assert not ok and capped < exact
