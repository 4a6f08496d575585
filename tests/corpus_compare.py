"""Compare two corpus databases table by table, wall-time columns aside."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from snapshot_loader.schema import PRIMARY_KEYS, TABLES, WALL_TIME_COLUMNS


def table_contents(db: Path) -> dict[str, pl.DataFrame]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table, cols in TABLES.items():
            keep = [f'"{c}"' for c, _ in cols if (table, c) not in WALL_TIME_COLUMNS]
            order = ", ".join(PRIMARY_KEYS[table])
            out[table] = con.sql(f"SELECT {', '.join(keep)} FROM {table} ORDER BY {order}").pl()
        return out
    finally:
        con.close()


def assert_same_corpus(a: Path, b: Path) -> None:
    ta, tb = table_contents(a), table_contents(b)
    for table in ("runs", "checkpoints", "layer_stats", "weights", "splits"):
        assert ta[table].height > 0, f"{table} is empty: the comparison would prove nothing"
    for table in TABLES:
        assert ta[table].height == tb[table].height, f"{table}: {ta[table].height} vs {tb[table].height} rows"
        assert ta[table].equals(tb[table]), f"{table}: contents differ"
