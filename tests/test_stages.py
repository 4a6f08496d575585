"""The stage runner: dependency order, skipping stages whose inputs are unchanged, --force, --stage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from analyses.registry import order_stages
from analyses.stage import Stage
from pipeline.errors import PipelineError
from pipeline.stages import STAGES, run_stages
from snapshot_loader.database import connect_writable

CALLS: dict[str, int] = {}


def _toy(name: str, reads: tuple[str, ...], out: str) -> Stage:
    def run(con):
        CALLS[name] = CALLS.get(name, 0) + 1
        con.execute(f"CREATE OR REPLACE TABLE {out} AS SELECT count(*) AS n FROM {reads[0]}")

    return Stage(name, f"Toy {name}", f"Toy stage {name}.", reads, {out: [("n", "BIGINT")]}, run,
                 source=Path(__file__))


@pytest.fixture
def toy(tmp_path: Path):
    db = tmp_path / "corpus.duckdb"
    con = connect_writable(db)
    con.execute("INSERT INTO runs (run_id, dataset) VALUES ('r1', 'iris'), ('r2', 'wine')")
    con.close()
    # declared out of order: b reads what a writes, c reads runs only
    CALLS.clear()
    b = _toy("b", ("analysis_a",), "analysis_b")
    a = _toy("a", ("runs",), "analysis_a")
    c = _toy("c", ("checkpoints",), "analysis_c")
    return db, order_stages([b, a, c])


def _calls(stages) -> dict[str, int]:
    return {s.name: CALLS.get(s.name, 0) for s in stages}


def test_order_follows_reads_and_writes(toy):
    _, stages = toy
    assert [s.name for s in stages] == ["a", "c", "b"]


def test_the_project_stages_are_ordered_and_write_analysis_tables():
    position = {t: i for i, s in enumerate(STAGES) for t in s.writes}
    for i, stage in enumerate(STAGES):
        assert all(position.get(t, -1) < i for t in stage.reads), stage.name
        derived = ("analysis_", "findings", "layer_topology", "shadows")
        assert all(t.startswith(derived) for t in stage.writes), stage.name


def test_unchanged_inputs_skip_and_changed_inputs_rerun_downstream(toy):
    db, stages = toy
    assert run_stages(db, stages=stages, show_progress=False)["ran"] == ["a", "c", "b"]
    again = run_stages(db, stages=stages, show_progress=False)
    assert again == {"ran": [], "skipped": ["a", "c", "b"]}
    con = connect_writable(db)
    con.execute("UPDATE runs SET dataset = 'glass' WHERE run_id = 'r2'")  # same count, new content
    con.close()
    # a re-runs; b's input table is rewritten with the same content, so b is skipped; c is unaffected
    assert run_stages(db, stages=stages, show_progress=False) == {"ran": ["a"], "skipped": ["c", "b"]}
    con = connect_writable(db)
    con.execute("INSERT INTO runs (run_id, dataset) VALUES ('r3', 'iris')")
    con.close()
    assert run_stages(db, stages=stages, show_progress=False)["ran"] == ["a", "b"]
    assert _calls(stages) == {"a": 3, "c": 1, "b": 2}


def test_force_reruns_everything_and_a_dropped_output_is_rebuilt(toy):
    db, stages = toy
    run_stages(db, stages=stages, show_progress=False)
    assert run_stages(db, force=True, stages=stages, show_progress=False)["ran"] == ["a", "c", "b"]
    con = connect_writable(db)
    con.execute("DROP TABLE analysis_c")
    con.close()
    assert run_stages(db, stages=stages, show_progress=False)["ran"] == ["c"]


def test_one_stage_and_its_missing_inputs(toy):
    db, stages = toy
    with pytest.raises(PipelineError, match="stage b reads analysis_a"):
        run_stages(db, names=["b"], stages=stages, show_progress=False)
    assert run_stages(db, names=["a"], stages=stages, show_progress=False)["ran"] == ["a"]
    assert run_stages(db, names=["b"], stages=stages, show_progress=False)["ran"] == ["b"]
    with pytest.raises(PipelineError, match="unknown stage 'zzz'"):
        run_stages(db, names=["zzz"], stages=stages, show_progress=False)


def test_a_failing_stage_leaves_the_previous_outputs(toy, tmp_path):
    db, stages = toy
    run_stages(db, stages=stages, show_progress=False)
    con = connect_writable(db)
    con.execute("INSERT INTO runs (run_id, dataset) VALUES ('r4', 'iris')")
    con.close()

    def boom(con):
        con.execute("CREATE OR REPLACE TABLE analysis_a AS SELECT 99 AS n")
        raise RuntimeError("stage failed")

    failing = (dataclasses.replace(stages[0], run=boom), *stages[1:])
    with pytest.raises(RuntimeError):
        run_stages(db, stages=failing, show_progress=False)
    con = connect_writable(db)
    assert con.execute("SELECT n FROM analysis_a").fetchall() == [(2,)]
    con.close()
    assert run_stages(db, stages=stages, show_progress=False)["ran"] == ["a", "b"]
