"""The coordinator: schedules runs on a backend, retries failed ones, records what failed for good,
and keeps one extraction at a time per local store."""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import PipelineError, StoreError
from pipeline.executors.backend import Backend, Finished, Progress, RunFailure
from pipeline.extract.run import RunOutcome
from pipeline.runspec import RunSpec
from snapshot_loader.shards import ShardStore

#: Tries per run before it is recorded as failed.
MAX_ATTEMPTS = 2
#: Seconds a coordinator waits between looks at its workers.
POLL_SECONDS = 0.2


@contextmanager
def shards_lock(store: ShardStore) -> Iterator[None]:
    """One extraction at a time per local store (object stores have no lock: run one coordinator)."""
    if not store.is_local:
        yield
        return
    root = Path(store.root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(root / ".lock", "w")
    except OSError as exc:
        raise StoreError(f"cannot write to {root}: {exc.strerror}", field="shards") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{root}: another extraction is writing these shards") from None
        yield


def coordinate(backend: Backend, store: ShardStore, todo: list[RunSpec],
               disable: bool | None) -> tuple[list[RunOutcome], list[RunFailure]]:
    """Run every spec of ``todo`` on ``backend``: a run that fails is discarded and submitted again
    until it has failed :data:`MAX_ATTEMPTS` times, then recorded in the store's ``failures/``; a
    fatal failure (the store cannot be written) stops everything. Returns (outcomes, failures)."""
    by_id = {s.run_id: s for s in todo}
    attempts = dict.fromkeys(by_id, 0)
    outcomes, failures = [], []
    overall = tqdm(total=len(todo), desc="runs", unit="run", disable=disable, position=0)
    bars: dict[str, tqdm] = {}

    def close_bar(run_id: str) -> None:
        bar = bars.pop(run_id, None)
        if bar is not None:
            bar.close()

    remaining = len(todo)
    try:
        with backend:
            for spec in todo:
                backend.submit(spec)
            while remaining:
                for event in backend.poll(POLL_SECONDS):
                    if isinstance(event, Progress):
                        bar = bars.get(event.run_id)
                        if bar is None:
                            bar = bars[event.run_id] = tqdm(total=event.total, desc=event.run_id, unit="step",
                                                            leave=False, disable=disable)
                        bar.n = event.step
                        bar.refresh()
                        continue
                    close_bar(event.run_id)
                    if isinstance(event, Finished):
                        outcomes.append(event.outcome)
                    elif event.fatal:
                        raise StoreError(event.error.split(": ", 1)[1])
                    else:
                        attempts[event.run_id] += 1
                        spec = by_id[event.run_id]
                        store.discard_partial(spec.dataset, spec.run_id)
                        if attempts[event.run_id] < MAX_ATTEMPTS:
                            tqdm.write(f"extract: run {event.run_id}: {event.error}; retrying "
                                       f"(attempt {attempts[event.run_id] + 1} of {MAX_ATTEMPTS})", file=sys.stderr)
                            backend.submit(spec)
                            continue
                        failures.append(RunFailure(event.run_id, event.error))
                        store.record_failure(spec.run_id, spec.dataset, event.error, attempts[event.run_id],
                                             spec.to_dict())
                    remaining -= 1
                    overall.update()
    finally:
        for run_id in list(bars):
            close_bar(run_id)
        overall.close()
    return outcomes, failures
