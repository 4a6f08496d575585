"""The README's corpus results, written from a built database rather than by hand.

    python -m reports.readme_results --db build/corpus.duckdb [--name default] [--readme README.md] [--check]

rewrites the README's text between ``<!-- verdict counts: ... -->`` and ``<!-- end verdict counts -->``
with the corpus's verdict counts (``analysis_verdicts``: every row, the calls after Holm from
``verdict_adjusted`` and before it from ``verdict``), its run count, the day its verdicts stage ran
(``stage_runs``) and the claims whose sharpened test reads "holds as stated, and beyond ..." or "holds as
stated, but not beyond ...". ``--check`` writes nothing and exits 1 when the README's block differs from
what the database gives. Numbers in the README come from here or carry the date and corpus they were
measured on; ``make test`` does not build the default corpus, so it checks the block's form
(``tests/test_readme_results.py``), and a session that rebuilds the corpus runs this.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError
from snapshot_loader.database import connect_readonly

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- verdict counts:[^>]*-->\n)(.*?)(<!-- end verdict counts -->)", re.S)


def _pairs(con: duckdb.DuckDBPyConnection, prefix: str) -> list[str]:
    """``claim`` (beyond what) for each confirmatory pair whose reading starts with ``prefix``."""
    rows = con.execute("""SELECT pair, reading FROM analysis_verdicts
                          WHERE role = 'sharpened' AND NOT coalesce(exploratory, false) AND starts_with(reading, ?)
                          ORDER BY pair, claim_id""", [prefix]).fetchall()
    return [f"`{pair}` ({reading[len(prefix):].removesuffix(' (structural)').strip()})" for pair, reading in rows]


def verdict_counts_text(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """The README's generated paragraph for the corpus in ``con``."""
    n_runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    total, sup, sup_before, nsup, nsup_before, inc, inc_before = con.execute("""
        SELECT count(*), count(*) FILTER (verdict_adjusted = 'supported'), count(*) FILTER (verdict = 'supported'),
               count(*) FILTER (verdict_adjusted = 'not supported'), count(*) FILTER (verdict = 'not supported'),
               count(*) FILTER (verdict_adjusted = 'inconclusive'), count(*) FILTER (verdict = 'inconclusive')
        FROM analysis_verdicts""").fetchall()[0]
    ran = con.execute("SELECT max(ran_at)::DATE::VARCHAR FROM stage_runs WHERE stage = 'verdicts'").fetchall()[0][0]
    when = f"verdicts of {ran}" if ran else "verdicts undated"
    text = (f"On the {name} corpus ({n_runs} runs; {when}): {total} verdicts, {sup} supported after Holm "
            f"({sup_before} before), {nsup} not supported ({nsup_before} before), {inc} inconclusive "
            f"({inc_before} before).")
    beyond = _pairs(con, "holds as stated, and beyond")
    structural = _pairs(con, "holds as stated, but not beyond")
    if beyond:
        text += f" Holds as stated and beyond its confound: {', '.join(beyond)}."
    if structural:
        text += f" Holds as stated but not beyond its confound (structural): {', '.join(structural)}."
    return text


def with_block(readme: str, text: str) -> str:
    """``readme`` with its verdict-count block's body replaced by ``text``."""
    if len(BLOCK.findall(readme)) != 1:
        raise PipelineError("README: needs exactly one `<!-- verdict counts: ... -->` ... "
                            "`<!-- end verdict counts -->` block")
    return BLOCK.sub(lambda m: f"{m[1]}{_wrap(text)}\n{m[3]}", readme)


def _wrap(text: str, width: int = 105) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.readme_results", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--name", default="default", help="the corpus's name in the sentence")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's block differs; write nothing")
    args = parser.parse_args(argv)
    try:
        con = connect_readonly(args.db)  # checks the file, its schema version, and waits out a writer
        try:
            text = verdict_counts_text(con, args.name)
        except duckdb.Error as exc:
            raise PipelineError(f"{args.db}: {str(exc).splitlines()[0]} (run `pipeline analyze` first)") from None
        finally:
            con.close()
        try:
            old = args.readme.read_text()
        except OSError as exc:
            raise PipelineError(f"{args.readme}: cannot read it: {exc.strerror or exc}") from None
        new = with_block(old, text)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(f"{args.readme}: the verdict counts differ from {args.db}: run without --check to rewrite them")
            return 1
        return 0
    if new != old:
        args.readme.write_text(new)
    print(f"{args.readme}: verdict counts from {args.db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
