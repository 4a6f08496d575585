"""Ingest complete shards into the DuckDB corpus: one transaction per run, idempotent.

A run is in the database whole or not at all: its rows of every table are inserted in one
transaction, and a run already present is skipped, so ingesting twice (or after a crash) never
duplicates a row. Shards are checked against their manifest first; a corrupt one is reported by
path and left out, the others still go in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.errors import ShardError
from pipeline.extract.shards import complete_shards, read_manifest
from snapshot_loader.database import connect_writable
from snapshot_loader.schema import SHARD_TABLES


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    already_present: int = 0
    errors: list[str] = field(default_factory=list)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def ingest_shards(db_path: Path, shards_dir: Path, studies: list[tuple[str, str, str]] | None = None,
                  only: set[str] | None = None) -> IngestReport:
    """Load every complete shard under ``shards_dir`` not yet in ``db_path``.

    studies: (corpus, study, run_id) rows to record; only: restrict to these run ids.
    """
    report = IngestReport()
    con = connect_writable(db_path)
    try:
        present = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        for folder in complete_shards(shards_dir):
            run_id = folder.name
            if only is not None and run_id not in only:
                continue
            if run_id in present:
                report.already_present += 1
                continue
            try:
                read_manifest(folder)
            except ShardError as exc:
                report.errors.append(str(exc))
                continue
            _ingest_one(con, folder)
            report.ingested.append(run_id)
        held = present | set(report.ingested)
        rows = [s for s in studies or [] if s[2] in held]
        if rows:
            con.executemany("INSERT OR IGNORE INTO studies VALUES (?, ?, ?)", rows)
    finally:
        con.close()
    return report


def _ingest_one(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        for table in SHARD_TABLES:
            path = _quote(folder / f"{table}.parquet")
            verb = "INSERT OR IGNORE" if table == "datasets" else "INSERT"
            con.execute(f"{verb} INTO {table} BY NAME SELECT * FROM read_parquet({path})")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
