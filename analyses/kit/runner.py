"""The runner of the analysis stages.

The stages are declared in ``analyses/`` (:class:`analyses.kit.stage.Stage`) and collected, in dependency
order, by :mod:`analyses.kit.registry`. The runner skips a stage whose *fingerprint* is unchanged since it
last ran. The fingerprint hashes

- the stage's code: the source of every project module in its import closure (its own package or
  module, what that imports, transitively, and their parent packages; :func:`code_closure`, read off
  the import graph by grimp), so an edit re-runs exactly the stages that import the edited module;
- the numerical libraries' versions (:func:`library_versions`): an upgrade can change any number;
- for every table it reads, the row count and the sum of the DuckDB ``hash`` of each row, so any
  insert, delete or update of an input re-runs the stage, and through its outputs everything downstream.

Fingerprints live in the ``stage_runs`` table. Each stage runs in one transaction with its fingerprint
update, so an interrupted or failed stage leaves the previous outputs and fingerprint in place.

With ``check_reads`` each stage runs in a sandbox catalog that holds views of the tables it declares
it reads and nothing else, so any undeclared read (its own SQL, or the kit's on its behalf) fails,
naming the table; its outputs are then copied into the database in one transaction.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import time
from importlib import metadata
from pathlib import Path

import duckdb
import grimp
from tqdm import tqdm

from analyses.kit import registry
from analyses.kit.stage import Stage, StageDeclarationError
from pipeline.errors import PipelineError
from snapshot_loader.database import connect_writable

_STAGE_RUNS_DDL = """CREATE TABLE IF NOT EXISTS stage_runs (
    stage VARCHAR PRIMARY KEY, fingerprint VARCHAR, ran_at TIMESTAMP, seconds DOUBLE)"""

#: Libraries whose version enters every stage's fingerprint: an upgrade can change any number.
_FINGERPRINT_PACKAGES = ("numpy", "scipy", "scikit-learn", "statsmodels", "umap-learn", "duckdb", "polars",
                         "torch", "matplotlib", "seaborn", "ripser", "persim")
#: The project's packages a stage may import (reports and the CLI sit above the stages).
_PROJECT_PACKAGES = ("analyses", "pipeline", "snapshot_loader")
_SANDBOX = "__stage_sandbox"


@functools.cache
def library_versions() -> str:
    """``name=version`` of every library in :data:`_FINGERPRINT_PACKAGES`, joined."""
    out = []
    for package in _FINGERPRINT_PACKAGES:
        try:
            out.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(f"{package}=absent")
    return ",".join(out)


@functools.cache
def _import_graph() -> grimp.ImportGraph:
    """The project's import graph, built once per :func:`run_stages` call (its cache is cleared there)."""
    return grimp.build_graph(*_PROJECT_PACKAGES, cache_dir=None)


def code_closure(module: str) -> tuple[str, ...]:
    """Every module the stage module ``module`` runs: itself and its submodules, every project module
    they import (at any depth, function-local imports included), the parent packages of all of these
    (their ``__init__`` runs on import), what those import, and so on until nothing is added. A module
    outside the project's packages (a test's stage) is its own closure."""
    graph = _import_graph()
    if module not in graph.modules:
        return (module,)
    closure = {module} | (graph.find_descendants(module) if graph.find_children(module) else set())
    frontier = set(closure)
    while frontier:
        found = set()
        for m in frontier:
            found |= graph.find_upstream_modules(m)
            parts = m.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts)))
        frontier = found - closure
        closure |= frontier
    return tuple(sorted(closure))


def _module_source(module: str) -> bytes:
    """The source file of ``module`` as it is on disk now (read at every fingerprint: a few hundred
    small files, so a long-lived process that edits and reloads a stage sees the edit)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.has_location:
        raise PipelineError(f"analyses: no source file for module {module}")
    return Path(spec.origin).read_bytes()


def code_hash(stage: Stage) -> str:
    """Hash of the source of the stage's import closure (:func:`code_closure`) and the library versions."""
    h = hashlib.sha256(library_versions().encode())
    for module in code_closure(stage.module):
        h.update(module.encode() + b"\0")
        h.update(_module_source(module))
    return h.hexdigest()[:16]


def _load_stages() -> tuple[Stage, ...]:
    try:
        return registry.stages()
    except StageDeclarationError as exc:
        raise PipelineError(f"analyses: {exc}") from None


STAGES: tuple[Stage, ...] = _load_stages()


def select_stages(names: list[str] | None, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    if not names:
        return list(stages)
    known = {s.name: s for s in stages}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PipelineError(f"unknown stage {unknown[0]!r} (choose from {', '.join(known)})", field="stages")
    return [s for s in stages if s.name in names]


def _existing_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                      "WHERE table_catalog = current_database()").fetchall()}


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """Row count and the sum of row hashes (mod 2^128, order-independent; unlike a xor, a duplicated
    row does not cancel): changes with any insert, delete or update of the table."""
    n, h = con.execute(f'SELECT count(*), sum(hash(t)::HUGEINT) FROM "{table}" t').fetchall()[0]
    return f"{n}:{h}"


