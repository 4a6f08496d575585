"""Shards: one folder of Parquet files per run, complete or absent, in a hive-partitioned store.

Layout, under a local folder or any fsspec URL (``s3://bucket/corpus``, ``file:///data/corpus``)::

    <store>/dataset=<name>/run_id=<id>/<table>.parquet    one file per table of the schema
    <store>/dataset=<name>/run_id=<id>/manifest.json      row count and SHA-256 of each file
    <store>/failures/<run_id>.json                        runs that failed twice, with their error

so ``read_parquet('<store>/*/*/runs.parquet', hive_partitioning = true)`` in DuckDB or
``pl.scan_parquet(..., hive_partitioning=True)`` in polars reads a table of the whole corpus.

A run's shard is complete when its manifest is present and every file matches it. On a local
folder a worker writes into ``<store>/.tmp-<run_id>-<pid>`` and renames it into place once every
file and the manifest are on disk, so a run folder is never seen half-written. Object stores have
no atomic rename of a folder: there the files go straight into the run folder and the manifest
last, so a folder without one is a partial shard (redone by the next extraction, never ingested).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import PipelineError, ShardError, ShardVersionError, StoreError
from snapshot_loader.schema import (
    READABLE_SHARD_VERSIONS,
    SHARD_SCHEMA_VERSION,
    SHARD_TABLES,
    SHARD_TABLES_SINCE,
    arrow_schema,
)

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
FAILURES = "failures"


@dataclass(frozen=True)
class ShardRef:
    """A run's folder in the store (``path`` without the fsspec protocol)."""

    dataset: str
    run_id: str
    path: str


def _sha256(fh) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _partition_value(value: str, what: str) -> str:
    if not value or "/" in value or "=" in value or value.startswith("."):
        raise PipelineError(f"{what} {value!r} cannot name a shard folder (no '/', '=' or leading '.')")
    return value


#: Tables shards of version 3 do not have.


