"""Executors: run the extraction of many runs, one task per run.

- ``inline``: in this process, one run after another (tests, debugging);
- ``process``: a pool of ``workers`` spawned processes (the default).

Both show an overall progress bar and one bar per run in flight (on a terminal). A run that raises
is reported with its error and the others go on; the caller decides the exit status. A lock file
keeps two extractions from writing the same shard folder at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import multiprocessing as mp
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.datasets.registry import DatasetSpec
from pipeline.errors import PipelineError
from pipeline.extract.run import RunOutcome, extract_run
from pipeline.extract.shards import remove_stale_temps
from pipeline.runspec import RunSpec


@dataclass(frozen=True)
class RunFailure:
    run_id: str
    error: str


@contextmanager
def shards_lock(shards_dir: Path) -> Iterator[None]:
    shards_dir.mkdir(parents=True, exist_ok=True)
    with open(shards_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{shards_dir}: another extraction is writing these shards") from None
        yield


def _worker(spec: RunSpec, shards_dir: Path, custom: dict[str, DatasetSpec] | None, events,
            device: str = "cpu") -> RunOutcome:
    def progress(step: int, total: int) -> None:
        events.put((spec.run_id, step, total))

    return extract_run(spec, shards_dir, custom, progress if events is not None else None, device)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def run_extraction(specs: list[RunSpec], shards_dir: Path, custom: dict[str, DatasetSpec] | None = None,
                   workers: int = 1, executor: str = "process", show_progress: bool | None = None,
                   device: str = "cpu") -> tuple[list[RunOutcome], list[RunFailure]]:
    """Extract every run whose shard is not complete yet. Returns (outcomes, failures)."""
    disable = None if show_progress is None else not show_progress
    with shards_lock(shards_dir):
        remove_stale_temps(shards_dir)
        if executor == "inline":
            return _run_inline(specs, shards_dir, custom, disable, device)
        if executor == "process":
            return _run_pool(specs, shards_dir, custom, max(1, workers), disable, device)
        raise PipelineError(f"unknown executor {executor!r} (choose from inline, process)")


def _run_inline(specs, shards_dir, custom, disable, device):
    outcomes, failures = [], []
    overall = tqdm(total=len(specs), desc="runs", unit="run", disable=disable)
    for spec in specs:
        bar = tqdm(desc=spec.run_id, unit="step", leave=False, disable=disable)

        def progress(step, total, bar=bar):
            bar.total = total
            bar.n = step
            bar.refresh()

        try:
            outcomes.append(extract_run(spec, shards_dir, custom, progress, device))
        except Exception as exc:  # one bad run must not stop the corpus
            failures.append(RunFailure(spec.run_id, _describe(exc)))
        finally:
            bar.close()
            overall.update()
    overall.close()
    return outcomes, failures


def _run_pool(specs, shards_dir, custom, workers, disable, device):
    ctx = mp.get_context("spawn")
    outcomes, failures = [], []
    manager = ctx.Manager()
    events = manager.Queue()
    overall = tqdm(total=len(specs), desc="runs", unit="run", disable=disable, position=0)
    bars: dict[str, tqdm] = {}
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures = {pool.submit(_worker, s, shards_dir, custom, events, device): s for s in specs}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            _drain(events, bars, disable)
            for fut in done:
                spec = futures[fut]
                try:
                    outcomes.append(fut.result())
                except Exception as exc:
                    failures.append(RunFailure(spec.run_id, _describe(exc)))
                bar = bars.pop(spec.run_id, None)
                if bar is not None:
                    bar.close()
                overall.update()
        pool.shutdown(wait=True)
    except BaseException:
        # Interrupted: drop the queued runs instead of finishing them; runs in flight die with
        # their workers or finish on their own, and either way leave a complete shard or none.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        for bar in bars.values():
            bar.close()
        overall.close()
        manager.shutdown()
    return outcomes, failures


def _drain(events, bars: dict[str, tqdm], disable) -> None:
    while True:
        try:
            run_id, step, total = events.get_nowait()
        except queue.Empty:
            return
        bar = bars.get(run_id)
        if bar is None:
            bar = bars[run_id] = tqdm(total=total, desc=run_id, unit="step", leave=False, disable=disable)
        bar.n = step
        bar.refresh()
