"""The ``dask`` and ``dask-local`` backends: one task per run on a Dask distributed cluster."""

from __future__ import annotations

import logging

from pipeline.errors import PipelineError
from pipeline.executors.backend import Backend, Finished, describe, failed
from pipeline.extract.run import RunOutcome, extract_run
from pipeline.runspec import RunSpec
from snapshot_loader.shards import ShardStore


def _dask_task(spec: RunSpec, store: ShardStore, custom, device: str) -> RunOutcome:
    return extract_run(spec, store, custom, None, device)


class DaskBackend(Backend):
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
                    raise PipelineError(f"cannot reach {self.scheduler}: {exc}", field="scheduler") from None
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
            raise PipelineError(f"lost the Dask scheduler: {describe(exc)}", field="scheduler") from None
        events = []
        for fut in done:
            spec = self.futures.pop(fut)
            try:
                events.append(Finished(spec.run_id, fut.result()))
            except Exception as exc:
                events.append(failed(spec.run_id, exc))
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
