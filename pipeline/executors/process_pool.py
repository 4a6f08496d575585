"""The ``process`` backend: ``workers`` spawned processes on this machine, one run at a time each."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for

from pipeline.executors.backend import Backend, Failed, Finished, Progress, failed
from pipeline.extract.run import extract_run
from pipeline.orphan_guard import guarded_main, guarded_payload
from pipeline.runspec import RunSpec
from snapshot_loader.shards import ShardStore


def _process_worker(conn, store: ShardStore, custom, device: str) -> None:
    """Run the specs that arrive on ``conn`` until ``None`` (started by :func:`guarded_main`, so it
    already dies with the coordinator and no orphan keeps writing)."""
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
                conn.send(Progress(spec.run_id, step, total))

        try:
            conn.send(Finished(spec.run_id, extract_run(spec, store, custom, progress, device)))
        except Exception as exc:
            conn.send(failed(spec.run_id, exc))


@dataclass
class _Worker:
    process: mp.Process
    conn: object
    spec: RunSpec | None = None


class ProcessBackend(Backend):
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
        payload = guarded_payload(_process_worker, self.store, self.custom, self.device)
        proc = self.ctx.Process(target=guarded_main, args=(os.getpid(), payload, there), daemon=True)
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
                if not isinstance(event, Progress):
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
        return [Failed(worker.spec.run_id, f"worker process died ({how})")]

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
