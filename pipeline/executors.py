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
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import multiprocessing as mp
import os
import signal
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from pathlib import Path

from tqdm import tqdm

from pipeline.datasets.registry import DatasetSpec
from pipeline.errors import PipelineError, StoreError
from pipeline.extract.run import RunOutcome, extract_run
from pipeline.extract.shards import ShardStore
from pipeline.runspec import RunSpec

EXECUTORS = ("process", "inline", "dask", "dask-local")
#: Tries per run before it is recorded as failed.
MAX_ATTEMPTS = 2
#: Seconds a coordinator waits between looks at its workers.
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class RunFailure:
    run_id: str
    error: str


@dataclass(frozen=True)
class _Progress:
    run_id: str
    step: int
    total: int


@dataclass(frozen=True)
class _Finished:
    run_id: str
    outcome: RunOutcome


@dataclass(frozen=True)
class _Failed:
    run_id: str
    error: str
    fatal: bool = False  # the store cannot be written: stop, retrying other runs cannot help


def _failed(run_id: str, exc: BaseException) -> _Failed:
    return _Failed(run_id, _describe(exc), isinstance(exc, StoreError))


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
        raise StoreError(f"--shards: cannot write to {root}: {exc.strerror}") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{root}: another extraction is writing these shards") from None
        yield


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def run_extraction(specs: list[RunSpec], shards: ShardStore | str | Path,
                   custom: dict[str, DatasetSpec] | None = None, workers: int = 1, executor: str = "process",
                   show_progress: bool | None = None, device: str = "cpu",
                   scheduler: str | None = None) -> tuple[list[RunOutcome], list[RunFailure]]:
    """Extract every run whose shard is not complete yet. Returns (outcomes, failures)."""
    if executor not in EXECUTORS:
        raise PipelineError(f"--executor: unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")
    if executor == "dask" and not scheduler:
        raise PipelineError("--scheduler: the dask executor needs a scheduler address (tcp://host:port)")
    store = shards if isinstance(shards, ShardStore) else ShardStore(shards)
    if executor != "inline" and not store.shared:
        raise PipelineError(f"--shards: {store.location} lives in this process only: use --executor inline")
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
            done, failures = _coordinate(backend, store, todo, disable)
            return outcomes + done, failures
        finally:  # workers stopped by an interrupt or a store error may have left temp folders
            store.remove_stale_temps()


def _coordinate(backend, store: ShardStore, todo: list[RunSpec], disable) -> tuple[list[RunOutcome], list[RunFailure]]:
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
                    if isinstance(event, _Progress):
                        bar = bars.get(event.run_id)
                        if bar is None:
                            bar = bars[event.run_id] = tqdm(total=event.total, desc=event.run_id, unit="step",
                                                            leave=False, disable=disable)
                        bar.n = event.step
                        bar.refresh()
                        continue
                    close_bar(event.run_id)
                    if isinstance(event, _Finished):
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


class _Backend(ABC):
    """Runs submitted specs somewhere and reports progress, completion and failure as events."""

    def __init__(self, store: ShardStore, custom, device: str, workers: int, scheduler: str | None):
        self.store, self.custom, self.device, self.workers, self.scheduler = store, custom, device, workers, scheduler
        self.disable: bool | None = None  # progress bars: None = on a terminal only

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(cancel=exc_type is not None)

    @abstractmethod
    def submit(self, spec: RunSpec) -> None:
        """Queue one run (a retry is submitted again)."""

    @abstractmethod
    def poll(self, timeout: float) -> list:
        """Events (_Progress, _Finished, _Failed) that arrived within about ``timeout`` seconds."""

    def close(self, cancel: bool) -> None:  # noqa: B027 - nothing to release unless a backend holds workers
        """Release workers; ``cancel`` drops the runs in flight (an interrupt or a store error)."""


class _InlineBackend(_Backend):
    def __init__(self, *args):
        super().__init__(*args)
        self.queue: deque[RunSpec] = deque()

    def submit(self, spec: RunSpec) -> None:
        self.queue.append(spec)

    def poll(self, timeout: float) -> list:
        if not self.queue:
            return []
        spec = self.queue.popleft()
        bar = tqdm(desc=spec.run_id, unit="step", leave=False, disable=self.disable)

        def progress(step: int, total: int) -> None:
            bar.total, bar.n = total, step
            bar.refresh()

        try:
            return [_Finished(spec.run_id, extract_run(spec, self.store, self.custom, progress, self.device))]
        except Exception as exc:  # one bad run must not stop the corpus
            return [_failed(spec.run_id, exc)]
        finally:
            bar.close()


