"""Opening the corpus database: creating the schema, and refusing a database of another version."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError, SchemaError
from snapshot_loader.schema import MIGRATIONS, SCHEMA_VERSION, ddl

#: Write files in a storage format that DuckDB 1.4+ reads, so the `duckdb` shell a user has
#: (the pip `duckdb-cli` is 1.5) can open a corpus that the 2.x Python package wrote.
STORAGE_COMPATIBILITY = "v1.4.0"


#: How long opening a database waits, by default, for another process's connection (an ingest, a
#: report) to close; the environment variable :data:`LOCK_WAIT_VARIABLE` sets another.
LOCK_WAIT_SECONDS = 120.0
LOCK_WAIT_VARIABLE = "PIPELINE_LOCK_WAIT"

log = logging.getLogger("pipeline")


def lock_wait_seconds() -> float:
    """The lock wait: :data:`LOCK_WAIT_VARIABLE` when set (seconds, 0 or more), else :data:`LOCK_WAIT_SECONDS`."""
    raw = os.environ.get(LOCK_WAIT_VARIABLE)
    if raw is None:
        return LOCK_WAIT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise PipelineError(f"{LOCK_WAIT_VARIABLE}: expected seconds (0 or more), got {raw!r}")
    return seconds


def _holder(exc: Exception) -> str:
    return str(exc).split("Conflicting lock is held in", 1)[-1].split(". See", 1)[0].strip()


def _connect(path: Path, **kwargs) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, waiting while another process holds the file, and saying so at once (a
    warning on the ``pipeline`` logger, which the CLI prints).

    DuckDB lets one process write or several read, never both; ingest commits each run in its own
    transaction, so whoever opens the file after waiting sees whole runs only."""
    wait = lock_wait_seconds()
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            return duckdb.connect(str(path), **kwargs)
        except duckdb.IOException as exc:
            locked = "Could not set lock" in str(exc)
            if not locked or time.monotonic() > deadline:
                what = f"in use by another process ({_holder(exc)})" if locked else str(exc).splitlines()[0]
                waited = f" after waiting {wait:.0f} s ({LOCK_WAIT_VARIABLE} sets the wait)" if locked else ""
                raise SchemaError(f"{path}: cannot open database: {what}{waited}") from None
            if not said:
                log.warning("%s: in use by another process (%s): waiting up to %.0f s for it (%s sets the wait)",
                            path, _holder(exc), wait, LOCK_WAIT_VARIABLE)
                said = True
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


def connect_writable(path: Path, create: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the corpus database for writing, with every table present: created if it is missing and
    ``create``, else refused (a command that only reads and adds to a corpus leaves no new file behind)."""
    path = Path(path)
    if not create:
        _exists(path)
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


def _exists(path: Path) -> None:
    if path.is_dir():
        raise SchemaError(f"{path}: cannot open database: a folder, not a database file")
    if not path.is_file():
        raise SchemaError(f"{path}: database not found (run `make report` or `pipeline ingest` first)")


#: Where a DuckDB file's header holds its magic bytes (after an 8-byte checksum).
_MAGIC_OFFSET, _MAGIC = 8, b"DUCK"


def probe_database(path: Path) -> None:
    """Refuse a ``path`` that exists but holds no DuckDB database (a folder, or a file without DuckDB's
    header: damaged, or another format), without opening it: no lock is taken and nothing is written, so
    a command that only reads ``path`` checks it while another process writes it. A missing path passes."""
    path = Path(path)
    if not path.exists():
        return
    _exists(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_MAGIC_OFFSET + len(_MAGIC))
    except OSError as exc:
        raise SchemaError(f"{path}: cannot open database: {exc.strerror or exc}") from None
    if head[_MAGIC_OFFSET:] != _MAGIC:
        raise SchemaError(f"{path}: cannot open database: not a DuckDB database file")


def connect_readonly(path: Path) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    _exists(path)
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


def connect_literal_text(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection for drawing figures: an in-memory database whose views show every table of
    the corpus at ``path`` (checked as :func:`connect_readonly` checks it) with each ``$`` of its text
    escaped as ``\\$``. Matplotlib reads a text with two ``$`` as mathtext (a data set named
    ``a$b$c`` drew as math, one that is not valid mathtext crashed the figure); escaped, it draws every
    name as written, while its own log-axis tick labels stay mathtext."""
    connect_readonly(path).close()
    con = duckdb.connect()
    try:
        try:
            con.execute("ATTACH ? AS corpus (READ_ONLY)", [str(path)])
        except duckdb.Error as exc:  # a writer took the file between the check and here
            raise SchemaError(f"{path}: cannot open database: {str(exc).splitlines()[0]}") from None
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, kind in con.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = 'corpus' ORDER BY table_name, ordinal_position").fetchall():
            columns.setdefault(table, []).append((column, kind))
        for table, cols in columns.items():
            select = ", ".join(_literal(c, kind) for c, kind in cols)
            con.execute(f'CREATE VIEW main."{table}" AS SELECT {select} FROM corpus.main."{table}"')
    except BaseException:
        con.close()
        raise
    return con


def _literal(column: str, kind: str) -> str:
    """The select item of one column: text with its ``$`` escaped, anything else as it is."""
    name = f'"{column}"'
    if kind == "VARCHAR":
        return f"replace({name}, '$', '\\$') AS {name}"
    if kind == "VARCHAR[]":
        return f"list_transform({name}, lambda x: replace(x, '$', '\\$')) AS {name}"
    return name
