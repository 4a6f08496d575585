"""Bad input: corrupt shards, a database of another schema version, divergence, unknown stages, bad data
files, read-only and full output folders."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
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
    assert last.startswith("error: 1 shard(s) not ingested") and "manifest.json" in last
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


def test_diverged_run_is_marked_keeps_earlier_checkpoints_and_the_report_notes_it(tmp_path: Path) -> None:
    spec = RunSpec(dataset="wine", optimizer="sgd", lr=5.0, epochs=20, metric_checkpoints=40, spectral_snapshots=5)
    shards = tmp_path / "shards"
    assert extract_run(spec, shards).status == "diverged"
    for ds in ("iris", "wine", "diabetes"):
        assert extract_run(RunSpec(dataset=ds, **TINY), shards).status == "complete"
    ingest_shards(tmp_path / "c.duckdb", shards)
    with snapshot_loader.open(tmp_path / "c.duckdb") as corpus:
        run = corpus.runs().filter(pl.col("run_id") == spec.run_id).row(0, named=True)
        assert run["status"] == "diverged" and run["diverged_step"] > run["final_step"] > 0
        ckpt = corpus.sql("SELECT max(step) AS last, count(*) AS n, bool_and(isfinite(train_loss)) AS finite "
                          "FROM checkpoints WHERE run_id = ?", [spec.run_id]).row(0, named=True)
        assert ckpt["last"] == run["final_step"] and ckpt["n"] > 1 and ckpt["finite"]
        assert corpus.sql("SELECT max(step) AS s FROM timings WHERE run_id = ?", [spec.run_id])["s"][0] \
            <= run["final_step"]
    db = str(tmp_path / "c.duckdb")
    run_cli("analyze", "--db", db, "--quiet", check=True)
    run_cli("report", "--db", db, "--out", str(tmp_path / "report"), "--quiet", check=True)
    with snapshot_loader.open(tmp_path / "c.duckdb") as corpus:
        in_features = corpus.sql("SELECT count(*) AS n FROM analysis_features WHERE run_id = ?", [spec.run_id])
        assert in_features["n"][0] == 0, "the diverged run reached the trained-state features"
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Runs left out" in html and spec.run_id in html and f"snapshots up to step {run['final_step']} kept" in html


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


def _custom_config(tmp_path: Path, data: Path, task: str = "regression") -> Path:
    config = tmp_path / "c.toml"
    config.write_text(f'[[dataset]]\nname = "mine"\npath = "{data}"\ntarget = "y"\ntask = "{task}"\n'
                      '[run]\nepochs = 2\nmetric_checkpoints = 3\nspectral_snapshots = 2\nprobe_size = 16\n'
                      '[[study]]\nname = "s"\n[study.grid]\ndataset = ["mine", "iris"]\n')
    return config


BAD_FILES = {
    "non-numeric target": ("x,y\n" + "".join(f"{i},abc\n" for i in range(30)), "csv",
                           "regression target 'y' is not numeric"),
    "missing target": ("x,y\n" + "".join(f"{i},\n" for i in range(30)), "csv", "only 0 usable rows"),
    "empty after filtering": ("x,y\n" + "".join(f"{i},{'' if i > 2 else i}\n" for i in range(30)), "csv",
                              "only 3 usable rows"),
    "no rows": ("x,y\n", "csv", "usable rows"),
    "unreadable file": ("\x00\x01 not parquet \xff", "parquet", "cannot load"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_data_file_is_one_error_naming_it_before_any_run(tmp_path: Path, case: str) -> None:
    text, ext, fragment = BAD_FILES[case]
    data = tmp_path / f"mine.{ext}"
    data.write_text(text)
    config = _custom_config(tmp_path, data)
    proc = run_cli("extract", "--config", str(config), "--shards", str(tmp_path / "shards"), "--quiet")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}: dataset 'mine': ") and fragment in lines[0]
    assert not list((tmp_path / "shards").glob("dataset=*")), "a run was extracted despite the bad file"


@contextmanager
def _unprivileged():
    """Drop root's power to write anywhere (root ignores permission bits), for a read-only folder."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def _open_tree(path: Path) -> None:
    """Make path and its parents traversable, so the unprivileged user can reach the test's files."""
    for p in [path, *path.parents]:
        if p == Path("/tmp") or p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o755)


