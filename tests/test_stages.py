"""The stage runner: dependency order, skipping stages whose inputs are unchanged, --force, --stage."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.stages import STAGES, Stage, order_stages, run_stages
from snapshot_loader.database import connect_writable

_TOY = '''
READS = {reads!r}
WRITES = {writes!r}
FIGURES = {{}}
CALLS = []


def run(con):
    CALLS.append(1)
    con.execute("CREATE OR REPLACE TABLE {out} AS SELECT count(*) AS n FROM {src}")
'''


def _toy(tmp_path: Path, name: str, reads: tuple[str, ...], out: str) -> Stage:
    path = tmp_path / f"toy_{name}.py"
    path.write_text(_TOY.format(reads=reads, writes=(out,), out=out, src=reads[0]))
    spec = importlib.util.spec_from_file_location(f"toy_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return Stage(name, module)


@pytest.fixture
def toy(tmp_path: Path):
    db = tmp_path / "corpus.duckdb"
    con = connect_writable(db)
    con.execute("INSERT INTO runs (run_id, dataset) VALUES ('r1', 'iris'), ('r2', 'wine')")
    con.close()
    # declared out of order: b reads what a writes, c reads runs only
    b = _toy(tmp_path, "b", ("analysis_a",), "analysis_b")
    a = _toy(tmp_path, "a", ("runs",), "analysis_a")
    c = _toy(tmp_path, "c", ("checkpoints",), "analysis_c")
    return db, order_stages([b, a, c])


def _calls(stages) -> dict[str, int]:
    return {s.name: len(s.module.CALLS) for s in stages}


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

    stages[0].module.run, original = boom, stages[0].module.run
    try:
        with pytest.raises(RuntimeError):
            run_stages(db, stages=stages, show_progress=False)
    finally:
        stages[0].module.run = original
    con = connect_writable(db)
    assert con.execute("SELECT n FROM analysis_a").fetchall() == [(2,)]
    con.close()
    assert run_stages(db, stages=stages, show_progress=False)["ran"] == ["a", "b"]
