"""What an analysis stage is: a declared object the runner orders, fingerprints and reports.

A stage module (or package) in ``analyses/`` exports one ``STAGE = Stage(...)``:

- ``reads``: the tables it reads (corpus tables or other stages' outputs), from which the runner
  derives the order;
- ``tables``: the tables it writes, each declared once with its columns and DuckDB types, and
  written with :func:`analyses.kit.tables.write_table`. A name is ``analysis_<stage>`` or
  ``analysis_<stage>_<what>``, or one of the derived corpus tables earlier issues named
  (:data:`DERIVED_TABLES`). ``verdicts=True`` adds ``analysis_<stage>_verdicts``
  (:data:`analyses.stats.verdict.VERDICT_COLUMNS`), which the verdicts stage collects, and declares the
  corpus table ``studies`` read (the verdicts' leave-one-study-out ranges read it);
- ``run(con)``: computes and writes them; the runner calls :meth:`Stage.execute`, which marks the stage
  as running so that :func:`analyses.kit.tables.write_table` writes only the tables it declares;
- ``figures``: :class:`Figure` (name ``<stage>[_<what>]``, a function of a read-only connection
  returning a matplotlib figure, a caption, and optionally an interactive version for the report);
- ``title``, ``doc`` (the stage's docstring: the report's intro and the stage's page in
  ``docs/analyses/``) and an optional ``report(con)`` returning ``{"paragraphs": [...], "tables":
  [{"caption", "sql"}]}`` for the HTML report.

A declaration that breaks these rules is refused when it is built, with the rule it breaks.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from analyses.stats.verdict import VERDICT_COLUMNS

#: Tables outside ``analysis_<stage>[_<what>]`` that earlier issues named, and the stage that writes each.
DERIVED_TABLES = {"findings": "diagnostics", "layer_topology": "topology", "layer_topology_bars": "topology",
                  "shadows": "propagation"}

Columns = Sequence[tuple[str, str]]
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
_BASE_TYPES = "VARCHAR|DOUBLE|FLOAT|INTEGER|BIGINT|HUGEINT|BOOLEAN|TIMESTAMP"
#: A declared column type: a base type, a list of one, or a MAP of two.
_TYPE = re.compile(rf"(?:{_BASE_TYPES})(?:\[\])?|MAP\((?:{_BASE_TYPES}), ?(?:{_BASE_TYPES})(?:\[\])?\)")


class StageDeclarationError(ValueError):
    """A stage declaration that breaks a rule of :mod:`analyses.kit.stage`."""


@dataclass(frozen=True)
class Figure:
    """A figure of the report: ``draw(con)`` returns a matplotlib figure drawn from the database alone.

    ``interactive(con)``, where declared, returns a Bokeh layout of the same rows (see
    :mod:`analyses.kit.interactive`): the report embeds it in place of the still image, so a reader can
    hover a point for its run and zoom; ``pipeline figures`` still writes ``draw``'s PNG and PDF.
    """

    name: str
    draw: Callable
    caption: str
    interactive: Callable | None = None


@dataclass(frozen=True)
class Stage:
    """One analysis stage (see the module docstring)."""

    name: str
    title: str
    doc: str
    reads: tuple[str, ...]
    tables: Mapping[str, Columns]
    run: Callable
    figures: tuple[Figure, ...] = ()
    report: Callable | None = None
    verdicts: bool = False
    #: The verdicts stage reads every other stage's verdict table; the runner fills ``reads`` in.
    collects_verdicts: bool = False
    #: The stage's module: the package of a stage package, or the module of a one-module stage (default:
    #: read off ``run``). The runner's fingerprint hashes the source of its import closure.
    module: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.name):
            raise StageDeclarationError(f"stage name {self.name!r}: lower-case letters, digits and '_' only")
        where = f"stage {self.name}"
        if not self.title or not self.doc or not self.doc.strip():
            raise StageDeclarationError(f"{where}: needs a title and a docstring (doc=__doc__)")
        tables = dict(self.tables)
        if self.verdicts:
            verdict_table = f"analysis_{self.name}_verdicts"
            if verdict_table in tables and list(tables[verdict_table]) != list(VERDICT_COLUMNS):
                raise StageDeclarationError(f"{where}: {verdict_table} has the shared verdict columns; "
                                            "verdicts=True declares it")
            tables[verdict_table] = VERDICT_COLUMNS
        for table, columns in tables.items():
            if not (table == f"analysis_{self.name}" or table.startswith(f"analysis_{self.name}_")
                    or DERIVED_TABLES.get(table) == self.name):
                raise StageDeclarationError(f"{where}: table {table!r} is not named analysis_{self.name}[_<what>]")
            names = [c for c, _ in columns]
            if not names or len(set(names)) != len(names):
                raise StageDeclarationError(f"{where}: table {table} declares no columns or one twice")
            for column, duck_type in columns:
                if not _TYPE.fullmatch(duck_type):
                    raise StageDeclarationError(f"{where}: {table}.{column}: unknown type {duck_type!r}")
        object.__setattr__(self, "tables", tables)
        # a verdict stage reads the study membership (the leave-one-study-out ranges): declared, so that a
        # study added over runs already present re-runs it
        reads = tuple(self.reads) + (("studies",) if self.verdicts and "studies" not in self.reads else ())
        object.__setattr__(self, "reads", reads)
        object.__setattr__(self, "figures", tuple(self.figures))
        seen: set[str] = set()
        for fig in self.figures:
            if not (fig.name == self.name or fig.name.startswith(f"{self.name}_")):
                raise StageDeclarationError(f"{where}: figure {fig.name!r} is not named {self.name}[_<what>]")
            if fig.name in seen:
                raise StageDeclarationError(f"{where}: figure {fig.name!r} declared twice")
            if not fig.caption.strip():
                raise StageDeclarationError(f"{where}: figure {fig.name!r} has no caption")
            seen.add(fig.name)
        if self.module is None:
            object.__setattr__(self, "module", _module_of(self.run, where))

    @property
    def writes(self) -> tuple[str, ...]:
        return tuple(self.tables)

    @property
    def intro(self) -> str:
        """The docstring's first paragraph, on one line."""
        return " ".join(inspect.cleandoc(self.doc).split("\n\n")[0].split())

    def execute(self, con) -> None:
        """Run the stage on ``con`` as the running stage (:func:`running_stage`)."""
        with _running(self):
            self.run(con)


_RUNNING: ContextVar[Stage | None] = ContextVar("running_stage", default=None)


def running_stage() -> Stage | None:
    """The stage :meth:`Stage.execute` is running, or None outside one."""
    return _RUNNING.get()


@contextmanager
def _running(stage: Stage) -> Iterator[None]:
    token = _RUNNING.set(stage)
    try:
        yield
    finally:
        _RUNNING.reset(token)


def _module_of(run: Callable, where: str) -> str:
    """The stage's module: the package ``analyses.<name>`` of a function defined inside a stage package,
    else the module ``run`` is defined in."""
    module = sys.modules.get(getattr(run, "__module__", None) or "")
    if not inspect.isfunction(run) or getattr(module, "__file__", None) is None:
        raise StageDeclarationError(f"{where}: run must be a function defined in a module file (got {run!r})")
    parts = module.__name__.split(".")
    if len(parts) > 2 and parts[0] == "analyses":  # a module inside a stage package: the whole package
        return ".".join(parts[:2])
    return module.__name__