def stage_fingerprint(con: duckdb.DuckDBPyConnection, stage: Stage, existing: set[str],
                      cache: dict[str, str] | None = None) -> str:
    """Hash of the stage's code (:func:`code_hash`) and its inputs' table fingerprints (``cache``: table ->
    fingerprint of tables hashed earlier in the same call and not written since)."""
    cache = {} if cache is None else cache
    parts = [stage.name, code_hash(stage)]
    for table in sorted(stage.reads):
        if table not in existing:
            parts.append(f"{table}=missing")
            continue
        if table not in cache:
            cache[table] = table_fingerprint(con, table)
        parts.append(f"{table}={cache[table]}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def run_stages(db_path: Path, names: list[str] | None = None, force: bool = False,
               show_progress: bool | None = None, stages: tuple[Stage, ...] = STAGES,
               check_reads: bool = False) -> dict[str, list[str]]:
    """Run the selected stages (all of ``stages`` by default) in dependency order against the database.

    A stage is skipped when its fingerprint matches the last run and its outputs exist, unless
    ``force``. ``check_reads`` runs each stage in a sandbox that holds only the tables it declares it
    reads (see the module docstring). Returns ``{"ran": [...], "skipped": [...]}``.
    """
    stages = select_stages(names, stages)
    _import_graph.cache_clear()  # imports edited since the last call count
    con = connect_writable(db_path, create=False)
    ran, skipped = [], []
    fingerprints: dict[str, str] = {}
    try:
        n_runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
        if n_runs == 0:
            raise PipelineError(f"{db_path}: no runs ingested yet: extract and ingest the corpus first")
        con.execute(_STAGE_RUNS_DDL)
        previous = dict(con.execute("SELECT stage, fingerprint FROM stage_runs").fetchall())
        bar = tqdm(stages, desc="stages", unit="stage",
                   disable=None if show_progress is None else not show_progress)
        for stage in bar:
            bar.set_postfix_str(stage.name)
            existing = _existing_tables(con)
            absent = [t for t in stage.reads if t not in existing]
            if absent:
                raise PipelineError(f"stage {stage.name} reads {absent[0]}, which {db_path} does not have: "
                                    "run every stage first")
            fingerprint = stage_fingerprint(con, stage, existing, fingerprints)
            if (not force and previous.get(stage.name) == fingerprint
                    and all(t in existing for t in stage.writes)):
                skipped.append(stage.name)
                continue
            started = time.perf_counter()
            if check_reads:
                _run_sandboxed(con, stage)
            con.execute("BEGIN TRANSACTION")
            try:
                if check_reads:
                    _copy_outputs(con, stage)
                else:
                    stage.execute(con)
                missing = [t for t in stage.writes if t not in _existing_tables(con)]
                if missing:
                    raise PipelineError(f"stage {stage.name} did not write {', '.join(missing)}")
                con.execute("INSERT OR REPLACE INTO stage_runs VALUES (?, ?, now(), ?)",
                            [stage.name, fingerprint, time.perf_counter() - started])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                if check_reads:
                    con.execute(f"DETACH DATABASE IF EXISTS {_SANDBOX}")
            ran.append(stage.name)
            for table in stage.writes:
                fingerprints.pop(table, None)
    finally:
        con.close()
    return {"ran": ran, "skipped": skipped}


def _run_sandboxed(con: duckdb.DuckDBPyConnection, stage: Stage) -> None:
    """Run ``stage`` in an in-memory catalog holding views of its declared reads only. A read of any
    other table raises :class:`PipelineError` naming the stage and the table; so does a table it
    writes but does not declare. (A query that names the database's own catalog, ``corpus.runs``,
    reaches past the sandbox: stages name tables unqualified.)"""
    home = con.execute("SELECT current_database()").fetchall()[0][0]
    con.execute(f"DETACH DATABASE IF EXISTS {_SANDBOX}")
    con.execute(f"ATTACH ':memory:' AS {_SANDBOX}")
    try:
        for table in stage.reads:
            con.execute(f'CREATE VIEW {_SANDBOX}.main."{table}" AS SELECT * FROM "{home}".main."{table}"')
        con.execute(f"USE {_SANDBOX}")
        try:
            stage.execute(con)
        except duckdb.CatalogException as exc:
            missing = _MISSING_TABLE.search(str(exc))
            if missing is None:
                raise
            raise PipelineError(f"stage {stage.name} reads {missing.group(1)}, a table it does not declare "
                                f"({', '.join(stage.reads)})") from exc
        finally:
            con.execute(f'USE "{home}"')
        undeclared = sorted(set(_sandbox_tables(con)) - set(stage.writes))
        if undeclared:
            raise PipelineError(f"stage {stage.name} writes {undeclared[0]}, a table it does not declare")
    except BaseException:
        con.execute(f"DETACH DATABASE IF EXISTS {_SANDBOX}")
        raise


#: DuckDB's message for an unknown table (or view) name.
_MISSING_TABLE = re.compile(r"Table with name ([^ ]+) does not exist")


def _sandbox_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                      "WHERE table_catalog = ? AND table_type = 'BASE TABLE'", [_SANDBOX]).fetchall()]


def _copy_outputs(con: duckdb.DuckDBPyConnection, stage: Stage) -> None:
    """Copy the tables a sandboxed stage wrote into the database (inside the caller's transaction)."""
    written = set(_sandbox_tables(con))
    for table in stage.writes:
        if table in written:
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM {_SANDBOX}.main."{table}"')


def all_figures() -> dict[str, object]:
    """Every stage's figures (:class:`analyses.kit.stage.Figure`), by name, in stage order."""
    return registry.figures()
