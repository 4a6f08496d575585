"""Shared fixtures: a tiny corpus config, and one corpus built from it for the read-side tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

# One thread per test process: `make test` runs two xdist workers on two cores, and a worker's own
# OpenMP pool of two threads beside the other worker oversubscribes them; small torch operations then
# wait on descheduled threads (a built-in Transformer run took 5x as long beside two busy processes).
# Set before any test module imports torch or numpy; subprocesses (pipeline extract) inherit it.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
[corpus]
name = "tiny"

[run]
epochs = 3
batch_size = 32
lr = 0.01
metric_checkpoints = 8
spectral_snapshots = 3
probe_size = 64

[[study]]
name = "mix"
[study.grid]
dataset = ["iris", "diabetes"]
activation = ["relu", "sigmoid"]

[[study]]
name = "norms"
[study.grid]
dataset = "wine"
norm = ["batchnorm", "layernorm"]
size = "medium"
dropout = 0.1

[[study]]
name = "train_fraction"
[study.grid]
dataset = "breast_cancer"
train_fraction = [0.25, 0.5, 1.0]

[[study]]
name = "regularizers"
[study.grid]
dataset = "wine"
regularizer = ["none", "sam", "fisher_sam", "hessian_trace"]

[[study]]
name = "propagation"
[study.grid]
dataset = "iris"
size = "custom"
widths = [[8, 8, 8]]
activation = "sigmoid"
coupling_probes = 4
augment = ["none", "synthesized"]

[[study]]
name = "user_model"
[study.grid]
dataset = "iris"
model = "tests.user_models:tiny_mlp"
"""


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` in a subprocess (as a user would), no progress bars."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope="session")
def built_corpus(tmp_path_factory, worker_id: str) -> dict[str, Path]:
    """extract (2 worker processes) -> ingest -> analyze -> report -> figures on the tiny config.

    Built once per test session: under pytest-xdist (``make test`` runs two workers) the first worker
    to ask builds it in the session's shared temporary folder under a file lock, and the other reads it."""
    if worker_id == "master":
        return _build_corpus(tmp_path_factory.mktemp("corpus"))
    root = tmp_path_factory.getbasetemp().parent / "corpus"
    with FileLock(f"{root}.lock"):
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)  # a half-built folder from a worker that died
            root.mkdir()
            _build_corpus(root)
            (root / ".built").touch()
    return _corpus_paths(root)


def _corpus_paths(root: Path) -> dict[str, Path]:
    return {"config": root / "tiny.toml", "db": root / "corpus.duckdb", "shards": root / "shards",
            "report": root / "report", "figures": root / "figures"}


def _build_corpus(root: Path) -> dict[str, Path]:
    config = root / "tiny.toml"
    config.write_text(TINY_CONFIG)
    paths = _corpus_paths(root)
    common = ["--config", str(config), "--db", str(paths["db"]), "--quiet"]
    run_cli("extract", *common, "--shards", str(paths["shards"]), "--workers", "2", check=True)
    checkpoints = _train_user_checkpoints(root / "user_checkpoints")
    run_cli("measure", "--model", "tests.user_models:residual_cnn", "--checkpoints", str(checkpoints), "--data",
            "digits", "--db", str(paths["db"]), "--shards", str(paths["shards"]), "--probe-size", "64", "--quiet",
            check=True)
    run_cli("ingest", *common, "--shards", str(paths["shards"]), check=True)
    run_cli("analyze", *common, "--check-reads", check=True)  # every stage reads only what it declares
    run_cli("report", *common, "--out", str(paths["report"]), check=True)
    run_cli("figures", *common, "--out", str(paths["figures"]), check=True)
    return paths


def _train_user_checkpoints(folder: Path) -> Path:
    """A user's own training history: the residual CNN of tests/user_models.py trained on digits by a
    plain loop, its state_dict saved at steps 0, 20 and 40."""
    import torch

    from pipeline.datasets.run_data import prepared_dataset
    from tests.user_models import residual_cnn

    folder.mkdir(parents=True, exist_ok=True)
    data = prepared_dataset("digits")
    X = torch.from_numpy(data.X[data.train_idx]).float()
    y = torch.from_numpy(data.y[data.train_idx]).long()
    torch.manual_seed(0)
    model = residual_cnn((X.shape[1],), data.output_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for step in range(41):
        if step % 20 == 0:
            torch.save(model.state_dict(), folder / f"step_{step:03d}.pt")
        idx = torch.randint(0, len(X), (32,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return folder
