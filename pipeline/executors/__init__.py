"""Executors: extract many runs, one task per run, behind one interface.

- ``inline``: in this process, one run after another (tests, debugging);
- ``process``: ``workers`` spawned processes on this machine, one run at a time each (the default);
- ``dask``: tasks on a running Dask distributed cluster (``scheduler="tcp://host:port"``);
- ``dask-local``: a Dask ``LocalCluster`` of ``workers`` single-threaded worker processes.

Workers write each run's shard to the store (a path or fsspec URL every worker can reach); the
coordinator (this process) only schedules, retries and records. Failures are per run: a run that
raises, or whose worker dies under it (killed, out of memory), is tried once more; a run that fails
:data:`MAX_ATTEMPTS` times is recorded in the store's ``failures/`` with its last error (ingested
into ``run_failures``) and the other runs go on. A killed worker leaves at most its run's temp
folder, which is removed before the retry; the process pool replaces the worker and no other run
is disturbed.

Modules: :mod:`.backend` (the events and the backend interface), :mod:`.coordinator` (scheduling,
retries, failure records, the store lock), :mod:`.inline`, :mod:`.process_pool` and
:mod:`.dask_cluster` (the backends).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.datasets.registry import DatasetSpec
from pipeline.errors import PipelineError
from pipeline.executors.backend import Backend, RunFailure
from pipeline.executors.coordinator import MAX_ATTEMPTS, POLL_SECONDS, coordinate, shards_lock
from pipeline.executors.dask_cluster import DaskBackend
from pipeline.executors.inline import InlineBackend
from pipeline.executors.process_pool import ProcessBackend
from pipeline.extract.run import RunOutcome
from pipeline.runspec import RunSpec
from snapshot_loader.shards import ShardStore

__all__ = ["EXECUTORS", "MAX_ATTEMPTS", "POLL_SECONDS", "RunFailure", "run_extraction", "shards_lock"]

EXECUTORS = ("process", "inline", "dask", "dask-local")

_BACKENDS: dict[str, Callable[..., Backend]] = {"inline": InlineBackend, "process": ProcessBackend,
                                                "dask": DaskBackend, "dask-local": DaskBackend}


def run_extraction(specs: list[RunSpec], shards: ShardStore | str | Path,
                   custom: dict[str, DatasetSpec] | None = None, workers: int = 1, executor: str = "process",
                   show_progress: bool | None = None, device: str = "cpu",
                   scheduler: str | None = None) -> tuple[list[RunOutcome], list[RunFailure]]:
    """Extract every run whose shard is not complete yet. Returns (outcomes, failures)."""
    if executor not in EXECUTORS:
        raise PipelineError(f"unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})", field="executor")
    if executor == "dask" and not scheduler:
        raise PipelineError("the dask executor needs a scheduler address (tcp://host:port)", field="scheduler")
    store = shards if isinstance(shards, ShardStore) else ShardStore(shards)
    if executor != "inline" and not store.shared:
        raise PipelineError(f"{store.location} lives in this process only: use the inline executor", field="shards")
    disable = None if show_progress is None else not show_progress
    with shards_lock(store):
        store.remove_stale_temps()
        store.adopt_legacy_layout()
        try:
            outcomes = [RunOutcome(s.run_id, "skipped", 0.0) for s in specs
                        if store.is_complete(s.dataset, s.run_id)]
            skipped = {o.run_id for o in outcomes}
            todo = [s for s in specs if s.run_id not in skipped]
            if not todo:
                return outcomes, []
            backend = _BACKENDS[executor](store, custom, device, max(1, workers), scheduler)
            backend.disable = disable
            done, failures = coordinate(backend, store, todo, disable)
            return outcomes + done, failures
        finally:  # workers stopped by an interrupt or a store error may have left temp folders
            store.remove_stale_temps()
