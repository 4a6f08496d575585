"""The runner of the analysis stages.

The stages are declared in ``analyses/`` (:class:`analyses.stage.Stage`) and collected, in dependency
order, by :mod:`analyses.registry`. The runner skips a stage whose *fingerprint* is unchanged since it
last ran. The fingerprint is a hash of the stage's source, of the project's code and numerical
libraries' versions (:func:`code_version`), and, for every table it reads, the row count and the sum
of the DuckDB ``hash`` of each row, so any insert, delete or update of an input (or an edit of the
code) re-runs the stage and everything downstream. Fingerprints live in the ``stage_runs`` table.
Each stage runs in one transaction with its fingerprint update, so an interrupted or failed stage
leaves the previous outputs and fingerprint in place.
"""

from __future__ import annotations

import functools
import hashlib
import time
from importlib import metadata
from pathlib import Path

import duckdb
from tqdm import tqdm

from analyses import registry
from analyses.stage import Stage, StageDeclarationError
from pipeline.errors import PipelineError
from snapshot_loader.database import connect_writable

_STAGE_RUNS_DDL = """CREATE TABLE IF NOT EXISTS stage_runs (
    stage VARCHAR PRIMARY KEY, fingerprint VARCHAR, ran_at TIMESTAMP, seconds DOUBLE)"""


#: Libraries whose version enters every stage's fingerprint: an upgrade can change any number.
_FINGERPRINT_PACKAGES = ("numpy", "scipy", "scikit-learn", "statsmodels", "umap-learn", "duckdb", "polars",
                         "torch", "matplotlib", "seaborn")
_PROJECT = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    """Hash of every project source file a stage can reach (analyses/, pipeline/, snapshot_loader/) and
    of the numerical libraries' versions. Conservative on purpose: a stage calls shared helpers
    (verdict rule, feature catalog, curvature engine), so an edit of any of them re-runs every stage."""
    h = hashlib.sha256()
    for folder in ("analyses", "pipeline", "snapshot_loader"):
        for path in sorted((_PROJECT / folder).rglob("*.py")):
            h.update(str(path.relative_to(_PROJECT)).encode())
            h.update(path.read_bytes())
    for package in _FINGERPRINT_PACKAGES:
        try:
            h.update(f"{package}={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{package}=absent".encode())
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
        raise PipelineError(f"--stage: unknown stage {unknown[0]!r} (choose from {', '.join(known)})")
    return [s for s in stages if s.name in names]


def _existing_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """Row count and the sum of row hashes (mod 2^128, order-independent; unlike a xor, a duplicated
    row does not cancel): changes with any insert, delete or update of the table."""
    n, h = con.execute(f'SELECT count(*), sum(hash(t)::HUGEINT) FROM "{table}" t').fetchall()[0]
    return f"{n}:{h}"


def stage_fingerprint(con: duckdb.DuckDBPyConnection, stage: Stage, existing: set[str],
                      cache: dict[str, str] | None = None) -> str:
    """Hash of the stage's source and its inputs' table fingerprints (``cache``: table -> fingerprint
    of tables hashed earlier in the same call and not written since)."""
    cache = {} if cache is None else cache
    parts = [stage.name, stage.source_hash, code_version()]
    for table in sorted(stage.reads):
        if table not in existing:
            parts.append(f"{table}=missing")
            continue
        if table not in cache:
            cache[table] = table_fingerprint(con, table)
        parts.append(f"{table}={cache[table]}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def run_stages(db_path: Path, names: list[str] | None = None, force: bool = False,
               show_progress: bool | None = None, stages: tuple[Stage, ...] = STAGES) -> dict[str, list[str]]:
    """Run the selected stages (all of ``stages`` by default) in dependency order against the database.

    A stage is skipped when its fingerprint matches the last run and its outputs exist, unless
    ``force``. Returns ``{"ran": [...], "skipped": [...]}``.
    """
    stages = select_stages(names, stages)
    con = connect_writable(db_path)
    ran, skipped = [], []
    fingerprints: dict[str, str] = {}
    try:
        n_runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
        if n_runs == 0:
            raise PipelineError(f"{db_path}: no runs ingested yet: run `pipeline extract` and `pipeline ingest`")
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
                                    "run `pipeline analyze` without --stage first")
            fingerprint = stage_fingerprint(con, stage, existing, fingerprints)
            if (not force and previous.get(stage.name) == fingerprint
                    and all(t in existing for t in stage.writes)):
                skipped.append(stage.name)
                continue
            started = time.perf_counter()
            con.execute("BEGIN TRANSACTION")
            try:
                stage.run(con)
                missing = [t for t in stage.writes if t not in _existing_tables(con)]
                if missing:
                    raise PipelineError(f"stage {stage.name} did not write {', '.join(missing)}")
                con.execute("INSERT OR REPLACE INTO stage_runs VALUES (?, ?, now(), ?)",
                            [stage.name, fingerprint, time.perf_counter() - started])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            ran.append(stage.name)
            for table in stage.writes:
                fingerprints.pop(table, None)
    finally:
        con.close()
    return {"ran": ran, "skipped": skipped}


def all_figures() -> dict[str, object]:
    """Every stage's figures (:class:`analyses.stage.Figure`), by name, in stage order."""
    return registry.figures()
