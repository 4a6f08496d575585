"""The store at scale: a hive-partitioned Parquet corpus queried without ingest, fsspec URLs,
the earlier flat layout, schema migration, and a reader opening the database while ingest writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

import snapshot_loader
from pipeline.errors import PipelineError, SchemaError
from pipeline.executors import run_extraction
from pipeline.runspec import RunSpec
from snapshot_loader.database import connect_readonly, connect_writable
from snapshot_loader.ingest import ingest_shards
from snapshot_loader.schema import (
    MIGRATIONS,
    PRIMARY_KEYS,
    SCHEMA_VERSION,
    SHARD_SCHEMA_VERSION,
    TABLES,
    WALL_TIME_COLUMNS,
    create_table,
)
from snapshot_loader.shards import ShardStore
from tests.conftest import ROOT

TINY = dict(epochs=2, metric_checkpoints=4, spectral_snapshots=2, probe_size=32)


SYNTHESIS = ("augmentations", "augmentation_trials")


def _contents(corpus: snapshot_loader.Corpus) -> dict[str, pl.DataFrame]:
    out = {}
    for table, cols in TABLES.items():
        keep = ", ".join(f'"{c}"' for c, _ in cols if (table, c) not in WALL_TIME_COLUMNS)
        out[table] = corpus.sql(f"SELECT {keep} FROM {table} ORDER BY {', '.join(PRIMARY_KEYS[table])}")
    return out


def test_open_on_the_shard_folder_equals_the_ingested_database(built_corpus) -> None:
    with snapshot_loader.open(built_corpus["shards"]) as parquet, snapshot_loader.open(built_corpus["db"]) as db:
        a, b = _contents(parquet), _contents(db)
        for table in TABLES:
            # the tiny corpus's synthesis may add no edge (tests/test_propagation.py compares those tables)
            assert a[table].height == b[table].height > 0 or table in ("margins", "margin_values", *SYNTHESIS), table
            assert a[table].equals(b[table]), f"{table}: the Parquet view differs from the database"
        run_id = db.runs()["run_id"][0]
        step = db.steps(run_id)[-1]
        assert str(parquet.model(run_id, step).state_dict()) == str(db.model(run_id, step).state_dict())


def test_duckdb_and_polars_read_the_hive_partitions_directly(built_corpus) -> None:
    root = built_corpus["shards"]
    by_sql = duckdb.sql(f"SELECT dataset, count(DISTINCT run_id) AS runs FROM "
                        f"read_parquet('{root}/*/*/checkpoints.parquet', hive_partitioning = true) "
                        "GROUP BY dataset ORDER BY dataset").pl()
    by_polars = (pl.scan_parquet(f"{root}/*/*/checkpoints.parquet", hive_partitioning=True)
                 .group_by("dataset").agg(pl.col("run_id").n_unique().cast(pl.Int64).alias("runs"))
                 .sort("dataset").collect())
    with snapshot_loader.open(built_corpus["db"]) as db:
        expected = db.sql("SELECT dataset, count(*) AS runs FROM runs GROUP BY dataset ORDER BY dataset")
    assert by_sql.equals(expected) and by_polars.equals(expected)


def test_an_fsspec_url_store_extracts_ingests_and_opens(tmp_path: Path) -> None:
    url = f"memory://store-{tmp_path.name}"
    specs = [RunSpec(dataset=d, **TINY) for d in ("iris", "wine")]
    outcomes, failures = run_extraction(specs, url, executor="inline", show_progress=False)
    assert not failures and [o.status for o in outcomes] == ["complete", "complete"]
    with pytest.raises(PipelineError, match="lives in this process only: use the inline executor"):
        run_extraction(specs, url, executor="process", show_progress=False)
    store = ShardStore(url)
    assert not store.is_local and [r.dataset for r in store.complete(verify=True)] == ["iris", "wine"]
    # a folder with files but no manifest (a writer died before the last file) is not part of the corpus
    store.fs.pipe_file(f"{store.folder('diabetes', 'deadbeefdeadbeef')}/runs.parquet", b"partial")
    with snapshot_loader.open(url) as corpus:
        assert sorted(corpus.runs()["dataset"]) == ["iris", "wine"]
    report = ingest_shards(tmp_path / "c.duckdb", url)
    assert sorted(report.ingested) == sorted(s.run_id for s in specs)
    assert len(report.errors) == 1 and "missing manifest" in report.errors[0] and "memory://" in report.errors[0]
    # the same runs extracted to a local folder give the same rows
    run_extraction(specs, tmp_path / "local", executor="inline", show_progress=False)
    ingest_shards(tmp_path / "local.duckdb", tmp_path / "local")
    with snapshot_loader.open(tmp_path / "c.duckdb") as a, snapshot_loader.open(tmp_path / "local.duckdb") as b:
        ca, cb = _contents(a), _contents(b)
        assert all(ca[t].equals(cb[t]) for t in TABLES)


def test_shards_of_the_earlier_flat_layout_are_adopted(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    spec = RunSpec(dataset="iris", **TINY)
    run_extraction([spec], shards, executor="inline", show_progress=False)
    folder = shards / "dataset=iris" / f"run_id={spec.run_id}"
    shutil.move(folder, shards / spec.run_id)  # how issue-2..6 builds stored it
    outcomes, _ = run_extraction([spec], shards, executor="inline", show_progress=False)
    assert outcomes[0].status == "skipped" and folder.is_dir() and not (shards / spec.run_id).exists()


@pytest.mark.parametrize("version", [3, 4, 5])
def test_a_database_from_before_schema_6_is_refused_with_the_way_out(tmp_path: Path, version: int) -> None:
    """Its curvature rows come from the estimators before standard errors were stored; migrating it
    would leave them beside re-extracted runs, so reading or writing it names the file and the fix."""
    db = tmp_path / "old.duckdb"
    connect_writable(db).close()
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM schema_version")
        con.execute(f"INSERT INTO schema_version VALUES ({version}, now())")
    message = (rf"old.duckdb: database has schema version {version}, this tool reads version {SCHEMA_VERSION}: "
               r"its curvature predates stored estimation errors; delete it and its shard store")
    with pytest.raises(SchemaError, match=message):
        connect_readonly(db)
    with pytest.raises(SchemaError, match=message):
        connect_writable(db)


def _migrated(tmp_path: Path, version: int, downgrade: list[str]) -> duckdb.DuckDBPyConnection:
    """A current database taken back to ``version`` by the ``downgrade`` statements; checks that a
    reader refuses it naming the fix, and returns a writer's connection, which migrates it in place
    (the caller closes it)."""
    db = tmp_path / f"v{version}.duckdb"
    connect_writable(db).close()
    with duckdb.connect(str(db)) as con:
        for statement in downgrade:
            con.execute(statement)
        con.execute("DELETE FROM schema_version")
        con.execute(f"INSERT INTO schema_version VALUES ({version}, now())")
    with pytest.raises(SchemaError, match=rf"v{version}.duckdb: database has schema version {version}, "
                                          r".*run `pipeline ingest` once"):
        connect_readonly(db)
    con = connect_writable(db)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    return con


def test_a_version_6_database_is_migrated_in_place_by_a_writer(tmp_path: Path) -> None:
    """Version 7 added three runs columns (user models, measured checkpoints): a reader names the fix,
    a writer (``pipeline ingest``) adds them, NULL for the runs already there (and version 8's table)."""
    columns = ("model", "blocks", "checkpoint_dir")
    con = _migrated(tmp_path, 6, [*(f'ALTER TABLE runs DROP COLUMN "{c}"' for c in columns),
                                  "INSERT INTO runs (run_id, dataset) VALUES ('r', 'iris')"])
    try:
        assert con.execute("SELECT model, blocks, checkpoint_dir FROM runs").fetchall() == [(None, None, None)]
    finally:
        con.close()


def test_a_version_7_database_gets_matrix_spectra_from_a_writer(tmp_path: Path) -> None:
    """Version 8 added ``matrix_spectra``: a writer creates it (empty for the runs already there), with
    the statement frozen in MIGRATIONS, which must stay the table's declaration until a later migration."""
    assert MIGRATIONS[7] == [create_table("matrix_spectra")]
    con = _migrated(tmp_path, 7, ["DROP TABLE matrix_spectra"])
    try:
        assert con.execute("SELECT count(*) FROM matrix_spectra").fetchone() == (0,)
    finally:
        con.close()


def test_a_version_8_database_gets_the_input_shape_and_preprocessing_of_its_data_sets(tmp_path: Path) -> None:
    """Version 9 added ``datasets.input_shape`` and ``datasets.preprocess``: a writer adds them, the rows
    already there (tables, prepared the standard way) get [n_features] and ``standard``."""
    con = _migrated(tmp_path, 8, [*(f'ALTER TABLE datasets DROP COLUMN "{c}"' for c in ("input_shape", "preprocess")),
                                  "INSERT INTO datasets (name, n_features) VALUES ('iris', 4)"])
    try:
        assert con.execute("SELECT input_shape, preprocess FROM datasets").fetchall() == [([4], "standard")]
    finally:
        con.close()


def test_a_version_9_database_gets_what_its_lanczos_rows_spent_and_their_product_dtype(tmp_path: Path) -> None:
    """Version 10 added ``hessian_spectra.stop_reason``, ``lanczos_runs`` and ``product_dtype``: the rows
    already there (a fixed budget of float64 products) get ``float64`` and NULL stop reason and runs."""
    columns = ("stop_reason", "lanczos_runs", "product_dtype")
    con = _migrated(tmp_path, 9, [*(f'ALTER TABLE hessian_spectra DROP COLUMN "{c}"' for c in columns),
                                  "INSERT INTO hessian_spectra (run_id, step, layer_index, kind, method) "
                                  "VALUES ('r', 0, 0, 'loss', 'lanczos')"])
    try:
        assert con.execute(f"SELECT {', '.join(columns)} FROM hessian_spectra").fetchall() == [
            (None, None, "float64")]
    finally:
        con.close()


def test_a_version_10_database_gets_baseline_columns_with_chance_auc_and_no_recorded_baseline(tmp_path: Path) -> None:
    """Version 11 added the trivial predictor's test score to ``datasets``: the database holds no labels, so
    the rows already there get NULL name and metric (not recorded) and chance AUC where they classify."""
    columns = ("baseline_name", "baseline_metric", "baseline_auc")
    con = _migrated(tmp_path, 10, [*(f'ALTER TABLE datasets DROP COLUMN "{c}"' for c in columns),
                                   "INSERT INTO datasets (name, task) VALUES ('iris', 'classification'), "
                                   "('diabetes', 'regression')"])
    try:
        assert con.execute(f"SELECT name, {', '.join(columns)} FROM datasets ORDER BY name").fetchall() == [
            ("diabetes", None, None, None), ("iris", None, None, 0.5)]
    finally:
        con.close()


def _as_version_9_shard(folder: Path) -> None:
    """Rewrite a shard as shard version 9 wrote it: its ``datasets`` row without the baseline columns."""
    import hashlib
    import json

    import pyarrow.parquet as pq

    path = folder / "datasets.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["baseline_name", "baseline_metric", "baseline_auc"]), path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["schema_version"] = 9
    manifest["tables"]["datasets"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_version_9_shard_has_no_baseline_until_a_newer_shard_of_its_data_set_brings_one(tmp_path: Path) -> None:
    """Shard version 10 added the baseline columns: a store of older shards opens with them NULL (chance
    AUC for classification) and ingests the same; a newer shard of the data set, in the store or ingested
    later, gives the data set its baseline, in the Parquet view and in the database alike."""
    shards, db = tmp_path / "shards", tmp_path / "c.duckdb"
    old, new = RunSpec(dataset="iris", seed=0, **TINY), RunSpec(dataset="iris", seed=1, **TINY)
    run_extraction([old], shards, executor="inline", show_progress=False)
    _as_version_9_shard(shards / "dataset=iris" / f"run_id={old.run_id}")
    query = "SELECT name, baseline_name, baseline_metric, baseline_auc FROM datasets"
    with snapshot_loader.open(shards) as corpus:
        assert corpus.sql(query).rows() == [("iris", None, None, 0.5)]
    assert ingest_shards(db, shards).ingested == [old.run_id]
    with snapshot_loader.open(db) as corpus:
        assert corpus.sql(query).rows() == [("iris", None, None, 0.5)]
    run_extraction([new], shards, executor="inline", show_progress=False)
    with snapshot_loader.open(shards) as corpus:
        (row,) = corpus.sql(query).rows()
    assert row[:2] == ("iris", "majority class") and 0 < row[2] < 1 and row[3] == 0.5
    assert ingest_shards(db, shards).ingested == [new.run_id]
    with snapshot_loader.open(db) as corpus:
        assert corpus.sql(query).rows() == [row]


HOLD_AND_INGEST = """
import sys, time
from snapshot_loader.database import connect_writable
from snapshot_loader.ingest import ingest_shards
con = connect_writable(sys.argv[1])
print("holding", flush=True)
time.sleep(2.0)
con.close()
ingest_shards(sys.argv[1], sys.argv[2])
"""


def test_a_reader_opening_while_ingest_writes_sees_whole_runs(tmp_path: Path) -> None:
    shards, db = tmp_path / "shards", tmp_path / "c.duckdb"
    specs = [RunSpec(dataset=d, **TINY) for d in ("iris", "wine", "diabetes")]
    run_extraction(specs, shards, executor="inline", show_progress=False)
    per_run = {}
    with snapshot_loader.open(shards) as parquet:
        for run_id, n in parquet.sql("SELECT run_id, count(*) FROM checkpoints GROUP BY 1").rows():
            per_run[run_id] = n
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_INGEST, str(db), str(shards)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "holding"
    seen = []
    while proc.poll() is None or not seen:
        t0 = time.monotonic()
        with snapshot_loader.open(db) as corpus:  # waits while the writer holds the file
            counts = dict(corpus.sql("SELECT run_id, count(*) FROM checkpoints GROUP BY 1").rows())
            runs = set(corpus.runs()["run_id"])
        assert set(counts) == runs and all(counts[r] == per_run[r] for r in runs), "a run was seen half-ingested"
        seen.append((time.monotonic() - t0, len(runs)))
    assert proc.wait() == 0
    assert seen[0][0] > 1.0, "the first open should have waited for the writer"
    with snapshot_loader.open(db) as corpus:
        assert corpus.runs().height == 3


def test_a_shard_of_another_version_is_named_when_the_store_is_opened(tmp_path: Path) -> None:
    store = ShardStore(f"memory://stale-{tmp_path.name}")
    stale = store.folder("iris", "0123456789abcdef")
    store.fs.pipe_file(f"{stale}/manifest.json", b'{"run_id": "0123456789abcdef", "schema_version": 2}')
    with pytest.raises(PipelineError, match=rf"manifest.json: shard has schema version 2, this tool writes "
                                            rf"{SHARD_SCHEMA_VERSION}"):
        snapshot_loader.open(store.location)


def test_batched_ingest_stores_what_run_by_run_ingest_stores(built_corpus, tmp_path: Path, monkeypatch) -> None:
    """Batches of 5 (four transactions for the store's 16 or 17 runs) against one run per transaction:
    the same rows in every table, the data sets' rows included (the first shard's row of a name in both)."""
    from snapshot_loader import ingest

    n = len(ShardStore(built_corpus["shards"]).refs())
    for batch_runs in (1, 5):
        monkeypatch.setattr(ingest, "BATCH_RUNS", batch_runs)
        report = ingest_shards(tmp_path / f"b{batch_runs}.duckdb", built_corpus["shards"])
        assert len(report.ingested) == n > 5 and not report.errors and not report.refused
    with snapshot_loader.open(tmp_path / "b1.duckdb") as one, snapshot_loader.open(tmp_path / "b5.duckdb") as five:
        a, b = _contents(one), _contents(five)
        for table in TABLES:
            assert a[table].equals(b[table]), f"{table}: batched ingest stored other rows"


def test_a_run_whose_insert_fails_is_named_and_the_runs_before_it_stay(built_corpus, tmp_path: Path) -> None:
    """One batch whose 4th run collides with a row already there: the batch is rolled back and retried
    run by run, so the error names that run, the 3 before it are in whole, and once the collision is
    gone a second ingest adds the others, the 4th whole, and nothing twice."""
    db = tmp_path / "c.duckdb"
    refs = ShardStore(built_corpus["shards"]).refs()
    victim = refs[3].run_id
    con = connect_writable(db)
    con.execute("INSERT INTO checkpoints (run_id, step) SELECT ?, min(step) FROM read_parquet(?)",
                [victim, str(Path(refs[3].path) / "checkpoints.parquet")])
    con.close()
    with pytest.raises(PipelineError, match=f"cannot ingest run {victim}: .*(?i:constraint|primary key)"):
        ingest_shards(db, built_corpus["shards"])
    with duckdb.connect(str(db), read_only=True) as con:
        assert sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()) == \
            sorted(r.run_id for r in refs[:3])
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM checkpoints WHERE run_id = ?", [victim])
    report = ingest_shards(db, built_corpus["shards"])
    assert len(report.ingested) == len(refs) - 3 and report.already_present == 3
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == len(refs)
        stored = con.execute("SELECT count(*) FROM checkpoints WHERE run_id = ?", [victim]).fetchone()[0]
        written = con.execute("SELECT count(*) FROM read_parquet(?)",
                              [str(Path(refs[3].path) / "checkpoints.parquet")]).fetchone()[0]
        assert stored == written > 0


HOLD = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_a_held_database_says_at_once_what_it_waits_for_and_the_wait_is_set(tmp_path: Path, monkeypatch, caplog,
                                                                              capsys) -> None:
    from pipeline.cli import main

    db = tmp_path / "corpus.duckdb"
    connect_writable(db).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("PIPELINE_LOCK_WAIT", "1.5")
        started, wall = time.monotonic(), time.time()
        with caplog.at_level("WARNING", logger="pipeline"), pytest.raises(SchemaError) as err:
            connect_readonly(db)
        said = [r for r in caplog.records if "waiting up to 2 s" in r.getMessage()]
        assert len(said) == 1 and said[0].created - wall < 1.0  # said at once, not after the wait
        assert 1.5 <= time.monotonic() - started < 10
        assert "in use by another process" in str(err.value) and f"(PID {holder.pid})" in str(err.value)
        assert "after waiting 2 s (PIPELINE_LOCK_WAIT sets the wait)" in str(err.value)
        monkeypatch.setenv("PIPELINE_LOCK_WAIT", "0.5")
        assert main(["report", "--db", str(db), "--out", str(tmp_path / "report"), "--quiet"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[0].startswith(f"pipeline: {db}: in use by another process") and lines[-1].startswith("error: ")
        monkeypatch.setenv("PIPELINE_LOCK_WAIT", "soon")
        with pytest.raises(PipelineError, match="PIPELINE_LOCK_WAIT: expected seconds"):
            connect_readonly(db)
    finally:
        holder.kill()
        holder.wait()


def test_read_commands_on_a_missing_database_create_nothing(tmp_path: Path, capsys) -> None:
    """analyze adds to a corpus but does not start one; report, figures and snapshot_loader.open only read
    it: a mistyped --db leaves no database, folder or default output folder behind."""
    from pipeline.cli import main

    db = tmp_path / "typo" / "corpus.duckdb"
    for command in ("analyze", "report", "figures"):
        assert main([command, "--db", str(db), "--quiet"]) == 2, command
        assert capsys.readouterr().err.strip() == f"error: {db}: database not found (run `make report` or " \
                                                  "`pipeline ingest` first)"
        assert not list(tmp_path.iterdir()), command
    with pytest.raises(SchemaError, match="database not found"):
        snapshot_loader.open(db)
    assert not list(tmp_path.iterdir())


def test_all_with_a_damaged_database_fails_before_training(tmp_path: Path, capsys) -> None:
    from pipeline.cli import main
    from tests.conftest import TINY_CONFIG

    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG)
    db = tmp_path / "corpus.duckdb"
    db.write_bytes(b"not a database" * 1000)
    started = time.monotonic()
    assert main(["all", "--config", str(config), "--db", str(db), "--shards", str(tmp_path / "shards"),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {db}: cannot open database")
    assert not (tmp_path / "shards").exists() and time.monotonic() - started < 30


def test_all_and_extract_probe_every_output_before_training_and_create_nothing(tmp_path: Path, capsys) -> None:
    """A database that is a folder or no database, a file where the shard store, the report folder or a
    folder above one should be: one line naming it, before a run is trained, and nothing created (the
    database of a failed command included)."""
    from pipeline.cli import main
    from tests.conftest import TINY_CONFIG

    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG)
    a_file, a_folder, damaged = tmp_path / "a_file", tmp_path / "a_folder.duckdb", tmp_path / "damaged.duckdb"
    a_file.write_text("")
    a_folder.mkdir()
    damaged.write_bytes(b"not a database" * 1000)
    db, shards, out = tmp_path / "new.duckdb", tmp_path / "shards", tmp_path / "report"
    cases = [
        ("all", db, shards, out, "--shards: cannot create {s}: {f} is a file", {"shards": a_file / "s"}),
        ("all", db, shards, out, "--shards: {s} exists and is not a folder", {"shards": a_file}),
        ("all", db, shards, out, "--out: {o} exists and is not a folder", {"out": a_file}),
        ("all", db, shards, out, "--db: {f} exists and is not a folder", {"db": a_file / "c.duckdb"}),
        ("all", db, shards, out, "{d}: cannot open database: a folder, not a database file", {"db": a_folder}),
        ("all", db, shards, tmp_path / "nothing", "{c}: config file not found", {"config": tmp_path / "no.toml"}),
        ("extract", db, shards, None, "{d}: cannot open database: not a DuckDB database file", {"db": damaged}),
        ("extract", None, shards, None, "--shards: {s} exists and is not a folder", {"shards": a_file}),
    ]
    before = sorted(tmp_path.rglob("*"))
    for command, db_, shards_, out_, expected, bad in cases:
        paths = {"config": config, "db": db_, "shards": shards_, "out": out_, **bad}
        argv = [command, "--executor", "inline", "--quiet"]
        argv += [a for k, v in paths.items() if v is not None for a in (f"--{k}", str(v))]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err == "error: " + expected.format(s=paths["shards"], o=paths["out"], d=paths["db"], f=a_file,
                                                  c=paths["config"]), argv
        assert sorted(tmp_path.rglob("*")) == before, argv  # no database, shard store or report folder
