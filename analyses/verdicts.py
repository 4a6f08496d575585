"""Every verdict in one table: the union of the verdict rows each claim-testing stage writes.

Table ``analysis_verdicts``: one row per tested claim, in stage order then by ``claim_id``: the
stage, the claim and its source section, the test, the effect with its 95% interval, the null value,
n and the unit n counts, the p-value where the test has one, the verdict and a detail string. The
rule that turns an interval into a verdict is :func:`analyses.stats.verdict.decide`.
"""

from __future__ import annotations

import duckdb

from analyses.stage import Stage
from analyses.stats.verdict import VERDICT_COLUMNS
from analyses.tables import write_table


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_verdicts`` from every stage's ``analysis_<stage>_verdicts``."""
    from analyses.registry import verdict_tables

    union = " UNION ALL ".join(f"SELECT *, {i} AS stage_order FROM {t}" for i, t in enumerate(verdict_tables()))
    write_table(con, "analysis_verdicts",
                f"SELECT * EXCLUDE (stage_order) FROM ({union}) ORDER BY stage_order, claim_id")


STAGE = Stage(name="verdicts", title="Verdicts", doc=__doc__, reads=(), tables={"analysis_verdicts": VERDICT_COLUMNS},
              run=run, collects_verdicts=True)