# -- process pool -------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the coordinator dies (so no orphan keeps writing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _process_worker(conn, parent: int, store: ShardStore, custom, device: str) -> None:
    _die_with_parent()
    if os.getppid() != parent:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides what an interrupt stops
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        last = [-1]

        def progress(step: int, total: int, spec=spec, last=last) -> None:
            if step == total or step - last[0] >= max(1, total // 100):
                last[0] = step
                conn.send(_Progress(spec.run_id, step, total))

        try:
            conn.send(_Finished(spec.run_id, extract_run(spec, store, custom, progress, device)))
        except Exception as exc:
            conn.send(_failed(spec.run_id, exc))


@dataclass
class _Worker:
    process: mp.Process
    conn: object
    spec: RunSpec | None = None


class _ProcessBackend(_Backend):
    """``workers`` spawned processes, each fed one run at a time over its own pipe.

    A worker that dies takes only its own run with it (reported as failed, so it is retried) and is
    replaced; the other workers go on, unlike a ``ProcessPoolExecutor``, which breaks as a whole."""

    def __init__(self, *args):
        super().__init__(*args)
        self.ctx = mp.get_context("spawn")
        self.queue: deque[RunSpec] = deque()
        self.pool: list[_Worker] = []

    def _start(self) -> _Worker:
        here, there = self.ctx.Pipe()
        proc = self.ctx.Process(target=_process_worker, args=(there, os.getpid(), self.store, self.custom,
                                                              self.device), daemon=True)
        proc.start()
        there.close()
        worker = _Worker(proc, here)
        self.pool.append(worker)
        return worker

    def submit(self, spec: RunSpec) -> None:
        self.queue.append(spec)

    def _dispatch(self) -> None:
        for worker in list(self.pool):
            if worker.spec is None and self.queue:
                self._assign(worker)
        while self.queue and len(self.pool) < self.workers:
            self._assign(self._start())

    def _assign(self, worker: _Worker) -> None:
        spec = self.queue.popleft()
        try:
            worker.conn.send(spec)
        except OSError:  # it died idle, between two runs: nothing was lost; a fresh worker takes the run
            self.queue.appendleft(spec)
            self.pool.remove(worker)
            worker.process.join(timeout=5)
            worker.conn.close()
            return
        worker.spec = spec

    def poll(self, timeout: float) -> list:
        self._dispatch()
        events = []
        ready = set(wait_for([w.conn for w in self.pool] + [w.process.sentinel for w in self.pool], timeout))
        for worker in list(self.pool):
            dead = False
            if worker.conn in ready:
                dead = self._read(worker, events)
            if dead or worker.process.sentinel in ready:
                worker.process.join(timeout=5)
                if worker.process.exitcode is not None or dead:
                    self._read(worker, events)  # what it sent after the wait returned, e.g. a finished run
                    events.extend(self._bury(worker))
        return events

    @staticmethod
    def _read(worker: _Worker, events: list) -> bool:
        """Append the worker's pending messages to events; True when its pipe is closed (it died)."""
        try:
            while worker.conn.poll():
                event = worker.conn.recv()
                events.append(event)
                if not isinstance(event, _Progress):
                    worker.spec = None
        except (EOFError, OSError):
            return True
        return False

    def _bury(self, worker: _Worker) -> list:
        self.pool.remove(worker)
        worker.conn.close()
        if worker.spec is None:
            return []
        code = worker.process.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
        return [_Failed(worker.spec.run_id, f"worker process died ({how})")]

    def close(self, cancel: bool) -> None:
        for worker in self.pool:
            if cancel:
                worker.process.terminate()  # an interrupt drops the runs in flight; their shards are never half-written
            else:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
        for worker in self.pool:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.pool.clear()


# -- Dask distributed ---------------------------------------------------------------------------
def _dask_task(spec: RunSpec, store: ShardStore, custom, device: str) -> RunOutcome:
    return extract_run(spec, store, custom, None, device)


class _DaskBackend(_Backend):
    """One Dask task per run. Retries are the coordinator's: on the ``LocalCluster`` this starts,
    ``allowed-failures`` is 0, so a task whose worker dies comes back at once as ``KilledWorker`` and
    counts as one failed attempt. An external scheduler keeps its own setting (Dask's default
    reschedules a task up to 3 times before ``KilledWorker``)."""

    def __init__(self, *args):
        super().__init__(*args)
        import dask
        from distributed import Client, LocalCluster

        self.cluster = None
        self._config = dask.config.set({"distributed.scheduler.allowed-failures": 0})
        self._config.__enter__()
        try:
            if self.scheduler:
                try:
                    self.client = Client(self.scheduler, timeout="20s")
                except (OSError, TimeoutError) as exc:
                    raise PipelineError(f"--scheduler: cannot reach {self.scheduler}: {exc}") from None
            else:
                self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
                self.client = Client(self.cluster)
        except BaseException:
            self._config.__exit__(None, None, None)
            raise
        self.futures: dict = {}
        self.attempt: dict[str, int] = {}

    def submit(self, spec: RunSpec) -> None:
        n = self.attempt[spec.run_id] = self.attempt.get(spec.run_id, 0) + 1
        fut = self.client.submit(_dask_task, spec, self.store, self.custom, self.device, pure=False,
                                 key=f"extract-{spec.run_id}-{n}")
        self.futures[fut] = spec

    def poll(self, timeout: float) -> list:
        from distributed import wait

        try:
            done = wait(list(self.futures), timeout=timeout, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            return []
        except OSError as exc:  # the scheduler went away
            raise PipelineError(f"--scheduler: lost the Dask scheduler: {_describe(exc)}") from None
        events = []
        for fut in done:
            spec = self.futures.pop(fut)
            try:
                events.append(_Finished(spec.run_id, fut.result()))
            except Exception as exc:
                events.append(_failed(spec.run_id, exc))
        return events

    def close(self, cancel: bool) -> None:
        try:
            if cancel and self.futures:
                self.client.cancel(list(self.futures))
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self._config.__exit__(None, None, None)


_BACKENDS: dict[str, Callable[..., _Backend]] = {"inline": _InlineBackend, "process": _ProcessBackend,
                                                 "dask": _DaskBackend, "dask-local": _DaskBackend}
