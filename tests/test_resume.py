"""Interrupted extraction resumes without loss or duplication (kill -9 and Ctrl-C).

The reference is an uninterrupted extraction in this process (inline executor); the interrupted
one runs as `pipeline extract --workers 2` in its own process group, killed mid-run, then re-run.
Both are ingested and must be equal row for row in every table, wall-time columns aside.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.executors import run_extraction
from snapshot_loader.ingest import ingest_shards
from tests.conftest import ROOT, run_cli
from tests.corpus_compare import assert_same_corpus

# Every random path of a run: dropout, label noise, a train-fraction subsample, batch norm.
RESUME_CONFIG = """
[corpus]
name = "resume"
[run]
epochs = 30
lr = 0.01
metric_checkpoints = 20
spectral_snapshots = 4
probe_size = 64
widths = [24, 16]
[[study]]
name = "plain"
[study.grid]
dataset = ["wine", "diabetes"]
[[study]]
name = "random_paths"
[study.grid]
dataset = ["breast_cancer", "iris"]
dropout = 0.2
label_noise = 0.1
train_fraction = 0.5
norm = "batchnorm"
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reference")
    config = root / "resume.toml"
    config.write_text(RESUME_CONFIG)
    shards, db = root / "shards", root / "ref.duckdb"
    outcomes, failures = run_extraction(load_config(config).runs(), shards, executor="inline", show_progress=False)
    assert not failures and all(o.status == "complete" for o in outcomes)
    ingest_shards(db, shards)
    return {"config": config, "db": db}


def _start_extract(config: Path, shards: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "extract", "--config", str(config),
                             "--shards", str(shards), "--workers", "2", "--quiet"],
                            cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_shards(shards: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = list(shards.glob("dataset=*/run_id=*"))
        if len(done) >= n:
            return
        assert proc.poll() is None, f"extraction ended early: {proc.stderr.read().decode()}"
        time.sleep(0.05)
    raise AssertionError("no shard appeared in time")


@pytest.mark.parametrize("sig,after_shards,group", [(signal.SIGKILL, 1, True), (signal.SIGKILL, 0, True),
                                                    (signal.SIGINT, 1, True), (signal.SIGINT, 1, False)],
                         ids=["kill9-after-first-run", "kill9-during-first-runs", "ctrl-c",
                              "sigint-coordinator-only"])
def test_interrupted_extraction_resumes_to_identical_rows(reference, tmp_path: Path, sig, after_shards,
                                                          group) -> None:
    shards, db = tmp_path / "shards", tmp_path / "resumed.duckdb"
    proc = _start_extract(reference["config"], shards)
    if after_shards:
        _wait_for_shards(shards, after_shards, proc)
    else:  # wait until a worker has begun writing a run, then kill inside it
        _wait_for_tmp_or_time(shards, proc)
    # group: the terminal's Ctrl-C reaches every process; otherwise only the coordinator, whose
    # queued runs must then be dropped rather than finished.
    (os.killpg if group else os.kill)(proc.pid, sig)
    rc = proc.wait(timeout=60)
    assert rc != 0
    if sig == signal.SIGINT:
        assert "run the same command again to resume" in proc.stderr.read().decode()
    n_done = len(list(shards.glob("dataset=*/run_id=*")))
    assert n_done < 4, "the kill came too late to interrupt anything"

    resumed = run_cli("extract", "--config", str(reference["config"]), "--shards", str(shards), "--workers", "2",
                      "--quiet", check=True)
    assert f"{n_done} already done" in resumed.stderr
    assert not [p for p in shards.glob(".tmp-*")], "stale temp folders were left behind"
    ingest_shards(db, shards)
    assert_same_corpus(reference["db"], db)


def _wait_for_tmp_or_time(shards: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Return once a run's temp folder exists (a worker is mid-write) or a first run is under way."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        if shards.exists() and (list(shards.glob(".tmp-*")) or time.monotonic() - started > 4.0):
            return
        assert proc.poll() is None, f"extraction ended early: {proc.stderr.read().decode()}"
        time.sleep(0.01)
