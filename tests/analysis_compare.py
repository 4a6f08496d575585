"""Compare the analysis tables of two databases row for row (floats to a relative tolerance), or
re-run one stage's current code on a copy of a reference database and compare what it writes.

    python -m tests.analysis_compare REF.duckdb OTHER.duckdb        # every analysis table of REF
    python -m tests.analysis_compare REF.duckdb --stage dynamics    # run `dynamics` on a copy of REF

Rows are compared as sorted multisets: sorted by every column, then column by column, floats with
|a - b| <= rtol * max(|a|, |b|) + atol. Exits non-zero naming the first table and column that differ.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import duckdb
import polars as pl

RTOL, ATOL = 1e-9, 1e-12
#: Tables a stage writes outside analysis_*.
DERIVED = ("findings", "layer_topology", "layer_topology_bars", "shadows")


def analysis_table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
    return sorted(n for n in names if n.startswith("analysis_") or n in DERIVED)


def _sortable(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by every column (nested values by their text: polars cannot order them; map_elements is
    slow, but this is a check, not a stage)."""
    if not frame.height:
        return frame
    nested = (pl.List, pl.Array, pl.Struct)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pl.exceptions.PolarsInefficientMapWarning)
        keys = [pl.col(c).map_elements(str, return_dtype=pl.Utf8) if isinstance(frame.schema[c], nested)
                else pl.col(c) for c in frame.columns]
        return frame.sort(keys, nulls_last=True)


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= RTOL * max(abs(a), abs(b)) + ATOL
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def compare_frames(table: str, a: pl.DataFrame, b: pl.DataFrame) -> list[str]:
    """Differences between two versions of one table, as sentences (empty: the same)."""
    if sorted(a.columns) != sorted(b.columns):
        return [f"{table}: columns differ: only in ref {sorted(set(a.columns) - set(b.columns))}, "
                f"only in other {sorted(set(b.columns) - set(a.columns))}"]
    b = b.select(a.columns)
    if a.height != b.height:
        return [f"{table}: {a.height} rows in ref, {b.height} in other"]
    out = []
    sa, sb = _sortable(a), _sortable(b)
    for c in a.columns:
        if a.schema[c] != b.schema[c]:
            out.append(f"{table}.{c}: type {a.schema[c]} in ref, {b.schema[c]} in other")
        bad = [i for i, (x, y) in enumerate(zip(sa[c].to_list(), sb[c].to_list(), strict=True)) if not _close(x, y)]
        if bad:
            i = bad[0]
            out.append(f"{table}.{c}: {len(bad)} of {a.height} rows differ, e.g. {sa[c][i]!r} vs {sb[c][i]!r}")
    return out


def compare_databases(ref: Path, other: Path, tables: list[str] | None = None) -> list[str]:
    ca, cb = duckdb.connect(str(ref), read_only=True), duckdb.connect(str(other), read_only=True)
    try:
        names = tables or analysis_table_names(ca)
        have = set(analysis_table_names(cb))
        out = []
        for t in names:
            if t not in have:
                out.append(f"{t}: missing from {other}")
                continue
            out += compare_frames(t, ca.sql(f'SELECT * FROM "{t}"').pl(), cb.sql(f'SELECT * FROM "{t}"').pl())
        return out
    finally:
        ca.close()
        cb.close()


def rerun_stage(ref: Path, stage_name: str) -> list[str]:
    """Run the current code of one stage on a copy of ``ref`` and compare the tables it declares."""
    from analyses.kit import registry

    stage = next(s for s in registry.stages() if s.name == stage_name)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.duckdb"
        shutil.copy(ref, copy)
        con = duckdb.connect(str(copy))
        try:
            stage.execute(con)
        finally:
            con.close()
        return compare_databases(ref, copy, list(stage.writes))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ref", type=Path)
    p.add_argument("other", type=Path, nargs="?")
    p.add_argument("--stage")
    args = p.parse_args()
    diffs = rerun_stage(args.ref, args.stage) if args.stage else compare_databases(args.ref, args.other)
    for d in diffs:
        print(d)
    print("same" if not diffs else f"{len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
