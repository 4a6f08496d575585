"""Schedules, quality metrics against scikit-learn, and the model's block structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from pipeline.models.mlp import build_model, count_parameters
from pipeline.runspec import RunSpec
from pipeline.training.metrics import classification_metrics, regression_metrics
from pipeline.training.schedule import metric_steps, spectral_steps, steps_per_epoch


def test_metric_schedule_is_dense_early_and_sparse_late() -> None:
    steps = metric_steps(10_000, 60)
    assert steps[0] == 0 and steps[-1] == 10_000 and len(steps) == 60
    gaps = np.diff(steps)
    assert gaps[:10].max() < gaps[-10:].min()
    assert (steps <= 0.06 * 10_000).sum() >= 14  # a quarter of the checkpoints in the first 6 %


def test_short_runs_get_fewer_distinct_checkpoints() -> None:
    steps = metric_steps(20, 60)
    assert len(steps) == len(set(steps.tolist())) <= 21 and steps[-1] == 20


def test_spectral_snapshots_are_checkpoints_including_first_and_last() -> None:
    metric = metric_steps(5_000, 80)
    spectral = spectral_steps(metric, 10)
    assert set(spectral.tolist()) <= set(metric.tolist())
    assert spectral[0] == 0 and spectral[-1] == 5_000 and len(spectral) == 10
    assert list(spectral_steps(metric[:5], 10)) == list(metric[:5])


def test_steps_per_epoch_drops_a_single_leftover_row() -> None:
    assert steps_per_epoch(65, 32) == 2  # 32 + 32 + 1: the single row is dropped
    assert steps_per_epoch(66, 32) == 3
    assert steps_per_epoch(10, 32) == 1


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    proba = rng.dirichlet(np.ones(3), size=200)
    m = classification_metrics(y, proba)
    pred = proba.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def test_binary_auc_and_single_class_auc_is_null() -> None:
    y = np.array([0, 1, 1, 0, 1])
    proba = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4], [0.9, 0.1]])
    assert classification_metrics(y, proba)["auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert classification_metrics(np.zeros(5, dtype=int), proba)["auc"] is None


def test_regression_metrics_match_sklearn_in_original_units() -> None:
    rng = np.random.default_rng(1)
    y, pred = rng.normal(size=50), rng.normal(size=50)
    m = regression_metrics(y, pred, target_std=3.0)
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert m["mae"] == pytest.approx(3.0 * skm.mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(3.0 * np.sqrt(skm.mean_squared_error(y, pred)))


def test_model_blocks_follow_the_layer_index_convention() -> None:
    spec = RunSpec(dataset="iris", size="custom", widths=(8, 6), norm="batchnorm", activation="tanh")
    model = build_model(spec, d_in=4, d_out=3)
    assert [b.linear.out_features for b in model.blocks] == [8, 6, 3]
    assert [b.activation_name for b in model.blocks] == ["tanh", "tanh", "identity"]
    assert count_parameters(model) == (4 * 8 + 8 + 16) + (8 * 6 + 6 + 12) + (6 * 3 + 3)
    model.eval()
    x = torch.randn(5, 4)
    inter = model.intermediates(x)
    torch.testing.assert_close(inter.output, model(x))
    assert [u.shape[1] for u in inter.preacts] == [8, 6, 3]
    assert all(float(lin.bias.detach().abs().max()) == 0.0 for lin in model.linears)


def test_same_seed_same_initialization() -> None:
    a = build_model(RunSpec(dataset="iris", init="xavier"), 4, 3)
    b = build_model(RunSpec(dataset="iris", init="xavier"), 4, 3)
    c = build_model(RunSpec(dataset="iris", init="xavier", seed=1), 4, 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.blocks[0].linear.weight, c.blocks[0].linear.weight)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_moving_training_state_moves_parameter_shaped_state_and_keeps_the_optimizer_bound(optimizer: str) -> None:
    """The GPU path's move (pipeline.training.device), checked here on the meta device: parameters
    and their optimizer state (momentum, Adam's moments) follow the model, Adam's scalar step count
    stays on the CPU as non-capturable optimizers require, and the optimizer still holds the model's
    own parameter objects."""
    from pipeline.models.mlp import MLP
    from pipeline.training.device import move_training_state
    from pipeline.training.optim import make_optimizer

    model = MLP(4, (6,), 3, "tanh")
    opt = make_optimizer(RunSpec(dataset="iris", optimizer=optimizer, momentum=0.9), model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    move_training_state(model, opt, "meta")
    params = list(model.parameters())
    assert all(p.device.type == "meta" for p in params)
    assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(p) for p in params]
    moved = [(k, v.device.type) for p in params for k, v in opt.state[p].items() if torch.is_tensor(v)]
    assert moved and all(dev == ("cpu" if k == "step" else "meta") for k, dev in moved)
    assert {k for k, _ in moved} == ({"step", "exp_avg", "exp_avg_sq"} if optimizer == "adam"
                                     else {"momentum_buffer"})
    opt.zero_grad()  # and it steps there: the parameters it updates are the model's
    model(torch.randn(5, 4, device="meta")).sum().backward()
    opt.step()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_a_move_that_makes_new_parameters_leaves_the_next_step_unchanged(optimizer: str) -> None:
    """Under set_overwrite_module_params_on_conversion, Module.to makes new parameter objects even
    CPU to CPU: the moved optimizer (rebound, state reloaded) takes the step an unmoved one takes."""
    import copy

    from pipeline.models.mlp import MLP
    from pipeline.training.device import move_training_state
    from pipeline.training.optim import make_optimizer

    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    model = MLP(4, (6,), 3, "tanh")
    opt = make_optimizer(RunSpec(dataset="iris", optimizer=optimizer, momentum=0.9), model.parameters())

    def step(m: torch.nn.Module, o: torch.optim.Optimizer) -> None:
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        o.step()

    step(model, opt)
    twin_model, twin_opt = copy.deepcopy((model, opt))
    before = [id(p) for p in model.parameters()]
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        move_training_state(model, opt, "cpu")
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    assert [id(p) for p in model.parameters()] != before  # the move did make new parameters
    step(model, opt)
    step(twin_model, twin_opt)
    for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("shape, transposed", [((32, 16), False), ((7, 5), False), ((1000, 48), False),
                                                ((48, 1000), True)])
@pytest.mark.parametrize("p", [0.3, 1.0])
def test_host_drawn_dropout_is_torch_dropout_on_the_cpu(shape: tuple[int, ...], transposed: bool, p: float) -> None:
    """The MLP's dropout draws its mask from the CPU generator on every device; on the CPU that is
    nn.Dropout's own draw, bit for bit (a non-contiguous input's mask in its layout, as ATen draws
    it; all zeros at p = 1), leaving the generator where nn.Dropout leaves it, so runs stored before
    it replaced nn.Dropout are unchanged."""
    from pipeline.models.mlp import HostDrawnDropout

    leaf = torch.randn(*shape, requires_grad=True)
    x = leaf.t() if transposed else leaf
    outs = []
    for module in (torch.nn.Dropout(p), HostDrawnDropout(p)):
        torch.manual_seed(5)
        out = module(x)
        (grad,) = torch.autograd.grad(out.square().sum(), leaf)
        outs.append((out, grad, torch.rand(3)))
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(HostDrawnDropout(p).eval()(x), x)


def test_the_block_graph_keeps_dropout_a_module_call() -> None:
    """Tracing keeps every dropout module a leaf, subclasses included, so a traced MLP in eval mode
    computes what the model computes (tracing through HostDrawnDropout would bake its train branch)."""
    from pipeline.models.block_graph import _trace
    from pipeline.models.mlp import MLP

    model = MLP(4, (8, 8), 3, "relu", "none", 0.5)
    traced = _trace(model)
    assert "blocks.0.dropout" in {str(n.target) for n in traced.graph.nodes if n.op == "call_module"}
    model.eval()
    traced.eval()
    x = torch.randn(6, 4)
    assert torch.equal(traced(x), model(x))
