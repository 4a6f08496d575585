"""A corpus read straight from its shard store (hive-partitioned Parquet), without ingest.

Each table of the schema becomes a DuckDB view over that table's file in every complete run folder
(one with a manifest), so a run still being written is never seen. Tables only the database keeps
(``studies``, ``run_failures``) come from the store where it has them (failures) or are empty.
Checksums are verified at ingest, not here: opening a store of thousands of runs reads only their
manifests.
"""

from __future__ import annotations

import duckdb

from pipeline.errors import PipelineError
from snapshot_loader.schema import DB_ONLY_TABLES, SCHEMA_VERSION, SHARD_TABLES, SHARD_TABLES_SINCE, TABLES
from snapshot_loader.shards import ShardStore


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _empty_table(name: str, cols: list[tuple[str, str]]) -> str:
    return f"CREATE TABLE {name} (" + ", ".join(f'"{c}" {t}' for c, t in cols) + ")"


def parquet_connection(location: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose tables are views over the store's complete shards."""
    store = ShardStore(location)
    if not store.fs.exists(store.root):
        raise PipelineError(f"{location}: no such shard store")
    refs = store.complete(verify=False)  # a run still being written, or a partial shard, is left out
    con = duckdb.connect(":memory:")
    if not store.is_local:
        con.register_filesystem(store.fs)
    for table in SHARD_TABLES:
        paths = [r.path for r in refs]
        if table in SHARD_TABLES_SINCE:  # a shard older than the table has no file of it: no rows
            paths = [r.path for r in refs
                     if store.read_manifest(r, verify=False)["schema_version"] >= SHARD_TABLES_SINCE[table]]
        if not paths:
            con.execute(_empty_table(table, TABLES[table]))
            continue
        files = ", ".join(_quote(store.url(f"{p}/{table}.parquet")) for p in paths)
        source = f"read_parquet([{files}], union_by_name = true)"
        cols = ", ".join(f'"{c}"' for c, _ in TABLES[table])
        distinct = "DISTINCT " if table == "datasets" else ""  # one row per data set, as after ingest
        con.execute(f"CREATE VIEW {table} AS SELECT {distinct}{cols} FROM {source}")
    for table, cols in DB_ONLY_TABLES.items():
        con.execute(_empty_table(table, cols))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION])
    for f in store.failures():
        if f["run_id"] not in {r.run_id for r in refs}:
            con.execute("INSERT INTO run_failures VALUES (?, ?, ?, ?, ?)",
                        [f["run_id"], f["dataset"], f["error"], f["attempts"], f["config_json"]])
    return con
