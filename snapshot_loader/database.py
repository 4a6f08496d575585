"""Opening the corpus database: creating the schema, and refusing a database of another version."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError, SchemaError
from snapshot_loader.schema import MIGRATIONS, SCHEMA_VERSION, ddl

#: Write files in a storage format that DuckDB 1.4+ reads, so the `duckdb` shell a user has
#: (the pip `duckdb-cli` is 1.5) can open a corpus that the 2.x Python package wrote.
STORAGE_COMPATIBILITY = "v1.4.0"


#: How long opening a database waits for another process's connection (an ingest, a report) to close.
LOCK_WAIT_SECONDS = 120.0


def _connect(path: Path, **kwargs) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, waiting while another process holds the file.

    DuckDB lets one process write or several read, never both; ingest commits each run in its own
    transaction, so whoever opens the file after waiting sees whole runs only."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return duckdb.connect(str(path), **kwargs)
        except duckdb.IOException as exc:
            if "Could not set lock" not in str(exc) or time.monotonic() > deadline:
                holder = str(exc).split("Conflicting lock is held in", 1)[-1].split(". See", 1)[0].strip()
                what = f"in use by another process ({holder})" if "Could not set lock" in str(exc) else \
                    str(exc).splitlines()[0]
                raise SchemaError(f"{path}: cannot open database: {what}") from None
            time.sleep(0.2)
        except duckdb.Error as exc:
            raise SchemaError(f"{path}: cannot open database: {str(exc).splitlines()[0]}") from None


def _stored_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'").fetchall()[0][0]
    if not has_table:
        n_tables = con.execute("SELECT count(*) FROM information_schema.tables").fetchall()[0][0]
        if n_tables:
            raise SchemaError(f"{path}: not a corpus database (no schema_version table)")
        return None
    return con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]


def _migratable(version: int) -> bool:
    return all(v in MIGRATIONS for v in range(version, SCHEMA_VERSION))


def _check(version: int | None, path: Path, writable: bool) -> None:
    if version is None or version == SCHEMA_VERSION:
        return
    if version < SCHEMA_VERSION and _migratable(version):
        if writable:
            return
        raise SchemaError(f"{path}: database has schema version {version}, this tool reads version "
                          f"{SCHEMA_VERSION}: run `pipeline ingest` once to migrate it in place")
    if version < SCHEMA_VERSION:
        raise SchemaError(f"{path}: database has schema version {version}, this tool reads version {SCHEMA_VERSION}: "
                          "its curvature predates stored estimation errors; delete it and its shard store "
                          "(build/ by default) and run `pipeline all` to extract the corpus again")
    raise SchemaError(f"{path}: database has schema version {version}, this tool reads version "
                      f"{SCHEMA_VERSION}: it was written by a newer version of this tool")


def _migrate(con: duckdb.DuckDBPyConnection, version: int) -> None:
    """Bring a database of an older, migratable version up to :data:`SCHEMA_VERSION`, atomically."""
    con.execute("BEGIN TRANSACTION")
    for v in range(version, SCHEMA_VERSION):
        for stmt in MIGRATIONS[v]:
            con.execute(stmt)
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION])
    con.execute("COMMIT")


def connect_writable(path: Path) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the corpus database for writing, with every table present."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{path.parent}: cannot create the database folder: {exc.strerror}") from None
    con = _connect(path, config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
    try:
        version = _stored_version(con, path)
        _check(version, path, writable=True)
        if version is not None and version < SCHEMA_VERSION:
            _migrate(con, version)
        if version is None:
            con.execute("BEGIN TRANSACTION")
            for stmt in ddl():
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION])
            con.execute("COMMIT")
    except BaseException:
        con.close()
        raise
    return con


def connect_readonly(path: Path) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: database not found (run `make report` or `pipeline ingest` first)")
    con = _connect(path, read_only=True)
    try:
        version = _stored_version(con, path)
        if version is None:
            raise SchemaError(f"{path}: empty database (no schema_version)")
        _check(version, path, writable=False)
    except BaseException:
        con.close()
        raise
    return con
