"""Spawned workers that die with their coordinator from their first line of Python on.

A spawned worker unpickles its target and arguments before any of its own code runs, and
unpickling the extraction worker imports torch and the whole pipeline: seconds, and more than ten
under load. A coordinator killed in that window left the worker alive until it reached its own
parent check. :func:`guarded_main` is the target instead: this module imports nothing heavy, so the
worker asks for ``PR_SET_PDEATHSIG`` and checks its parent within its interpreter's start-up, and
only then unpickles (and imports) the real work.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op where prctl is missing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def guarded_payload(target: Callable, *args) -> bytes:
    """``(target, args)`` pickled now, in the parent, to be unpickled by :func:`guarded_main`."""
    return bytes(ForkingPickler.dumps((target, args)))


def guarded_main(parent: int, payload: bytes, *direct) -> None:
    """Die with ``parent`` (its pid), then run ``target(*direct, *args)`` from the payload.

    ``direct`` are arguments that need multiprocessing's own pickling at spawn time (pipe ends);
    they must be cheap to unpickle. Returns at once when the parent is already gone."""
    die_with_parent()
    if os.getppid() != parent:
        return
    target, args = pickle.loads(payload)
    target(*direct, *args)
