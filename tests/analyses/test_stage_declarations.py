"""A stage is a declared object: the rules a declaration must keep are enforced when it is built, the
registry finds every stage by itself, and tables are written only as declared."""

from __future__ import annotations

import dataclasses
import functools

import duckdb
import polars as pl
import pytest

from analyses.kit import registry
from analyses.kit.stage import Figure, Stage, StageDeclarationError
from analyses.kit.tables import write_declared
from pipeline.errors import PipelineError

COLS = [("n", "INTEGER")]


def _run(con):
    return None


def _stage(name="toy", **kw):
    args = {"title": "Toy", "doc": "A toy stage.", "reads": ("runs",), "tables": {f"analysis_{name}": COLS},
            "run": _run, **kw}
    return Stage(name=name, **args)


def _draw(con):
    return None


def test_a_table_outside_analysis_stage_is_refused():
    with pytest.raises(StageDeclarationError, match="'analysis_other' is not named analysis_toy"):
        _stage(tables={"analysis_other": COLS})
    with pytest.raises(StageDeclarationError, match="'findings'"):
        _stage(tables={"findings": COLS})  # a derived table belongs to its own stage
    assert _stage(tables={"analysis_toy_rates": COLS}).writes == ("analysis_toy_rates",)


def test_figures_need_their_stage_prefix_a_caption_and_one_name_each():
    with pytest.raises(StageDeclarationError, match="no caption"):
        _stage(figures=[Figure("toy_map", _draw, "  ")])
    with pytest.raises(StageDeclarationError, match="declared twice"):
        _stage(figures=[Figure("toy_map", _draw, "a"), Figure("toy_map", _draw, "b")])
    with pytest.raises(StageDeclarationError, match="not named toy"):
        _stage(figures=[Figure("map", _draw, "a")])


def test_a_stage_needs_a_docstring_and_columns_declared_once():
    with pytest.raises(StageDeclarationError, match="docstring"):
        _stage(doc="")
    with pytest.raises(StageDeclarationError, match="one twice"):
        _stage(tables={"analysis_toy": [("n", "INTEGER"), ("n", "DOUBLE")]})


def test_verdicts_add_the_verdict_table_and_column_types_are_checked():
    assert _stage(verdicts=True).writes == ("analysis_toy", "analysis_toy_verdicts")
    with pytest.raises(StageDeclarationError, match="verdicts=True declares it"):
        _stage(verdicts=True, tables={"analysis_toy": COLS, "analysis_toy_verdicts": COLS})
    with pytest.raises(StageDeclarationError, match="unknown type 'DOUBEL'"):
        _stage(tables={"analysis_toy": [("x", "DOUBEL")]})
    assert _stage(tables={"analysis_toy": [("m", "MAP(VARCHAR, DOUBLE)"), ("v", "DOUBLE[]")]})


def test_the_fingerprint_source_is_the_stage_package_or_module():
    from analyses import cca, overview

    assert cca.STAGE.module == "analyses.cca"
    assert overview.STAGE.module == "analyses.overview"
    with pytest.raises(StageDeclarationError, match="run must be a function"):
        _stage(run=functools.partial(_run))


def test_the_registry_refuses_a_figure_of_two_stages_and_a_table_of_two_writers():
    a = _stage("a", figures=[Figure("a_map", _draw, "x")])
    twin = Stage("a", "A", "doc", (), {"analysis_a_more": COLS}, _run)
    with pytest.raises(StageDeclarationError, match="two stages are named a"):
        registry.collect([a, twin])
    # a figure whose name another stage's prefix also matches: "a_map" fits a stage named "a_map"... or "a"
    b = Stage("a_b", "B", "doc", (), {"analysis_a_b": COLS}, _run, figures=[Figure("a_b_map", _draw, "x")])
    a2 = _stage("a", figures=[Figure("a_b_map", _draw, "x")])
    with pytest.raises(StageDeclarationError, match="figure a_b_map declared by stages a_b and a"):
        registry.collect([b, a2])
    with pytest.raises(StageDeclarationError, match="both write analysis_b"):
        registry.order_stages([_stage("b"), _stage("b", tables={"analysis_b": COLS})])