def test_read_only_output_folders_are_one_line_errors(tmp_path: Path, capsys) -> None:
    import pipeline.executors  # noqa: F401 - imported while the interpreter's files are still readable
    import reports.builder  # noqa: F401
    from pipeline.cli import main

    shards, _ = _two_shards(tmp_path)
    ingest_shards(tmp_path / "c.duckdb", shards)
    config = tmp_path / "c.toml"
    config.write_text('[run]\nepochs = 2\nmetric_checkpoints = 4\nspectral_snapshots = 2\nprobe_size = 32\n'
                      '[[study]]\nname = "s"\n[study.grid]\ndataset = ["iris", "wine", "diabetes"]\n')
    locked, free = tmp_path / "locked", tmp_path / "free"
    (locked / "shards").mkdir(parents=True)
    free.mkdir(mode=0o777)
    free.chmod(0o777)  # a database could be created here: measure fails at its shard store
    _open_tree(tmp_path)
    for p in (tmp_path / "c.duckdb", config):
        p.chmod(0o644)
    locked.chmod(0o555)
    (locked / "shards").chmod(0o555)
    try:
        with _unprivileged():
            rc_extract = main(["extract", "--config", str(config), "--shards", str(locked / "shards"),
                               "--executor", "inline", "--quiet"])
            err_extract = capsys.readouterr().err
            rc_ingest = main(["ingest", "--config", str(config), "--shards", str(shards),
                              "--db", str(locked / "c.duckdb"), "--quiet"])
            err_ingest = capsys.readouterr().err
            rc_report = main(["report", "--db", str(tmp_path / "c.duckdb"), "--out", str(locked / "report"),
                              "--quiet"])
            err_report = capsys.readouterr().err
            rc_measure = main(["measure", "--model", "tests.user_models:tiny_mlp", "--checkpoints",
                               str(tmp_path / "ckpt"), "--data", "iris", "--db", str(free / "m.duckdb"),
                               "--shards", str(locked / "shards"), "--quiet"])
            err_measure = capsys.readouterr().err
    finally:
        locked.chmod(0o755)
        (locked / "shards").chmod(0o755)
    assert rc_extract == 2 and err_extract.strip() == (
        f"error: --shards: cannot write to {locked / 'shards'}: Permission denied")
    assert rc_ingest == 2 and err_ingest.strip().startswith(f"error: {locked / 'c.duckdb'}: cannot open database")
    assert rc_report == 2
    assert err_report.strip() == f"error: --out: cannot write to {locked / 'report'}: Permission denied"
    # probed before the checkpoints are read (there is no checkpoint folder)
    assert rc_measure == 2 and err_measure.strip() == (
        f"error: --shards: cannot write to {locked / 'shards'}: Permission denied")
    assert sorted(p.name for p in locked.rglob("*")) == ["shards"], "something was written"
    assert not list(free.iterdir())


def test_a_full_disk_stops_extraction_with_one_error_and_no_partial_shard(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    import errno

    import snapshot_loader.shards as shards_module
    from pipeline.cli import main

    config = tmp_path / "c.toml"
    config.write_text('[run]\nepochs = 2\nmetric_checkpoints = 4\nspectral_snapshots = 2\nprobe_size = 32\n'
                      '[[study]]\nname = "s"\n[study.grid]\ndataset = ["iris", "wine", "diabetes"]\n')
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_fills_the_disk(fd):
        calls["n"] += 1
        if calls["n"] > 20:  # the first run's shard goes through; the disk fills during the second
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(shards_module.os, "fsync", fsync_fills_the_disk)
    shards = tmp_path / "shards"
    rc = main(["extract", "--config", str(config), "--shards", str(shards), "--executor", "inline", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and err[-1].endswith(
        ": cannot write the shard: No space left on device") and str(shards) in err[-1]
    complete = list(shards.glob("dataset=*/run_id=*"))
    assert len(complete) == 1 and (complete[0] / "manifest.json").is_file()
    assert not list(shards.glob(".tmp-*")) and not list(shards.glob("failures/*")), "half-written or misrecorded"
    assert calls["n"] > 20
