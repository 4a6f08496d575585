"""The worked examples of docs/models.md, run as they stand: each module is written out, trained by
its own loop (a subprocess, as a user runs it), measured by the documented ``pipeline measure``
command, and its last checkpoint's exact loss and Gauss-Newton blocks checked against references
computed here from the saved files alone: a dense autograd Hessian (reverse-over-reverse) and
curvlinops' GGNLinearOperator on the stored probe batch, to 1e-10 of the largest |eigenvalue|. Each
factory also goes through a corpus config (``model = ...``, a ``[[dataset]]`` of its arrays)."""

from __future__ import annotations

import importlib
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from curvlinops import GGNLinearOperator
from safetensors.torch import load_file
from torch import nn

from pipeline import cli
from pipeline.commands import custom_specs
from pipeline.config import parse_config
from pipeline.curvature.attention import second_order_attention
from pipeline.models.block_graph import block_parameter_names

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "models.md").read_text()
EXAMPLE = re.compile(r"<!-- example: (\w+)\.py -->\n```python\n(.*?)```\n\n```console\n(.*?)```", re.S)
EXAMPLES = {name: (code, [line[2:] for line in console.splitlines() if line.startswith("$ ")])
            for name, code, console in EXAMPLE.findall(DOC)}

BLOCKS = {
    "vit_digits": ["(own)", "embed", "encoder", "head"],
    "resnet_digits": ["conv1", "bn1", "layer1", "layer2", "fc"],
    "causal_titles": ["embed", "(own)", "block.norm1", "block.qkv", "block.out", "block.norm2", "block.mlp.0",
                      "block.mlp.2", "head"],
}
#: Blocks up to this size are checked against the dense references (the exact route covers larger ones).
CHECKED_MAX = 400


def test_the_documentation_holds_the_three_examples() -> None:
    assert set(EXAMPLES) == set(BLOCKS)
    for _, commands in EXAMPLES.values():
        assert [c.split()[0] for c in commands] == ["python", "PYTHONPATH=."]


def _last_state(name: str, runs: Path) -> dict[str, torch.Tensor]:
    """The last checkpoint's weights, read with each format's own library (not the tool's reader)."""
    if name == "vit_digits":
        return load_file(max(runs.glob("*.safetensors"), key=lambda p: int(p.stem.split("_")[1])))
    if name == "resnet_digits":
        blob = torch.load(max(runs.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns), weights_only=True)
        return {k.removeprefix("model."): v for k, v in blob["state_dict"].items()}
    return torch.load(max(runs.glob("checkpoint_*")) / "checkpoint.pt", weights_only=True)


def _loss_hessian(model: nn.Module, names: list[str], X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    theta0 = torch.cat([named[n].detach().reshape(-1) for n in names])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in
                  zip(names, torch.split(theta, [math.prod(s) for s in shapes]), shapes, strict=True)}
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (X,)), y)

    return torch.autograd.functional.hessian(loss, theta0)


def _matches(stored: list[float], reference: torch.Tensor) -> None:
    lam = torch.linalg.eigvalsh(0.5 * (reference + reference.T)).numpy()
    np.testing.assert_allclose(np.sort(stored), lam, rtol=0, atol=1e-10 * max(np.abs(lam).max(), 1e-300))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which every example's module is written and its training command run, as a user would."""
    folder = tmp_path_factory.mktemp("examples")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    for name, (code, (train, _)) in EXAMPLES.items():
        (folder / f"{name}.py").write_text(code)
        subprocess.run([sys.executable, *shlex.split(train)[1:]], cwd=folder, env=env, check=True)
    return folder


@pytest.mark.parametrize("name", list(BLOCKS))
def test_a_worked_example_is_trained_saved_and_measured_exactly(name: str, trained: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    _, (train, measure) = EXAMPLES[name]
    monkeypatch.chdir(trained)
    monkeypatch.syspath_prepend(str(trained))
    args = shlex.split(measure)[2:]
    db = tmp_path / "m.duckdb"
    assert cli.main([*args, "--db", str(db), "--shards", str(tmp_path / "shards"), "--quiet"]) == 0

    con = duckdb.connect(str(db), read_only=True)
    assert [r[0] for r in con.execute("SELECT name FROM layers ORDER BY layer_index").fetchall()] == BLOCKS[name]
    steps = [r[0] for r in con.execute("SELECT step FROM checkpoints ORDER BY step").fetchall()]
    assert len(steps) == 2 and steps[0] > 0
    data = np.load(args[args.index("--data") + 1])
    X_all = np.concatenate([data["X"], data["X_test"]])
    y_all = np.concatenate([data["y"], data["y_test"]])
    (rows,) = con.execute("SELECT rows FROM splits WHERE split = 'probe'").fetchone()
    X = torch.from_numpy(X_all[rows])
    X = X.double() if X.is_floating_point() else X
    y = torch.from_numpy(y_all[rows]).long()

    factory = importlib.import_module(name)
    model = factory.build(tuple(X_all.shape[1:]), int(y_all.max()) + 1)
    model.load_state_dict(_last_state(name, trained / shlex.split(train)[-1]))
    model = model.double().eval()
    named = dict(model.named_parameters())
    blocks = enumerate(block_parameter_names(model, BLOCKS[name]))
    spectra = {(i, kind): (method, values) for i, kind, method, values in con.execute(
        "SELECT layer_index, kind, method, eigenvalues FROM hessian_spectra WHERE step = ?", [steps[-1]]).fetchall()}
    checked = 0
    for i, names in blocks:
        if sum(named[n].numel() for n in names) > CHECKED_MAX:
            continue
        with second_order_attention():
            h = _loss_hessian(model, names, X, y)
            p = h.shape[0]
            g = GGNLinearOperator(model, nn.CrossEntropyLoss(), [named[n] for n in names], [(X, y)]) @ \
                torch.eye(p, dtype=torch.float64)
        assert spectra[(i, "loss")][0] == "autograd" and spectra[(i, "ggn")][0] == "gram"
        _matches(spectra[(i, "loss")][1], h)
        _matches(spectra[(i, "ggn")][1], g)
        checked += 1
    assert checked >= 3


def test_the_example_factories_go_through_a_corpus_config(trained: Path, monkeypatch) -> None:
    """Each factory as ``model = ...`` of a study over a ``[[dataset]]`` of its saved arrays, one short
    run each: trained here and measured at a spectral snapshot."""
    from pipeline.extract.run import train_and_measure

    datasets, studies = [], []
    for name, (_, (_, measure)) in EXAMPLES.items():
        args = shlex.split(measure)
        datasets.append({"name": f"{name}_data", "path": str(trained / args[args.index("--data") + 1]),
                         "task": "classification"})
        grid = {"dataset": f"{name}_data", "model": f"{name}:build", "preprocess": "none", "epochs": 1,
                "train_fraction": 0.25, "metric_checkpoints": 2, "spectral_snapshots": 1, "probe_size": 16}
        if "--blocks" in args:
            grid["blocks"] = args[args.index("--blocks") + 1]
        studies.append({"name": name, "grid": grid})
    monkeypatch.syspath_prepend(str(trained))
    config = parse_config({"dataset": datasets, "study": studies})
    custom = custom_specs(config)
    for spec in config.runs():
        rows = train_and_measure(spec, custom)
        name = spec.model.split(":")[0]
        assert [r["name"] for r in rows["layers"]] == BLOCKS[name]
        assert {r["kind"] for r in rows["hessian_spectra"]} == {"local", "loss", "ggn"}
