"""Shards: one folder of Parquet files per run, complete or absent.

A worker writes into ``<shards>/.tmp-<run_id>-<pid>`` and renames it to ``<shards>/<run_id>`` only
after every file and ``manifest.json`` (row count and SHA-256 of each file) is on disk, so a
folder named by a run id is a finished run. A folder that fails its manifest check is corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ShardError
from snapshot_loader.schema import SCHEMA_VERSION, SHARD_TABLES, arrow_schema

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_shard(shards_dir: Path, run_id: str, rows: dict[str, list[dict]]) -> Path:
    """Write one run's tables atomically; returns the final folder."""
    shards_dir.mkdir(parents=True, exist_ok=True)
    final = shards_dir / run_id
    tmp = shards_dir / f"{TMP_PREFIX}{run_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        manifest = {"run_id": run_id, "schema_version": SCHEMA_VERSION, "tables": {}}
        for table in SHARD_TABLES:
            schema = arrow_schema(table)
            data = rows.get(table, [])
            arrow = pa.Table.from_pylist(data, schema=schema) if data else schema.empty_table()
            path = tmp / f"{table}.parquet"
            pq.write_table(arrow, path, compression="zstd")
            manifest["tables"][table] = {"file": path.name, "rows": arrow.num_rows, "sha256": _sha256(path)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync_dir(tmp)
        if final.exists():  # a corrupt earlier attempt; a valid one would have been skipped
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(shards_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fsync_dir(path: Path) -> None:
    for p in path.iterdir() if path.is_dir() else ():
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> dict:
    """The manifest of a complete shard, after checking every file's row count and checksum."""
    mpath = folder / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ShardError(f"{mpath}: missing manifest: the shard is incomplete") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(f"{mpath}: unreadable manifest: {exc}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{mpath}: shard has schema version {manifest.get('schema_version')}, "
                         f"this tool writes {SCHEMA_VERSION}: delete the shard and extract again")
    if manifest.get("run_id") != folder.name:
        raise ShardError(f"{mpath}: manifest names run {manifest.get('run_id')!r}, folder is {folder.name!r}")
    for table in SHARD_TABLES:
        entry = manifest.get("tables", {}).get(table)
        path = folder / f"{table}.parquet"
        if entry is None:
            raise ShardError(f"{mpath}: no entry for table {table!r}")
        if not path.is_file():
            raise ShardError(f"{path}: missing shard file")
        if _sha256(path) != entry["sha256"]:
            raise ShardError(f"{path}: checksum does not match the manifest (corrupt or partial file)")
        try:
            n = pq.read_metadata(path).num_rows
        except Exception as exc:
            raise ShardError(f"{path}: not a readable Parquet file: {exc}") from None
        if n != entry["rows"]:
            raise ShardError(f"{path}: {n} rows, manifest says {entry['rows']}")
    return manifest


def shard_is_complete(folder: Path) -> bool:
    try:
        read_manifest(folder)
    except ShardError:
        return False
    return True


def complete_shards(shards_dir: Path) -> list[Path]:
    """Folders named by a run id (no temp folders), sorted; not yet checked."""
    if not shards_dir.is_dir():
        return []
    return sorted(p for p in shards_dir.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))


def remove_stale_temps(shards_dir: Path) -> int:
    """Delete temp folders left by killed workers (call only when no worker is running)."""
    n = 0
    if shards_dir.is_dir():
        for p in shards_dir.iterdir():
            if p.is_dir() and p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n
