"""Timing and memory helpers the benchmarks share."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import psutil


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of fn()."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (coordinator, workers, managers)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total
