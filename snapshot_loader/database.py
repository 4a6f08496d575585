"""Opening the corpus database: creating the schema, and refusing a database of another version."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline.errors import SchemaError
from snapshot_loader.schema import SCHEMA_VERSION, ddl

#: Write files in a storage format that DuckDB 1.4+ reads, so the `duckdb` shell a user has
#: (the pip `duckdb-cli` is 1.5) can open a corpus that the 2.x Python package wrote.
STORAGE_COMPATIBILITY = "v1.4.0"


def _stored_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'").fetchall()[0][0]
    if not has_table:
        n_tables = con.execute("SELECT count(*) FROM information_schema.tables").fetchall()[0][0]
        if n_tables:
            raise SchemaError(f"{path}: not a corpus database (no schema_version table)")
        return None
    return con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]


def _check(version: int | None, path: Path) -> None:
    if version is not None and version != SCHEMA_VERSION:
        raise SchemaError(f"{path}: database has schema version {version}, this tool reads version "
                          f"{SCHEMA_VERSION}: delete it and run `pipeline ingest` again (the shards are kept)")


def connect_writable(path: Path) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the corpus database for writing, with every table present."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
    except duckdb.Error as exc:
        raise SchemaError(f"{path}: cannot open database: {str(exc).splitlines()[0]}") from None
    try:
        version = _stored_version(con, path)
        _check(version, path)
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
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise SchemaError(f"{path}: cannot open database: {str(exc).splitlines()[0]}") from None
    try:
        version = _stored_version(con, path)
        if version is None:
            raise SchemaError(f"{path}: empty database (no schema_version)")
        _check(version, path)
    except BaseException:
        con.close()
        raise
    return con