def test_the_registry_orders_by_reads_and_fills_in_the_verdict_collector():
    a = _stage("a", reads=("analysis_b",), verdicts=True)
    b = _stage("b", verdicts=True)
    v = Stage("verdicts", "V", "doc", (), {"analysis_verdicts": COLS}, _run, collects_verdicts=True)
    ordered = registry.collect([v, a, b])
    assert [s.name for s in ordered] == ["b", "a", "verdicts"]
    assert ordered[-1].reads == ("analysis_b_verdicts", "analysis_a_verdicts")  # in the order they run
    with pytest.raises(StageDeclarationError, match="both collect the verdicts"):
        registry.collect([v, dataclasses.replace(v, name="verdicts2", tables={"analysis_verdicts2": COLS})])
    cyclic = [_stage("a", reads=("analysis_b",)), _stage("b", reads=("analysis_a",))]
    with pytest.raises(StageDeclarationError, match="cycle"):
        registry.collect(cyclic)


def test_every_stage_of_the_project_is_found_and_its_figures_are_unique():
    stages = registry.stages()
    names = [s.name for s in stages]
    assert names[-1] == "verdicts" and "overview" in names
    assert len(registry.figures()) == sum(len(s.figures) for s in stages)
    collector = stages[-1]
    assert set(collector.reads) == {f"analysis_{s.name}_verdicts" for s in stages if s.verdicts}


def test_write_table_writes_the_declared_columns_in_order_and_types():
    con = duckdb.connect()
    write_declared(con, "analysis_toy", [("a", "INTEGER"), ("b", "VARCHAR")], pl.DataFrame({"b": ["x"], "a": [1.0]}))
    assert con.execute("SELECT * FROM analysis_toy").fetchall() == [(1, "x")]
    assert [r[1] for r in con.execute("DESCRIBE analysis_toy").fetchall()] == ["INTEGER", "VARCHAR"]
    write_declared(con, "analysis_toy", [("a", "INTEGER"), ("b", "VARCHAR")], "SELECT 'y' AS b, 2 AS a")
    assert con.execute("SELECT * FROM analysis_toy").fetchall() == [(2, "y")]
    with pytest.raises(PipelineError, match=r"analysis_toy: .*missing \['b'\], undeclared \['c'\]"):
        write_declared(con, "analysis_toy", [("a", "INTEGER"), ("b", "VARCHAR")], pl.DataFrame({"a": [1], "c": [2]}))
    write_declared(con, "analysis_toy", [("a", "INTEGER"), ("b", "VARCHAR")], pl.DataFrame())
    assert con.execute("SELECT count(*) FROM analysis_toy").fetchone() == (0,)


def test_write_table_reads_the_old_rows_of_the_table_it_rewrites_and_keeps_them_on_a_mismatch():
    import pyarrow as pa

    cols = [("a", "INTEGER"), ("x", "DOUBLE")]
    con = duckdb.connect()
    write_declared(con, "analysis_toy", cols, pl.DataFrame({"a": [1, 2], "x": [1.0, 2.0]}))
    write_declared(con, "analysis_toy", cols, "SELECT a, x + 1 AS x FROM analysis_toy")
    assert con.execute("SELECT * FROM analysis_toy ORDER BY a").fetchall() == [(1, 2.0), (2, 3.0)]
    with pytest.raises(PipelineError, match="missing"):
        write_declared(con, "analysis_toy", cols, pl.DataFrame({"a": [9]}))
    assert con.execute("SELECT count(*) FROM analysis_toy").fetchall() == [(2,)]
    write_declared(con, "analysis_toy", cols, pa.table({"x": [5.0], "a": [7]}))
    assert con.execute("SELECT * FROM analysis_toy").fetchall() == [(7, 5.0)]


def test_a_verdict_stage_declares_the_studies_it_reads_so_a_new_study_re_runs_it():
    """The verdicts' leave-one-study-out ranges read ``studies``: declared, a study added over runs already
    in the database changes the stage's fingerprint (before, it was read but not declared, and the verdict
    stages were skipped with stale ranges)."""
    from analyses.kit.runner import stage_fingerprint

    st = _stage(verdicts=True)
    assert "studies" in st.reads and "studies" not in _stage().reads
    assert all("studies" in s.reads for s in registry.stages() if s.verdicts)
    con = duckdb.connect()
    con.execute("CREATE TABLE studies (corpus VARCHAR, study VARCHAR, run_id VARCHAR)")
    con.execute("INSERT INTO studies VALUES ('c', 'a', 'r1'), ('c', 'a', 'r2')")
    before = stage_fingerprint(con, st, {"studies"})
    con.execute("INSERT INTO studies VALUES ('c', 'b', 'r1')")  # a new study over an existing run
    assert stage_fingerprint(con, st, {"studies"}) != before
