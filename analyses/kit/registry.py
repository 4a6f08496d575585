"""Every analysis stage, found by itself: each module or package of ``analyses/`` that exports
``STAGE`` (:class:`analyses.kit.stage.Stage`), in dependency order.

The order is topological on what each stage reads and writes, ties broken by name; the verdicts
stage reads every stage's verdict table. Two stages writing one table, two figures of one name, or
a cycle are refused when the registry is built.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from graphlib import CycleError, TopologicalSorter

import analyses
from analyses.kit.stage import Stage, StageDeclarationError


def order_stages(stages: list[Stage]) -> tuple[Stage, ...]:
    """Topological order by ``reads``/``writes``, ties kept in the given order."""
    writer: dict[str, Stage] = {}
    for s in stages:
        for t in s.writes:
            if t in writer:
                raise StageDeclarationError(f"stages {writer[t].name} and {s.name} both write {t}")
            writer[t] = s
    graph = {s.name: {writer[t].name for t in s.reads if t in writer and writer[t] is not s} for s in stages}
    sorter = TopologicalSorter(graph)
    try:
        sorter.prepare()
    except CycleError as exc:
        raise StageDeclarationError(f"analysis stages form a cycle: {exc.args[1]}") from None
    by_name = {s.name: s for s in stages}
    rank = {s.name: i for i, s in enumerate(stages)}
    out: list[Stage] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=rank.__getitem__)
        out += [by_name[n] for n in ready]
        sorter.done(*ready)
    return tuple(out)


def collect(stages: list[Stage]) -> tuple[Stage, ...]:
    """Check the declarations against each other, fill in the verdict collector's reads, and order."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise StageDeclarationError(f"two stages are named {sorted(n for n in names if names.count(n) > 1)[0]}")
    figures: dict[str, str] = {}
    for s in stages:
        for fig in s.figures:
            if fig.name in figures:
                raise StageDeclarationError(f"figure {fig.name} declared by stages {figures[fig.name]} and {s.name}")
            figures[fig.name] = s.name
    collectors = [s.name for s in stages if s.collects_verdicts]
    if len(collectors) > 1:
        raise StageDeclarationError(f"stages {' and '.join(collectors)} both collect the verdicts")
    by_name = sorted(stages, key=lambda s: s.name)
    writers = tuple(f"analysis_{s.name}_verdicts" for s in by_name if s.verdicts)
    ordered = order_stages([dataclasses.replace(s, reads=writers, module=s.module) if s.collects_verdicts else s
                            for s in by_name])
    # the collector reads the verdict tables in the order their stages run, so analysis_verdicts lists them so
    in_order = tuple(f"analysis_{s.name}_verdicts" for s in ordered if s.verdicts)
    return tuple(dataclasses.replace(s, reads=in_order, module=s.module) if s.collects_verdicts else s
                 for s in ordered)


@functools.cache
def stages() -> tuple[Stage, ...]:
    """Every declared stage of ``analyses/``, in the order the runner runs them."""
    found = []
    for info in pkgutil.iter_modules(analyses.__path__):
        module = importlib.import_module(f"analyses.{info.name}")
        stage = getattr(module, "STAGE", None)
        if isinstance(stage, Stage):
            found.append(stage)
    return collect(found)


def figures() -> dict[str, object]:
    """Every declared figure (:class:`analyses.kit.stage.Figure`), by name, in stage order."""
    return {fig.name: fig for s in stages() for fig in s.figures}


def verdict_tables() -> tuple[str, ...]:
    """The verdict tables the verdicts stage collects, in its order."""
    return next(s.reads for s in stages() if s.collects_verdicts)
