"""Writing a declared analysis table.

Every analysis table is declared once, in its stage's ``tables`` (columns and DuckDB types, the
corpus schema's form), and written only through :func:`write_table`, which creates it from the
declaration and inserts the rows by column name, so a stage cannot write a column it did not
declare or leave one out.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa

from analyses.kit.stage import running_stage
from analyses.stats.verdict import VERDICT_COLUMNS, Verdict, verdict_rows
from pipeline.errors import PipelineError

Rows = pl.DataFrame | pd.DataFrame | pa.Table | duckdb.DuckDBPyRelation | str

_counter = itertools.count()


def declared_columns(name: str) -> list[tuple[str, str]]:
    """The declared ``(column, type)`` list of table ``name`` of the running stage
    (:meth:`analyses.kit.stage.Stage.execute`): a stage writes only the tables it declares."""
    stage = running_stage()
    if stage is None:
        raise PipelineError(f"analysis table {name}: written outside a running stage (call STAGE.execute(con))")
    if name not in stage.tables:
        raise PipelineError(f"analysis table {name}: stage {stage.name} does not declare it")
    return list(stage.tables[name])


def column_ddl(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f'"{c}" {t}' for c, t in columns)


_POLARS = {"VARCHAR": pl.Utf8, "DOUBLE": pl.Float64, "FLOAT": pl.Float32, "INTEGER": pl.Int32,
           "BIGINT": pl.Int64, "HUGEINT": pl.Int128, "BOOLEAN": pl.Boolean, "TIMESTAMP": pl.Datetime("us")}


def polars_type(duck_type: str) -> pl.DataType:
    """The polars type of a declared DuckDB type (``DOUBLE[]`` -> ``List(Float64)``)."""
    if duck_type.endswith("[]"):
        return pl.List(polars_type(duck_type[:-2]))
    if duck_type not in _POLARS:
        raise PipelineError(f"no polars type for the declared type {duck_type}: build these rows in SQL")
    return _POLARS[duck_type]


def polars_schema(columns: Sequence[tuple[str, str]]) -> dict[str, pl.DataType]:
    """The polars schema of a declared ``(column, type)`` list, for building a table's rows from dicts:
    typed even when there are none, or when a column is NULL in its first rows."""
    return {c: polars_type(t) for c, t in columns}


def write_table(con: duckdb.DuckDBPyConnection, name: str, rows: Rows) -> None:
    """(Re)create analysis table ``name`` from its declaration and insert ``rows``: a polars, pandas or
    Arrow frame, a DuckDB relation, or a SQL query. Its columns must be the declared ones (any order;
    values are cast to the declared types); a frame with no columns and no rows writes an empty table."""
    write_declared(con, name, declared_columns(name), rows)


def write_declared(con: duckdb.DuckDBPyConnection, name: str, columns: list[tuple[str, str]], rows: Rows) -> None:
    """:func:`write_table` with the columns given (the verdict tables, whose columns every stage shares).

    The rows are checked against the declaration before anything is written, and the table is replaced
    in one statement, so a query that reads the table it rewrites sees the old rows, and a mismatch
    leaves the old table in place."""
    if isinstance(rows, str):
        rows = con.sql(rows)
    if (isinstance(rows, pl.DataFrame | pd.DataFrame) and rows.shape == (0, 0)) or \
            (isinstance(rows, pa.Table) and rows.num_columns == 0):
        con.execute(f'CREATE OR REPLACE TABLE "{name}" ({column_ddl(columns)})')
        return
    have = rows.column_names if isinstance(rows, pa.Table) else list(rows.columns)
    want = [c for c, _ in columns]
    if sorted(have) != sorted(want):
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        raise PipelineError(f"analysis table {name}: rows do not match its declaration "
                            f"(missing {missing}, undeclared {extra})")
    view = f"__rows_{next(_counter)}"
    con.register(view, rows.to_arrow() if isinstance(rows, pl.DataFrame) else rows)
    try:
        select = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in columns)
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT {select} FROM {view}')
    finally:
        con.unregister(view)


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the database holds table or view ``name``. Under the runner's ``check_reads`` the answer is
    the database's, not the sandbox's, on purpose: a stage that then reads the table without declaring
    it fails there, rather than quietly taking the branch for a database without it."""
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchall()[0][0])


def study_membership(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, ...]]:
    """run_id -> the studies it belongs to, from the corpus table ``studies`` (empty without it: a
    database built by hand)."""
    if not has_table(con, "studies"):
        return {}
    out: dict[str, list[str]] = {}
    for run_id, study in con.execute("SELECT run_id, study FROM studies ORDER BY study").fetchall():
        out.setdefault(run_id, []).append(study)
    return {r: tuple(s) for r, s in out.items()}


def write_verdicts(con: duckdb.DuckDBPyConnection, stage: str, verdicts: Sequence[Verdict]) -> None:
    """(Re)write ``analysis_<stage>_verdicts`` from the verdicts, assessed with the corpus's study
    membership (:func:`analyses.stats.verdict.verdict_rows`): inside a running stage only its own
    verdict table (outside one, as the tests of verdict rows do, any)."""
    name = f"analysis_{stage}_verdicts"
    running = running_stage()
    if running is not None and name not in running.tables:
        raise PipelineError(f"analysis table {name}: stage {running.name} does not declare it")
    rows = verdict_rows(stage, verdicts, study_membership(con))
    write_declared(con, name, VERDICT_COLUMNS, pl.DataFrame(rows, schema=polars_schema(VERDICT_COLUMNS)))
