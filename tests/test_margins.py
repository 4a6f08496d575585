"""Margins (definition 7) against a brute-force per-point autograd computation, and signatures
against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.models.mlp import MLP
from pipeline.snapshot.margins import (
    MARGIN_EPS,
    NO_POINTS,
    NOT_CLASSIFICATION,
    OK,
    ZERO_VARIATION,
    margin_rows,
    margin_signature,
    normalized_margins,
    not_classification_rows,
    representation_names,
)


def _model(norm: str = "none", activation: str = "tanh", widths=(7, 5), d_in: int = 4, d_out: int = 3) -> MLP:
    torch.manual_seed(0)
    model = MLP(d_in, widths, d_out, activation, norm, dropout=0.2)
    if norm == "batchnorm":  # give the running statistics something other than (0, 1)
        model.train()
        with torch.no_grad():
            model(torch.randn(64, d_in))
    return model.double().eval()


def _brute_force(model: MLP, X: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Point by point: logits of the single point, its j, and grad_h (f_i - f_j) by autograd."""
    names = representation_names(len(model.blocks))
    raw = {name: [] for name in names}
    reps_all = {name: [] for name in names}
    for n in range(X.shape[0]):
        h = X[n:n + 1].clone().requires_grad_(True)
        reps = [h]
        for block in model.blocks:
            h = block(h)
            reps.append(h)
        f = reps[-1][0]
        i = int(y[n])
        others = [k for k in range(f.shape[0]) if k != i]
        j = max(others, key=lambda k: float(f[k].detach()))
        diff = f[i] - f[j]
        for name, rep in zip(names, reps, strict=True):
            (g,) = torch.autograd.grad(diff, rep, retain_graph=True)
            raw[name].append(float(diff.detach()) / math.sqrt(MARGIN_EPS + float((g ** 2).sum())))
            reps_all[name].append(rep.detach()[0].numpy())
    out = {}
    for name in names:
        H = np.stack(reps_all[name])
        tv = math.sqrt(np.trace(np.cov(H.T, ddof=0)) if H.shape[1] > 1 else H.var())
        out[name] = np.array(raw[name]) / tv
    return out


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_margins_match_per_point_autograd(norm: str) -> None:
    model = _model(norm)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    expected = _brute_force(model, X, y)
    got = normalized_margins(model, X, y)
    assert [r.name for r in got] == ["input", "h0", "h1", "output"]
    for rep in got:
        assert rep.status == OK
        np.testing.assert_allclose(rep.margins, expected[rep.name], rtol=0, atol=1e-6)
        assert (rep.correct == (expected["output"] > 0)).all()


def test_output_margin_has_the_closed_form_denominator() -> None:
    model = _model()
    X = torch.randn(10, 4, dtype=torch.float64)
    y = torch.zeros(10, dtype=torch.long)
    out = normalized_margins(model, X, y)[-1]
    with torch.no_grad():
        f = model(X)
    top_other = f[:, 1:].max(dim=1).values
    tv = float(torch.sqrt(f.var(dim=0, unbiased=False).sum()))
    np.testing.assert_allclose(out.margins, ((f[:, 0] - top_other) / math.sqrt(MARGIN_EPS + 2) / tv).numpy(),
                               atol=1e-12)


def test_model_is_left_as_it_was() -> None:
    model = _model().float().train()
    before = [p.detach().clone() for p in model.parameters()]
    normalized_margins(model, torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_signature_matches_numpy() -> None:
    v = np.random.default_rng(3).standard_normal(101) * 2 + 0.3
    sig = margin_signature(np.append(v, np.nan))
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    assert sig["count"] == 101
    assert sig["q1"] == pytest.approx(q1, abs=1e-12) and sig["median"] == pytest.approx(med, abs=1e-12)
    assert sig["q3"] == pytest.approx(q3, abs=1e-12)
    assert sig["lower_fence"] == pytest.approx(q1 - 1.5 * (q3 - q1), abs=1e-12)
    assert sig["upper_fence"] == pytest.approx(q3 + 1.5 * (q3 - q1), abs=1e-12)
    assert sig["mean"] == pytest.approx(v.mean(), abs=1e-12) and sig["std"] == pytest.approx(v.std(), abs=1e-12)
    empty = margin_signature(np.array([np.nan]))
    assert empty["count"] == 0 and empty["median"] is None


def test_no_correct_point_is_a_status_not_a_nan() -> None:
    model = _model()
    X = torch.randn(12, 4, dtype=torch.float64)
    with torch.no_grad():
        wrong = model(X).argmin(dim=1)  # every label is the class the model ranks last
    sigs, values = margin_rows(model, {"train": (X, wrong)})
    correct_only = [s for s in sigs if s["correct_only"]]
    assert {s["status"] for s in correct_only} == {NO_POINTS}
    assert all(s["count"] == 0 and s["median"] is None for s in correct_only)
    assert all(s["status"] == OK and s["count"] == 12 and s["median"] < 0 for s in sigs if not s["correct_only"])
    assert len(values) == 4 and not any(any(v["correct"]) for v in values)


def test_single_class_batch_and_dead_layer() -> None:
    model = _model(activation="relu")
    X = torch.randn(20, 4, dtype=torch.float64)
    y = torch.full((20,), 2)  # one class only: margins are still defined (j is the best other class)
    reps = normalized_margins(model, X, y)
    assert all(r.status == OK and np.isfinite(r.margins).all() for r in reps)
    with torch.no_grad():  # kill every unit of the first hidden layer: h0 is constant (all zero)
        model.blocks[0].linear.bias.fill_(-1e3)
    reps = {r.name: r for r in normalized_margins(model, X, y)}
    assert reps["h0"].status == ZERO_VARIATION and np.isnan(reps["h0"].margins).all()
    assert reps["h0"].total_variation == 0
    sigs, _ = margin_rows(model, {"train": (X, y)})
    h0 = [s for s in sigs if s["representation"] == "h0" and not s["correct_only"]][0]
    assert h0["status"] == ZERO_VARIATION and h0["median"] is None and h0["count"] == 20


def test_regression_rows_say_there_are_no_margins() -> None:
    rows = not_classification_rows()
    assert len(rows) == 4 and {r["status"] for r in rows} == {NOT_CLASSIFICATION}
    assert all(r["count"] == 0 and r["median"] is None for r in rows)
