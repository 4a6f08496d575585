"""The ``inline`` backend: every run in this process, one after another (tests, debugging)."""

from __future__ import annotations

from collections import deque

from tqdm import tqdm

from pipeline.executors.backend import Backend, Finished, failed
from pipeline.extract.run import extract_run
from pipeline.runspec import RunSpec


class InlineBackend(Backend):
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
            return [Finished(spec.run_id, extract_run(spec, self.store, self.custom, progress, self.device))]
        except Exception as exc:  # one bad run must not stop the corpus
            return [failed(spec.run_id, exc)]
        finally:
            bar.close()
