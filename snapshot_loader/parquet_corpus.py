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


#: ``datasets`` columns an older shard lacks, filled as ingest reads them (snapshot_loader.shards.
#: _older_shard_column and the database migrations): in a store of older shards beside newer ones they
#: read as NULL in the older shards' rows.
_OLDER_DATASETS = {
    "input_shape": "coalesce(input_shape, [n_features])",
    "preprocess": "coalesce(preprocess, 'standard')",
    "baseline_auc": "coalesce(baseline_auc, CASE WHEN baseline_name IS NULL AND task = 'classification' THEN 0.5 END)",
}


def _view(table: str, source: str, present: set[str]) -> str:
    """The SELECT of a table's view over shards that may predate some of its columns (``present``: the
    columns any of them has; a column none has reads as NULL)."""
    cols = ", ".join(f'"{c}"' if c in present else f'CAST(NULL AS {t}) AS "{c}"' for c, t in TABLES[table])
    if table != "datasets":
        return f"SELECT {cols} FROM {source}"
    filled = ", ".join(f'{_OLDER_DATASETS[c]} AS "{c}"' if c in _OLDER_DATASETS else f'"{c}"' for c, _ in TABLES[table])
    # one row per data set, as after ingest: a row with a baseline first (an older shard's has none)
    return (f"SELECT DISTINCT ON (name) {filled} FROM (SELECT {cols} FROM {source}) "
            "ORDER BY name, baseline_name IS NULL")


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
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        con.execute(f"CREATE VIEW {table} AS {_view(table, source, present)}")
    for table, cols in DB_ONLY_TABLES.items():
        con.execute(_empty_table(table, cols))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION])
    for f in store.failures():
        if f["run_id"] not in {r.run_id for r in refs}:
            con.execute("INSERT INTO run_failures VALUES (?, ?, ?, ?, ?)",
                        [f["run_id"], f["dataset"], f["error"], f["attempts"], f["config_json"]])
    return con