class ShardStore:
    """The shards of a corpus, at a local path or an fsspec URL.

    >>> store = ShardStore("build/shards")
    >>> store.is_complete("iris", run_id)
    >>> [ref.run_id for ref in store.complete()]
    """

    def __init__(self, location: str | Path):
        self.location = str(location)
        try:
            self.fs, root = fsspec.core.url_to_fs(self.location)
        except (ImportError, ValueError) as exc:
            raise PipelineError(f"cannot open {self.location!r}: {exc}", field="shards") from None
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"ShardStore({self.location!r})"

    def __reduce__(self):
        # Workers rebuild the store from an absolute location: a relative path would resolve
        # against a remote worker's own working directory.
        return (ShardStore, (self.root if self.is_local else self.fs.unstrip_protocol(self.root),))

    @property
    def shared(self) -> bool:
        """Whether other processes see this store (an in-process ``memory://`` store they do not)."""
        return "memory" not in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    # -- paths --------------------------------------------------------------------------------
    def folder(self, dataset: str, run_id: str) -> str:
        return (f"{self.root}/dataset={_partition_value(dataset, 'data set')}"
                f"/run_id={_partition_value(run_id, 'run id')}")

    def url(self, path: str) -> str:
        """``path`` with the store's protocol, as DuckDB or polars take it."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def refs(self) -> list[ShardRef]:
        """Every run folder, complete or not (temp folders excluded), sorted by data set and run."""
        refs = []
        for path in self.fs.glob(f"{self.root}/dataset=*/run_id=*"):
            parts = path.rstrip("/").split("/")
            if self.fs.isdir(path):
                refs.append(ShardRef(parts[-2].split("=", 1)[1], parts[-1].split("=", 1)[1], path))
        return sorted(refs, key=lambda r: (r.dataset, r.run_id))

    # -- reading ------------------------------------------------------------------------------
    def read_manifest(self, ref: ShardRef, verify: bool = True) -> dict:
        """The manifest of a complete shard; with ``verify``, every file's row count and checksum
        are checked against it first."""
        mpath = f"{ref.path}/{MANIFEST}"
        try:
            with self.fs.open(mpath, "rb") as fh:
                manifest = json.loads(fh.read())
        except FileNotFoundError:
            raise ShardError(f"{self.url(mpath)}: missing manifest: the shard is incomplete") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ShardError(f"{self.url(mpath)}: unreadable manifest: {exc}") from None
        if manifest.get("schema_version") not in READABLE_SHARD_VERSIONS:
            raise ShardVersionError(f"{self.url(mpath)}: shard has schema version {manifest.get('schema_version')}, "
                             f"this tool writes {SHARD_SCHEMA_VERSION}: delete the shard and extract again")
        if manifest["schema_version"] == 5 and not manifest.get("tables", {}).get("hessian_spectra", {}).get("rows"):
            raise ShardVersionError(f"{self.url(mpath)}: a version-5 shard without curvature rows (a CNN or "
                                    "Transformer run, measured before every family's blocks were): extract it again")
        if manifest.get("run_id") != ref.run_id:
            raise ShardError(f"{self.url(mpath)}: manifest names run {manifest.get('run_id')!r}, "
                             f"folder is {ref.run_id!r}")
        for table in SHARD_TABLES:
            entry = manifest.get("tables", {}).get(table)
            path = f"{ref.path}/{table}.parquet"
            if entry is None and manifest["schema_version"] < SHARD_TABLES_SINCE.get(table, 0):
                continue  # a table added after this shard was written: it reads as no rows
            if entry is None:
                raise ShardError(f"{self.url(mpath)}: no entry for table {table!r}")
            if not verify:
                continue
            try:
                with self.fs.open(path, "rb") as fh:
                    digest = _sha256(fh)
            except FileNotFoundError:
                raise ShardError(f"{self.url(path)}: missing shard file") from None
            if digest != entry["sha256"]:
                raise ShardError(f"{self.url(path)}: checksum does not match the manifest (corrupt or partial file)")
            try:
                with self.fs.open(path, "rb") as fh:
                    n = pq.read_metadata(fh).num_rows
            except Exception as exc:
                raise ShardError(f"{self.url(path)}: not a readable Parquet file: {exc}") from None
            if n != entry["rows"]:
                raise ShardError(f"{self.url(path)}: {n} rows, manifest says {entry['rows']}")
        return manifest

    def is_complete(self, dataset: str, run_id: str) -> bool:
        try:
            self.read_manifest(ShardRef(dataset, run_id, self.folder(dataset, run_id)))
        except ShardError:
            return False
        return True

    def complete(self, verify: bool = False) -> list[ShardRef]:
        """Run folders with a manifest (``verify``: and every file matching it). A shard of another
        schema version raises :class:`ShardVersionError`: it is stale, not merely unfinished."""
        out = []
        for ref in self.refs():
            try:
                self.read_manifest(ref, verify=verify)
            except ShardVersionError:
                raise
            except ShardError:
                continue
            out.append(ref)
        return out

    def read_table(self, ref: ShardRef, table: str) -> pa.Table:
        """One table of a complete shard, in the current schema."""
        schema = arrow_schema(table)
        path = f"{ref.path}/{table}.parquet"
        if not self.fs.exists(path):
            version = self.read_manifest(ref, verify=False)["schema_version"]
            if version < SHARD_TABLES_SINCE.get(table, 0):
                return schema.empty_table()
            raise ShardError(f"{self.url(path)}: missing shard file (the manifest of version {version} lists it)")
        with self.fs.open(path, "rb") as fh:
            arrow = pq.read_table(fh)
        for field in schema:  # a column added after the shard was written: NULL (READABLE_SHARD_VERSIONS)
            if field.name not in arrow.column_names:
                arrow = arrow.append_column(field.name, _older_shard_column(table, field, arrow))
        return arrow.select(schema.names).cast(schema)

    # -- writing ------------------------------------------------------------------------------
    def write(self, dataset: str, run_id: str, rows: dict[str, list[dict]]) -> ShardRef:
        """Write one run's tables (table -> rows) as a complete shard; returns its folder."""
        ref = ShardRef(dataset, run_id, self.folder(dataset, run_id))
        files = {}
        manifest = {"run_id": run_id, "dataset": dataset, "schema_version": SHARD_SCHEMA_VERSION, "tables": {}}
        for table in SHARD_TABLES:
            schema = arrow_schema(table)
            data = rows.get(table, [])
            arrow = pa.Table.from_pylist(data, schema=schema) if data else schema.empty_table()
            buf = io.BytesIO()
            pq.write_table(arrow, buf, compression="zstd")
            files[f"{table}.parquet"] = blob = buf.getvalue()
            manifest["tables"][table] = {"file": f"{table}.parquet", "rows": arrow.num_rows,
                                         "sha256": hashlib.sha256(blob).hexdigest()}
        files[MANIFEST] = json.dumps(manifest, indent=1).encode()  # last: its presence marks completion
        try:
            if self.is_local:
                self._write_local(ref, files)
            else:
                self._write_remote(ref, files)
        except OSError as exc:
            raise StoreError(f"{self.url(ref.path)}: cannot write the shard: {exc.strerror or exc}") from None
        self.clear_failure(run_id)
        return ref

    def _write_local(self, ref: ShardRef, files: dict[str, bytes]) -> None:
        final = Path(ref.path)
        tmp = Path(self.root) / f"{TMP_PREFIX}{ref.run_id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            for name, blob in files.items():
                with open(tmp / name, "wb") as fh:
                    fh.write(blob)
                    fh.flush()
                    os.fsync(fh.fileno())
            _fsync_dir(tmp)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Another writer (a retried or orphaned task) got there first: the run is seeded, so
                # a complete shard there holds the same rows; an incomplete one is replaced.
                if self.is_complete(ref.dataset, ref.run_id):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
                shutil.rmtree(final)
                os.rename(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_remote(self, ref: ShardRef, files: dict[str, bytes]) -> None:
        if self.fs.exists(ref.path):
            self.fs.rm(ref.path, recursive=True)
        self.fs.makedirs(ref.path, exist_ok=True)
        for name, blob in files.items():  # manifest.json is the last key
            self.fs.pipe_file(f"{ref.path}/{name}", blob)

    def discard_partial(self, dataset: str, run_id: str) -> None:
        """Remove what a failed or killed writer left of a run: its temp folders on a local store,
        its run folder without a valid manifest on an object store."""
        self.remove_stale_temps(run_id)
        if not self.is_local:
            path = self.folder(dataset, run_id)
            if self.fs.exists(path) and not self.is_complete(dataset, run_id):
                self.fs.rm(path, recursive=True)

    # -- failures -----------------------------------------------------------------------------
    def record_failure(self, run_id: str, dataset: str, error: str, attempts: int, config: dict) -> None:
        record = {"run_id": run_id, "dataset": dataset, "error": error, "attempts": attempts,
                  "config_json": json.dumps(config, sort_keys=True)}
        self.fs.makedirs(f"{self.root}/{FAILURES}", exist_ok=True)
        self.fs.pipe_file(f"{self.root}/{FAILURES}/{run_id}.json", json.dumps(record).encode())

    def clear_failure(self, run_id: str) -> None:
        path = f"{self.root}/{FAILURES}/{run_id}.json"
        if self.fs.exists(path):
            self.fs.rm(path)

    def failures(self) -> list[dict]:
        out = []
        for path in sorted(self.fs.glob(f"{self.root}/{FAILURES}/*.json")):
            with self.fs.open(path, "rb") as fh:
                try:
                    out.append(json.loads(fh.read()))
                except json.JSONDecodeError:
                    continue  # a record cut short by a crash; the run is retried anyway
        return out

    # -- housekeeping (coordinator only, while no worker writes) ------------------------------
    def remove_stale_temps(self, run_id: str | None = None) -> int:
        """Delete temp folders left by killed workers (all, or one run's)."""
        if not self.is_local or not Path(self.root).is_dir():
            return 0
        pattern = f"{TMP_PREFIX}{run_id}-*" if run_id else f"{TMP_PREFIX}*"
        n = 0
        for p in Path(self.root).glob(pattern):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n

    def adopt_legacy_layout(self) -> int:
        """Move complete shards of the earlier flat layout (``<store>/<run_id>/``) into the hive layout."""
        if not self.is_local or not Path(self.root).is_dir():
            return 0
        n = 0
        for p in Path(self.root).iterdir():
            if p.is_dir() and "=" not in p.name and not p.name.startswith(".") and p.name != FAILURES \
                    and (p / MANIFEST).is_file() and (p / "runs.parquet").is_file():
                datasets = pq.read_table(p / "runs.parquet", columns=["dataset"]).column(0).to_pylist()
                if len(datasets) == 1:
                    target = Path(self.folder(datasets[0], p.name))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not target.exists():
                        os.rename(p, target)
                        n += 1
        return n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _older_shard_column(table: str, field: pa.Field, arrow: pa.Table) -> pa.Array:
    """A column a shard predates: NULL, except what the database migration fills in the same way (a
    ``datasets`` row of a shard before version 8 is a table of ``[n_features]`` inputs, ``standard``;
    one before version 10 has no baseline but chance AUC for classification)."""
    if table == "datasets" and field.name == "input_shape" and "n_features" in arrow.column_names:
        return pa.array([[n] if n is not None else None for n in arrow.column("n_features").to_pylist()],
                        type=field.type)
    if table == "datasets" and field.name == "preprocess":
        return pa.array(["standard"] * arrow.num_rows, type=field.type)
    if table == "datasets" and field.name == "baseline_auc" and "task" in arrow.column_names:
        return pa.array([0.5 if t == "classification" else None for t in arrow.column("task").to_pylist()],
                        type=field.type)
    return pa.nulls(arrow.num_rows, field.type)
