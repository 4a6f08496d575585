"""Regularized training steps against closed forms, and sharpness against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.curvature.objective import model_loss_objective
from pipeline.curvature.sharpness import loss_sharpness_row, sam_sharpness
from pipeline.models.mlp import MLP
from pipeline.training.regularizers import (
    fisher_metric,
    metric_sam_perturbation,
    regularized_gradients,
    sam_perturbation,
    training_step,
)

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


class Quadratic(nn.Module):
    """L(w) = 1/2 w^T A w - b^T w, so grad L = A w - b."""

    def __init__(self, w0):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w0, dtype=torch.float64).clone())

    def loss(self) -> torch.Tensor:
        return 0.5 * self.w @ A @ self.w - B @ self.w


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_sam_step_matches_the_closed_form_on_a_quadratic(rho: float) -> None:
    w0 = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    model = Quadratic(w0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = training_step(model, opt, model.loss, "sam", rho=rho)
    g = A @ w0 - B
    expected = w0 - 0.1 * (A @ (w0 + rho * g / torch.linalg.norm(g)) - B)
    assert loss == pytest.approx(float(0.5 * w0 @ A @ w0 - B @ w0), abs=1e-12)
    torch.testing.assert_close(model.w.detach(), expected, rtol=0, atol=1e-12)


def test_fisher_sam_is_sam_under_the_identity_metric() -> None:
    grads = [torch.randn(4, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    identity = [torch.ones_like(g) for g in grads]
    for a, b in zip(metric_sam_perturbation(grads, 0.2, identity), sam_perturbation(grads, 0.2), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    # eta = 0 makes Fisher SAM's metric the identity: whole steps agree
    w0 = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    steps = []
    for reg, eta in (("sam", 1.0), ("fisher_sam", 0.0)):
        model = Quadratic(w0)
        training_step(model, torch.optim.SGD(model.parameters(), lr=0.1), model.loss, reg, rho=0.3, fisher_eta=eta)
        steps.append(model.w.detach())
    torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=1e-14)


def test_fisher_sam_step_matches_its_closed_form() -> None:
    w0 = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    rho, eta = 0.3, 2.0
    model = Quadratic(w0)
    training_step(model, torch.optim.SGD(model.parameters(), lr=0.1), model.loss, "fisher_sam", rho=rho,
                  fisher_eta=eta)
    g = A @ w0 - B
    f = 1 + eta * g * g
    eps = rho * (g / f) / torch.sqrt(g @ (g / f))
    assert float(torch.sqrt(eps @ (f * eps))) == pytest.approx(rho)  # length rho in the Fisher norm
    torch.testing.assert_close(model.w.detach(), w0 - 0.1 * (A @ (w0 + eps) - B), rtol=0, atol=1e-12)
    assert fisher_metric([g], eta)[0].min() >= 1


def test_gradient_norm_penalty_gradient() -> None:
    w0 = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    model = Quadratic(w0)
    _, (grad,) = regularized_gradients([model.w], model.loss, "grad_norm", penalty=0.1)
    g = A @ w0 - B
    torch.testing.assert_close(grad, g + 0.1 * 2 * A @ g, rtol=0, atol=1e-12)  # d/dw ||Aw - b||^2 = 2 A g


def test_hessian_trace_penalty_gradient() -> None:
    """L = sum w^4 / 4: H = diag(3 w^2), and v^T H v = tr H for every Rademacher v, so the penalty's
    gradient is exactly 6 lambda w."""
    w = nn.Parameter(torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64))
    loss, (grad,) = regularized_gradients([w], lambda: (w ** 4).sum() / 4, "hessian_trace", penalty=0.1,
                                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grad, w.detach() ** 3 + 0.1 * 6 * w.detach(), rtol=0, atol=1e-12)
    assert loss == pytest.approx(float((w.detach() ** 4).sum() / 4))


def test_plain_step_equals_backward_and_step() -> None:
    torch.manual_seed(0)
    a, b = MLP(4, (6,), 3), MLP(4, (6,), 3)
    b.load_state_dict(a.state_dict())
    X, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    oa, ob = torch.optim.Adam(a.parameters(), 1e-2), torch.optim.Adam(b.parameters(), 1e-2)
    training_step(a, oa, lambda: nn.functional.cross_entropy(a(X), y), "none")
    nn.functional.cross_entropy(b(X), y).backward()
    ob.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_sam_leaves_batchnorm_statistics_to_the_unperturbed_pass() -> None:
    torch.manual_seed(0)
    a, b = MLP(4, (6,), 3, norm="batchnorm"), MLP(4, (6,), 3, norm="batchnorm")
    b.load_state_dict(a.state_dict())
    X, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    training_step(a, torch.optim.SGD(a.parameters(), 0.1), lambda: nn.functional.cross_entropy(a(X), y), "sam")
    training_step(b, torch.optim.SGD(b.parameters(), 0.1), lambda: nn.functional.cross_entropy(b(X), y), "none")
    na, nb = a.blocks[0].norm, b.blocks[0].norm
    torch.testing.assert_close(na.running_mean, nb.running_mean)
    assert na.momentum == nb.momentum == 0.1


def test_non_finite_loss_raises_before_stepping() -> None:
    model = Quadratic([0.0, 0.0, 0.0])
    with pytest.raises(FloatingPointError):
        training_step(model, torch.optim.SGD(model.parameters(), 0.1), lambda: model.loss() * math.inf, "sam")
    assert torch.equal(model.w.detach(), torch.zeros(3, dtype=torch.float64))


# --- sharpness and the whole-model top eigenvalue ---------------------------------------------------

def test_sharpness_matches_brute_force_on_the_circle() -> None:
    """A convex 2-D quadratic: the maximum over the disc lies on its boundary; a fine angle grid is
    the reference. SAM's one-step value is L(w + rho g / ||g||) - L(w) exactly."""
    A2 = torch.tensor([[4.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    b2 = torch.tensor([0.5, -1.0], dtype=torch.float64)

    def f(w):
        return 0.5 * w @ A2 @ w - b2 @ w

    w0 = torch.tensor([0.2, 0.4], dtype=torch.float64)
    for rho in (0.05, 0.5):
        est = sam_sharpness(f, w0, rho, steps=30)
        angles = np.linspace(0, 2 * np.pi, 200_001)
        circle = torch.as_tensor(np.stack([np.cos(angles), np.sin(angles)], 1)) * rho
        brute = float(max(0.0, float((0.5 * ((w0 + circle) @ A2 * (w0 + circle)).sum(1)
                                      - (w0 + circle) @ b2).max() - f(w0))))
        assert est.sharpness <= brute + 1e-9
        assert est.sharpness == pytest.approx(brute, rel=1e-6)
        g = A2 @ w0 - b2
        assert est.one_step == pytest.approx(float(f(w0 + rho * g / torch.linalg.norm(g)) - f(w0)), abs=1e-12)


def test_sharpness_at_a_minimum_uses_a_random_start() -> None:
    A2 = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    est = sam_sharpness(lambda w: 0.5 * w @ A2 @ w, torch.zeros(2, dtype=torch.float64), 0.1, steps=40,
                        rng=np.random.default_rng(0))
    assert est.sharpness == pytest.approx(0.5 * 4.0 * 0.1 ** 2, rel=1e-6)  # rho^2 lambda_max / 2


def test_a_loss_that_overflows_inside_the_ball_is_undefined_not_a_number() -> None:
    est = sam_sharpness(lambda w: torch.exp(1e4 * w).sum(), torch.zeros(2, dtype=torch.float64), 0.5)
    assert math.isnan(est.sharpness)  # not max(nan, 0) = 0 and not inf


def test_top_eigenvalue_of_the_whole_model_matches_the_exact_hessian() -> None:
    torch.manual_seed(0)
    model = MLP(3, (5,), 3, activation="tanh").double().eval()
    X, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    loss_fn = nn.CrossEntropyLoss()
    obj = model_loss_objective(model, X, y, loss_fn)
    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(obj.f, obj.theta0))
    row = loss_sharpness_row(model.float(), X.float(), y, loss_fn, "classification", np.random.default_rng(0))
    assert row["n_params"] == obj.n_params == 3 * 5 + 5 + 5 * 3 + 3
    assert row["hessian_top_converged"]
    assert row["hessian_top_eigenvalue"] == pytest.approx(float(exact.max()), rel=1e-6)
    assert 0 <= row["sharpness_one_step"] <= row["sharpness"]
