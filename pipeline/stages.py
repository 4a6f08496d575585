"""The analysis stages and their runner.

A stage is a module in ``analyses/`` with ``READS`` (tables it reads), ``WRITES`` (tables it
writes, named ``analysis_<stage>[_<what>]``), ``run(con)`` and ``FIGURES`` (name -> function of a
read-only connection returning a matplotlib figure). Stages run in the listed order, each in one
transaction, so a failed stage leaves the previous tables in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

from analyses import overview
from pipeline.errors import PipelineError
from snapshot_loader.database import connect_writable


@dataclass(frozen=True)
class Stage:
    name: str
    module: ModuleType

    @property
    def reads(self) -> tuple[str, ...]:
        return self.module.READS

    @property
    def writes(self) -> tuple[str, ...]:
        return self.module.WRITES


STAGES: tuple[Stage, ...] = (Stage("overview", overview),)


def select_stages(names: list[str] | None) -> list[Stage]:
    if not names:
        return list(STAGES)
    known = {s.name: s for s in STAGES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PipelineError(f"--stage: unknown stage {unknown[0]!r} (choose from {', '.join(known)})")
    return [known[n] for n in names]


def run_stages(db_path: Path, names: list[str] | None = None, show_progress: bool | None = None) -> list[str]:
    """Run the selected stages (all by default) against the database; returns their names."""
    stages = select_stages(names)
    con = connect_writable(db_path)
    try:
        n_runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
        if n_runs == 0:
            raise PipelineError(f"{db_path}: no runs ingested yet: run `pipeline extract` and `pipeline ingest`")
        for stage in tqdm(stages, desc="stages", unit="stage", disable=None if show_progress is None
                          else not show_progress):
            con.execute("BEGIN TRANSACTION")
            try:
                stage.module.run(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    finally:
        con.close()
    return [s.name for s in stages]


def all_figures() -> dict[str, object]:
    """Every stage's figure functions, by figure name."""
    out: dict[str, object] = {}
    for stage in STAGES:
        out.update(stage.module.FIGURES)
    return out
