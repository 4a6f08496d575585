"""kill -9 at random points, of the coordinator and of a worker, always ends in the same database.

The reference is an uninterrupted extraction and ingest of a tiny plan. For each of 10 seeds, the
coordinator (``pipeline extract --workers 2`` then ``pipeline ingest`` in one process) is killed with
SIGKILL at a point drawn from the seed, stratified over the whole duration so that the kills cover
start-up, training, shard writing and ingest; its workers die with it. Re-running the two commands
must give a database equal row for row to the reference. For another 5 seeds a worker is killed
instead (a uniform point in the first 60 % of the work: one retry path, so fewer draws cover it): the
coordinator must retry the lost run on its own and finish with no failure.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.conftest import ROOT
from tests.corpus_compare import assert_same_corpus

SEEDS = range(10)
WORKER_SEEDS = range(5)

PLAN = """
[corpus]
name = "crash"
[run]
epochs = 40
lr = 0.01
metric_checkpoints = 4
spectral_snapshots = 2
probe_size = 32
widths = [8]
[[study]]
name = "s"
[study.grid]
dataset = ["iris", "wine", "diabetes"]
dropout = 0.1
"""

DRIVER = """
import sys
from pipeline.cli import main
config, shards, db = sys.argv[1:4]
rc = main(["extract", "--config", config, "--shards", shards, "--workers", "2", "--quiet"])
sys.exit(rc or main(["ingest", "--config", config, "--shards", shards, "--db", db, "--quiet"]))
"""


def _start(config: Path, shards: Path, db: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(config), str(shards), str(db)], cwd=ROOT, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _workers(pid: int) -> list[int]:
    """The coordinator's worker processes (spawned children; not the resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run, timed, as the CLI runs it: twice, the two databases equal, and the faster
    timing kept (the first run pays cold caches, and a kill scheduled from a slow reference could come
    after a warm run has already finished)."""
    root = tmp_path_factory.mktemp("crash-reference")
    config = root / "plan.toml"
    config.write_text(PLAN)
    timings = []
    for k in range(2):
        t0 = time.monotonic()
        proc = _start(config, root / f"shards{k}", root / f"ref{k}.duckdb")
        started = _wait_for_workers(proc)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        timings.append((started - t0, time.monotonic() - started))
    assert_same_corpus(root / "ref0.duckdb", root / "ref1.duckdb")
    return {"config": config, "db": root / "ref0.duckdb", "startup": min(t[0] for t in timings),
            "work": min(t[1] for t in timings)}


def _wait_for_workers(proc: subprocess.Popen) -> float:
    """The moment the first worker process exists (start-up, imports and planning are over)."""
    while not _workers(proc.pid):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    return time.monotonic()


def _resume(config: Path, shards: Path, db: Path) -> None:
    assert main(["extract", "--config", str(config), "--shards", str(shards), "--executor", "inline", "--quiet"]) == 0
    assert main(["ingest", "--config", str(config), "--shards", str(shards), "--db", str(db), "--quiet"]) == 0


def _kill_coordinator_at(config: Path, shards: Path, db: Path, seed: int, startup: float, work: float
                         ) -> tuple[subprocess.Popen | None, list[int], float]:
    """Start the coordinator and SIGKILL it at the seed's point; ``(None, [], work)`` if it finished first,
    with ``work`` then the duration this (faster) run actually took after its workers appeared."""
    u = random.Random(seed).random()
    proc = _start(config, shards, db)
    if seed < 2:  # during start-up, before any worker exists
        started, delay = time.monotonic(), startup * u * 0.8
    else:  # stratified over training, shard writing and ingest: seed k in the (k-1)-th eighth of that work
        started = _wait_for_workers(proc)
        delay = 0.9 * work * (seed - 2 + u) / (len(SEEDS) - 2)
    deadline = started + delay
    while time.monotonic() < deadline:  # polled, so that a run that finishes early is timed to 10 ms
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            return None, [], time.monotonic() - started if seed >= 2 else work
        time.sleep(0.01)
    workers = _workers(proc.pid)
    proc.kill()  # the coordinator only: its workers must not outlive it and keep writing
    proc.wait(timeout=30)
    return proc, workers, work


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_of_the_coordinator_at_a_random_point_resumes_to_identical_rows(reference, tmp_path: Path,
                                                                            seed: int) -> None:
    # The kill point is a fraction of the reference's duration, and the other test worker's load can make
    # this run faster than the reference was. A run that finishes before its kill tests nothing, so it is
    # repeated with the fraction applied to the duration that run itself took (at most three tries).
    work = reference["work"]
    for attempt in range(3):
        shards, db = tmp_path / f"shards{attempt}", tmp_path / f"corpus{attempt}.duckdb"
        proc, workers, work = _kill_coordinator_at(reference["config"], shards, db, seed, reference["startup"], work)
        if proc is not None:
            break
    assert proc is not None, "the coordinator finished before its kill three times: the kill would test nothing"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
              for w in workers if Path(f"/proc/{w}/stat").exists()):
        assert time.monotonic() < deadline, "a worker outlived its killed coordinator"
        time.sleep(0.05)
    _resume(reference["config"], shards, db)
    assert not list(shards.glob(".tmp-*")), "a partial shard was left behind"
    assert_same_corpus(reference["db"], db)


@pytest.mark.parametrize("seed", WORKER_SEEDS)
def test_kill9_of_a_worker_at_a_random_point_is_retried_without_loss(reference, tmp_path: Path, seed: int) -> None:
    shards, db = tmp_path / "shards", tmp_path / "corpus.duckdb"
    rng = random.Random(1000 + seed)
    proc = _start(reference["config"], shards, db)
    _wait_for_workers(proc)
    time.sleep(reference["work"] * rng.uniform(0.0, 0.6))
    victim = None
    while victim is None and proc.poll() is None:
        workers = _workers(proc.pid)
        if workers:
            victim = rng.choice(workers)
            os.kill(victim, signal.SIGKILL)
        else:
            time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert victim is not None, "the plan finished before any worker could be killed"
    assert proc.returncode == 0, err
    assert ", 0 failed in" in err
    assert not list(shards.glob(".tmp-*"))
    assert_same_corpus(reference["db"], db)
