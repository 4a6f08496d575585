"""Bad input: corrupt shards, a database of another schema version, divergence, unknown stages."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
import torch

import snapshot_loader
from pipeline.errors import SchemaError
from pipeline.extract.run import extract_run
from pipeline.runspec import RunSpec
from snapshot_loader.database import connect_writable
from snapshot_loader.ingest import ingest_shards
from tests.conftest import run_cli

TINY = dict(epochs=2, metric_checkpoints=4, spectral_snapshots=2, probe_size=32)


def _two_shards(tmp_path: Path) -> tuple[Path, list[str]]:
    shards = tmp_path / "shards"
    ids = []
    for ds in ("iris", "wine"):
        outcome = extract_run(RunSpec(dataset=ds, **TINY), shards)
        ids.append(outcome.run_id)
    return shards, ids


def _folder(shards: Path, run_id: str) -> Path:
    return next(shards.glob(f"dataset=*/run_id={run_id}"))


def test_corrupt_shard_is_named_and_the_rest_ingested(tmp_path: Path) -> None:
    shards, ids = _two_shards(tmp_path)
    victim = _folder(shards, ids[0]) / "checkpoints.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = ingest_shards(tmp_path / "c.duckdb", shards)
    assert report.ingested == [ids[1]]
    assert len(report.errors) == 1 and str(victim) in report.errors[0] and "checksum" in report.errors[0]


def test_cli_ingest_of_a_partial_shard_exits_nonzero_naming_the_file(tmp_path: Path) -> None:
    shards, ids = _two_shards(tmp_path)
    (_folder(shards, ids[1]) / "manifest.json").unlink()
    config = tmp_path / "c.toml"
    config.write_text('[run]\nepochs = 2\nmetric_checkpoints = 4\nspectral_snapshots = 2\nprobe_size = 32\n'
                      '[[study]]\nname = "s"\n[study.grid]\ndataset = ["iris", "wine"]\n')
    proc = run_cli("ingest", "--config", str(config), "--shards", str(shards), "--db", str(tmp_path / "c.duckdb"))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 corrupt shard") and "manifest.json" in last
    # extraction redoes the broken run, after which ingest completes
    run_cli("extract", "--config", str(config), "--shards", str(shards), "--quiet", check=True)
    run_cli("ingest", "--config", str(config), "--shards", str(shards), "--db", str(tmp_path / "c.duckdb"),
            check=True)
    with snapshot_loader.open(tmp_path / "c.duckdb") as corpus:
        assert corpus.runs().height == 2


def test_database_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    connect_writable(db).close()
    con = duckdb.connect(str(db))
    con.execute("UPDATE schema_version SET version = 0")
    con.close()
    with pytest.raises(SchemaError, match="schema version 0"):
        snapshot_loader.open(db)
    with pytest.raises(SchemaError, match="schema version 0"):
        connect_writable(db)


def test_a_foreign_duckdb_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(SchemaError, match="not a corpus database"):
        snapshot_loader.open(db)


def test_missing_database_is_a_one_line_error(tmp_path: Path) -> None:
    proc = run_cli("report", "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ") and "database not found" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_diverged_run_is_marked_and_keeps_earlier_checkpoints(tmp_path: Path) -> None:
    spec = RunSpec(dataset="wine", optimizer="sgd", lr=5.0, epochs=20, metric_checkpoints=40, spectral_snapshots=5)
    shards = tmp_path / "shards"
    assert extract_run(spec, shards).status == "diverged"
    ingest_shards(tmp_path / "c.duckdb", shards)
    with snapshot_loader.open(tmp_path / "c.duckdb") as corpus:
        run = corpus.runs().row(0, named=True)
        assert run["status"] == "diverged" and run["diverged_step"] > run["final_step"] > 0
        ckpt = corpus.sql("SELECT max(step) AS last, count(*) AS n, bool_and(isfinite(train_loss)) AS finite "
                          "FROM checkpoints").row(0, named=True)
        assert ckpt["last"] == run["final_step"] and ckpt["n"] > 1 and ckpt["finite"]
        assert corpus.sql("SELECT max(step) AS s FROM timings")["s"][0] <= run["final_step"]


def test_unknown_stage_is_refused(tmp_path: Path) -> None:
    shards, _ = _two_shards(tmp_path)
    ingest_shards(tmp_path / "c.duckdb", shards)
    proc = run_cli("analyze", "--db", str(tmp_path / "c.duckdb"), "--stage", "nope")
    assert proc.returncode == 2 and "--stage: unknown stage 'nope'" in proc.stderr


def test_stale_temp_folders_are_cleared_and_never_ingested(tmp_path: Path) -> None:
    shards, ids = _two_shards(tmp_path)
    stale = shards / f".tmp-{ids[0]}-999999"
    shutil.copytree(_folder(shards, ids[0]), stale)
    report = ingest_shards(tmp_path / "c.duckdb", shards)
    assert sorted(report.ingested) == sorted(ids)
    from pipeline.executors import run_extraction

    run_extraction([RunSpec(dataset="iris", **TINY)], shards, executor="inline", show_progress=False)
    assert not stale.exists()


def test_non_finite_outputs_at_a_checkpoint_mark_the_run_diverged(monkeypatch) -> None:
    """Weights that turn NaN exactly at a metric checkpoint must not reach the metrics (sklearn raises)."""
    import pipeline.extract.run as run_module

    real = run_module.make_optimizer

    def poisoned(spec, params):
        params = list(params)
        opt = real(spec, params)
        step = opt.step
        count = {"n": 0}

        def step_then_poison(*args, **kwargs):
            out = step(*args, **kwargs)
            count["n"] += 1
            if count["n"] == 3:  # step 3 is a metric checkpoint of the dense early schedule
                with torch.no_grad():
                    params[0].fill_(float("nan"))
            return out

        opt.step = step_then_poison
        return opt

    monkeypatch.setattr(run_module, "make_optimizer", poisoned)
    rows = run_module.train_and_measure(RunSpec(dataset="iris", epochs=5, metric_checkpoints=30,
                                                spectral_snapshots=3, probe_size=32))
    run = rows["runs"][0]
    assert run["status"] == "diverged" and run["diverged_step"] == 3 and run["final_step"] < 3
    assert max(c["step"] for c in rows["checkpoints"]) == run["final_step"]
