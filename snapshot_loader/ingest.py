"""Ingest complete shards into the DuckDB corpus: runs whole, in batched transactions, idempotent.

A run is in the database whole or not at all: the rows of every table of a batch of runs are
inserted in one transaction (one INSERT per table, over the batch's shards concatenated), and a run
already present is skipped, so ingesting twice (or after a crash) never duplicates a row. Batching
is for speed: a batch pays one commit and one INSERT per table where one run per transaction paid
them per run, and the default corpus's ingest went from 35 s to 11 s (benchmarks/ingest.py). Shards
are checked against their manifest first; a corrupt one is reported by path and left out, the
others still go in. A batch whose insert fails is rolled back and retried run by run, so the error
names the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.errors import ShardError, StoreError
from pipeline.runspec import data_identity, describe_data_identity
from snapshot_loader.database import connect_writable
from snapshot_loader.schema import SHARD_TABLES
from snapshot_loader.shards import ShardRef, ShardStore


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    already_present: int = 0
    errors: list[str] = field(default_factory=list)  # shards that cannot be read: corrupt or partial
    refused: list[str] = field(default_factory=list)  # sound shards this database cannot take (a name clash)
    failed_runs: int = 0


#: a batch is flushed at this many runs or this many bytes of Arrow data, whichever comes first
BATCH_RUNS = 64
BATCH_BYTES = 256 * 2**20


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
        batch = _Batch()
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
            arrays = {table: store.read_table(ref, table) for table in SHARD_TABLES}
            try:
                batch.admit(con, ref, arrays)
            except _Refused as exc:
                report.refused.append(str(exc))
                continue
            if len(batch.shards) >= BATCH_RUNS or batch.nbytes >= BATCH_BYTES:
                report.ingested += _flush(con, batch, db_path)
                batch = _Batch()
        report.ingested += _flush(con, batch, db_path)
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


#: a run's data identity (pipeline.runspec.data_identity) from its dataset_digest and preprocess, RunSpec
#: fields kept in config_json (no columns of their own)
_PREPROCESS = "coalesce(json_extract_string(config_json, '$.preprocess'), 'standard')"
_DIGEST = (f"coalesce(json_extract_string(config_json, '$.dataset_digest'), '') || "
           f"CASE WHEN {_PREPROCESS} = 'standard' THEN '' ELSE '/' || {_PREPROCESS} END")


def dataset_conflict(con: duckdb.DuckDBPyConnection, dataset: str, digest: str | None) -> str | None:
    """Why a run on data set ``dataset`` whose data identity (:func:`pipeline.runspec.data_identity`:
    its ``dataset_digest`` and ``preprocess``) is ``digest`` cannot join the database: another run
    there names a different data set so (another file, target, task or preprocessing; or a file named
    like a built-in one, whose digest is empty). ``datasets`` keeps one row per name, so the second would
    be described by the first's row. None when there is no conflict."""
    other = con.execute(f"SELECT run_id, {_DIGEST} AS d FROM runs WHERE dataset = ? AND {_DIGEST} <> ? LIMIT 1",
                        [dataset, digest or ""]).fetchone()
    if other is None:
        return None

    return _conflict_message(dataset, digest or "", other[0], other[1])


def _conflict_message(dataset: str, digest: str, other_run: str, other_digest: str) -> str:
    what = describe_data_identity
    return (f"data set {dataset!r} ({what(digest)}) is not the {dataset!r} of run {other_run} already in the "
            f"database ({what(other_digest)}): give one of them another name")


class _Refused(Exception):
    """A shard that is sound but cannot join this database (its reason is the message)."""


