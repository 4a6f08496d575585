"""Ingest complete shards into the DuckDB corpus: one transaction per run, idempotent.

A run is in the database whole or not at all: its rows of every table are inserted in one
transaction, and a run already present is skipped, so ingesting twice (or after a crash) never
duplicates a row. Shards are checked against their manifest first; a corrupt one is reported by
path and left out, the others still go in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.errors import ShardError, StoreError
from pipeline.extract.shards import ShardRef, ShardStore
from snapshot_loader.database import connect_writable
from snapshot_loader.schema import SHARD_TABLES


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    already_present: int = 0
    errors: list[str] = field(default_factory=list)
    failed_runs: int = 0


def ingest_shards(db_path: Path, shards: ShardStore | str | Path, studies: list[tuple[str, str, str]] | None = None,
                  only: set[str] | None = None) -> IngestReport:
    """Load every complete shard in the store ``shards`` not yet in ``db_path``.

    studies: (corpus, study, run_id) rows to record; only: restrict to these run ids. Runs the
    extraction recorded as failed go into ``run_failures`` (and leave it once ingested).
    """
    store = shards if isinstance(shards, ShardStore) else ShardStore(shards)
    report = IngestReport()
    con = connect_writable(db_path)
    try:
        present = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        for ref in store.refs():
            if only is not None and ref.run_id not in only:
                continue
            if ref.run_id in present:
                report.already_present += 1
                continue
            try:
                store.read_manifest(ref)
            except ShardError as exc:
                report.errors.append(str(exc))
                continue
            try:
                _ingest_one(con, store, ref, db_path)
            except _Refused as exc:
                report.errors.append(str(exc))
                continue
            report.ingested.append(ref.run_id)
        held = present | set(report.ingested)
        rows = [s for s in studies or [] if s[2] in held]
        if rows:
            con.executemany("INSERT OR IGNORE INTO studies VALUES (?, ?, ?)", rows)
        failures = [f for f in store.failures() if f["run_id"] not in held and (only is None or f["run_id"] in only)]
        con.execute("BEGIN TRANSACTION")
        if only is None:
            con.execute("DELETE FROM run_failures")
        else:
            con.execute("DELETE FROM run_failures WHERE list_contains(?, run_id)", [sorted(held | only)])
        for f in failures:
            con.execute("INSERT INTO run_failures VALUES (?, ?, ?, ?, ?)",
                        [f["run_id"], f["dataset"], f["error"], f["attempts"], f["config_json"]])
        con.execute("COMMIT")
        report.failed_runs = len(failures)
    finally:
        con.close()
    return report


#: a run's dataset_digest is a RunSpec field kept in config_json (no column of its own)
_DIGEST = "coalesce(json_extract_string(config_json, '$.dataset_digest'), '')"


def dataset_conflict(con: duckdb.DuckDBPyConnection, dataset: str, digest: str | None) -> str | None:
    """Why a run on data set ``dataset`` with ``dataset_digest`` ``digest`` cannot join the database:
    another run there names a different data set so (another file, target or task; or a file named like
    a built-in one, whose digest is empty). ``datasets`` keeps one row per name, so the second would
    be described by the first's row. None when there is no conflict."""
    other = con.execute(f"SELECT run_id, {_DIGEST} AS d FROM runs WHERE dataset = ? AND {_DIGEST} <> ? LIMIT 1",
                        [dataset, digest or ""]).fetchone()
    if other is None:
        return None

    def what(d: str) -> str:
        return f"digest {d}" if d else "the built-in one"
    return (f"data set {dataset!r} ({what(digest or '')}) is not the {dataset!r} of run {other[0]} already in the "
            f"database ({what(other[1])}): give one of them another name")


class _Refused(Exception):
    """A shard that is sound but cannot join this database (its reason is the message)."""


def _ingest_one(con: duckdb.DuckDBPyConnection, store: ShardStore, ref: ShardRef, db_path: Path) -> None:
    arrays = {table: store.read_table(ref, table) for table in SHARD_TABLES}  # read before the transaction
    for run in arrays["runs"].select(["dataset", "config_json"]).to_pylist():
        reason = dataset_conflict(con, run["dataset"], json.loads(run["config_json"]).get("dataset_digest"))
        if reason:
            raise _Refused(f"run {ref.run_id}: {reason}")
    con.execute("BEGIN TRANSACTION")
    try:
        for table, arrow in arrays.items():
            verb = "INSERT OR IGNORE" if table == "datasets" else "INSERT"
            con.register("shard_rows", arrow)
            con.execute(f"{verb} INTO {table} BY NAME SELECT * FROM shard_rows")
            con.unregister("shard_rows")
        con.execute("COMMIT")
    except duckdb.Error as exc:  # e.g. the disk filled: the run's transaction is rolled back whole
        _rollback(con)
        raise StoreError(f"{db_path}: cannot ingest run {ref.run_id}: {str(exc).splitlines()[0]}") from None
    except BaseException:
        _rollback(con)
        raise


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the failed statement already ended the transaction
