"""What a backend is: it runs submitted run specs somewhere and reports back as events.

A backend reports a run's progress (:class:`Progress`), its outcome (:class:`Finished`) or its
failure (:class:`Failed`); the coordinator (:mod:`pipeline.executors.coordinator`) decides what a
failure means (retry, record, or stop).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from pipeline.errors import StoreError
from pipeline.extract.run import RunOutcome
from pipeline.runspec import RunSpec
from snapshot_loader.shards import ShardStore


@dataclass(frozen=True)
class RunFailure:
    run_id: str
    error: str


@dataclass(frozen=True)
class Progress:
    run_id: str
    step: int
    total: int


@dataclass(frozen=True)
class Finished:
    run_id: str
    outcome: RunOutcome


@dataclass(frozen=True)
class Failed:
    run_id: str
    error: str
    fatal: bool = False  # the store cannot be written: stop, retrying other runs cannot help


def describe(exc: BaseException) -> str:
    """The exception as one line: ``Type: message`` (its first line)."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def failed(run_id: str, exc: BaseException) -> Failed:
    """The failure event of a run that raised ``exc``; fatal when the store cannot be written."""
    return Failed(run_id, describe(exc), isinstance(exc, StoreError))


class Backend(ABC):
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
        """Events (Progress, Finished, Failed) that arrived within about ``timeout`` seconds."""

    def close(self, cancel: bool) -> None:  # noqa: B027 - nothing to release unless a backend holds workers
        """Release workers; ``cancel`` drops the runs in flight (an interrupt or a store error)."""