@dataclass
class _Batch:
    """Shards read and checked, waiting for one transaction; ``claimed``: data set -> (digest, run
    id) of the batch's runs, so two runs of one batch cannot name two data sets alike either."""

    shards: list[tuple[ShardRef, dict[str, pa.Table]]] = field(default_factory=list)
    claimed: dict[str, tuple[str, str]] = field(default_factory=dict)
    nbytes: int = 0

    def admit(self, con: duckdb.DuckDBPyConnection, ref: ShardRef, arrays: dict[str, pa.Table]) -> None:
        """Add the shard, or raise _Refused (adding nothing) when one of its runs names a data set
        that the database or an earlier run of the batch holds under another digest."""
        configs = [(run["run_id"], run["dataset"], json.loads(run["config_json"]))
                   for run in arrays["runs"].select(["run_id", "dataset", "config_json"]).to_pylist()]
        runs = [(run_id, dataset, data_identity(c.get("dataset_digest") or "", c.get("preprocess") or "standard"))
                for run_id, dataset, c in configs]
        for _, dataset, digest in runs:
            claim = self.claimed.get(dataset)
            if claim is not None and claim[0] != digest:
                reason = _conflict_message(dataset, digest, claim[1], claim[0])
            else:
                reason = dataset_conflict(con, dataset, digest)
            if reason:
                raise _Refused(f"run {ref.run_id}: {reason}")
        for run_id, dataset, digest in runs:
            self.claimed.setdefault(dataset, (digest, run_id))
        self.shards.append((ref, arrays))
        self.nbytes += sum(a.nbytes for a in arrays.values())


def _flush(con: duckdb.DuckDBPyConnection, batch: _Batch, db_path: Path) -> list[str]:
    """Insert the batch's runs in one transaction (run by run after a failure, to name the run);
    returns their run ids."""
    if not batch.shards:
        return []
    try:
        _insert(con, [arrays for _, arrays in batch.shards])
    except duckdb.Error as exc:
        if len(batch.shards) == 1:
            ref = batch.shards[0][0]
            raise StoreError(f"{db_path}: cannot ingest run {ref.run_id}: {str(exc).splitlines()[0]}") from None
        done = []
        for ref, arrays in batch.shards:  # the failing run is named; those before it stay in
            single = _Batch()
            single.shards.append((ref, arrays))
            done += _flush(con, single, db_path)
        return done
    return [ref.run_id for ref, _ in batch.shards]


def _first_per_name(rows: pa.Table) -> pa.Table:
    """The first row of each data set name, in shard order: what one-run-per-transaction ingest keeps
    (``INSERT OR IGNORE``), so batching cannot change which row describes a data set."""
    seen: dict[str, int] = {}
    for i, name in enumerate(rows.column("name").to_pylist()):
        seen.setdefault(name, i)
    return rows.take(sorted(seen.values()))


#: A data set's row from before baselines were recorded (an older shard's, or a migrated database's)
#: takes its baseline from the first row of the batch that has one: the same data set (ingest refuses a
#: run whose data identity differs), so the same split and the same trivial predictor.
_FILL_BASELINES = """
UPDATE datasets SET baseline_name = s.baseline_name, baseline_metric = s.baseline_metric, baseline_auc = s.baseline_auc
FROM (SELECT name, first(baseline_name) AS baseline_name, first(baseline_metric) AS baseline_metric,
             first(baseline_auc) AS baseline_auc
      FROM (SELECT * FROM shard_rows WHERE baseline_name IS NOT NULL) GROUP BY name) s
WHERE datasets.name = s.name AND datasets.baseline_name IS NULL"""


def _insert(con: duckdb.DuckDBPyConnection, shards: list[dict[str, pa.Table]]) -> None:
    """Every table of ``shards`` in one transaction, rolled back whole on any error."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in SHARD_TABLES:
            rows = pa.concat_tables([arrays[table] for arrays in shards])
            if table == "datasets":  # one row per name: the batch's runs share their data sets' rows
                con.register("shard_rows", _first_per_name(rows))
                con.execute("INSERT OR IGNORE INTO datasets BY NAME SELECT * FROM shard_rows")
                con.unregister("shard_rows")
                con.register("shard_rows", rows)
                con.execute(_FILL_BASELINES)
            else:
                con.register("shard_rows", rows)
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM shard_rows")
            con.unregister("shard_rows")
        con.execute("COMMIT")
    except BaseException:  # e.g. the disk filled, or an interrupt: the batch's transaction is rolled back whole
        _rollback(con)
        raise


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the failed statement already ended the transaction
