"""Executors behind one interface: Dask equals the process pool row for row; retries and recorded failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import pipeline.executors as executors
import pipeline.executors.inline as inline_backend  # where the inline backend looks up extract_run
from pipeline.config import load_config
from pipeline.executors import run_extraction
from snapshot_loader.ingest import ingest_shards
from tests.conftest import ROOT, run_cli
from tests.corpus_compare import assert_same_corpus

# Three data sets, a random path (dropout, label noise) and batch norm: what could differ between executors.
SMALL_PLAN = """
[corpus]
name = "small"
[run]
epochs = 4
lr = 0.01
metric_checkpoints = 6
spectral_snapshots = 2
probe_size = 32
widths = [12, 8]
[[study]]
name = "plain"
[study.grid]
dataset = ["iris", "diabetes"]
[[study]]
name = "random_paths"
[study.grid]
dataset = "wine"
dropout = 0.2
label_noise = 0.1
norm = "batchnorm"
"""


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "small.toml"
    path.write_text(SMALL_PLAN)
    return path


def _extract_and_ingest(config: Path, root: Path, *args: str) -> Path:
    shards, db = root / "shards", root / "corpus.duckdb"
    run_cli("extract", "--config", str(config), "--shards", str(shards), "--quiet", *args, check=True)
    run_cli("ingest", "--config", str(config), "--shards", str(shards), "--db", str(db), "--quiet", check=True)
    return db


def test_dask_local_cluster_equals_the_process_pool_row_for_row(small_plan: Path, tmp_path: Path) -> None:
    pool = _extract_and_ingest(small_plan, tmp_path / "pool", "--workers", "2")
    dask = _extract_and_ingest(small_plan, tmp_path / "dask", "--executor", "dask-local", "--workers", "2")
    assert_same_corpus(pool, dask)
    with duckdb.connect(str(dask), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 3


def test_a_run_that_fails_once_is_retried_and_one_that_fails_twice_is_recorded(small_plan: Path, tmp_path: Path,
                                                                             monkeypatch) -> None:
    runs = load_config(small_plan).runs()
    flaky, broken = runs[0].run_id, runs[1].run_id
    calls: dict[str, int] = {}
    real = inline_backend.extract_run

    def sometimes_failing(spec, *args, **kwargs):
        calls[spec.run_id] = calls.get(spec.run_id, 0) + 1
        if spec.run_id == broken or (spec.run_id == flaky and calls[flaky] == 1):
            raise RuntimeError(f"injected failure #{calls[spec.run_id]}")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(inline_backend, "extract_run", sometimes_failing)
    shards = tmp_path / "shards"
    outcomes, failures = run_extraction(runs, shards, executor="inline", show_progress=False)
    assert calls[flaky] == 2 and calls[broken] == executors.MAX_ATTEMPTS
    assert sorted(o.run_id for o in outcomes) == sorted([flaky, runs[2].run_id])
    assert [(f.run_id, f.error) for f in failures] == [(broken, "RuntimeError: injected failure #2")]

    db = tmp_path / "c.duckdb"
    report = ingest_shards(db, shards)
    assert report.failed_runs == 1 and len(report.ingested) == 2
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT run_id, attempts, error FROM run_failures").fetchall() == [
            (broken, 2, "RuntimeError: injected failure #2")]

    # once the cause is gone, a re-run extracts it and the failure record leaves with the next ingest
    monkeypatch.setattr(inline_backend, "extract_run", real)
    outcomes, failures = run_extraction(runs, shards, executor="inline", show_progress=False)
    assert not failures and sum(o.status == "complete" for o in outcomes) == 1
    ingest_shards(db, shards)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM run_failures").fetchall()[0][0] == 0
        assert con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 3


def test_cli_exits_nonzero_naming_the_failed_run_and_keeps_the_rest(small_plan: Path, tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    from pipeline.cli import main

    runs = load_config(small_plan).runs()
    real = inline_backend.extract_run

    def failing(spec, *args, **kwargs):
        if spec.run_id == runs[0].run_id:
            raise MemoryError("injected")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(inline_backend, "extract_run", failing)
    shards = tmp_path / "shards"
    assert main(["extract", "--config", str(small_plan), "--shards", str(shards), "--executor", "inline",
                 "--quiet"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"error: 1 of 3 runs failed twice (first: run {runs[0].run_id}: MemoryError: injected); "
                    f"recorded in {shards}/failures (ingest puts them in run_failures); the others are kept, "
                    "re-run to retry")
    assert len(list(shards.glob("dataset=*/run_id=*/manifest.json"))) == 2
    assert (shards / "failures" / f"{runs[0].run_id}.json").is_file() and not list(shards.glob(".tmp-*"))


GUARD_CHECK = """
import os, sys
import pipeline.orphan_guard as guard
print(sorted(m for m in ('torch', 'numpy', 'pipeline.extract') if m in sys.modules))
guard.guarded_main(-1, b'not a pickle')  # -1 is nobody's parent: returns before it unpickles anything
guard.guarded_main(os.getppid(), guard.guarded_payload(print, 'ran'), 'payload')
"""


def test_orphan_guard_imports_nothing_heavy_and_stops_an_orphan_before_its_payload() -> None:
    """A worker must reach its parent check within interpreter start-up: the guard module may not pull
    in torch or the pipeline (the window in which a killed coordinator's worker outlived it). Run in a
    child, since the guard sets the calling process's death signal."""
    out = subprocess.run([sys.executable, "-c", GUARD_CHECK], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "payload ran"]
