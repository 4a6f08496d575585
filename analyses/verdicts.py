"""Every verdict in one table: the union of the verdict rows each claim-testing stage writes.

Table ``analysis_verdicts``: one row per tested claim, in stage order then by ``claim_id``: the
stage's columns (the claim and its source section, the test, the effect with the stage's interval
and its two-level interval, the confound and the baseline's effect beside the claim's, the effect
beyond it, the leave-one-data-set-out and leave-one-study-out ranges, the unadjusted verdict) and
the Holm adjustment within each paper's family: ``p_holm`` and ``verdict_adjusted``. The rules are
those of :mod:`analyses.stats.verdict`.
"""

from __future__ import annotations

import duckdb

from analyses.stage import Stage
from analyses.stats.verdict import COLLECTED_COLUMNS, holm_adjusted
from analyses.tables import write_table


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_verdicts`` from every stage's ``analysis_<stage>_verdicts``."""
    from analyses.registry import verdict_tables

    union = " UNION ALL ".join(f"SELECT *, {i} AS stage_order FROM {t}" for i, t in enumerate(verdict_tables()))
    rows = con.sql(f"SELECT * EXCLUDE (stage_order) FROM ({union}) ORDER BY stage_order, claim_id").pl()
    write_table(con, "analysis_verdicts", holm_adjusted(rows))


STAGE = Stage(name="verdicts", title="Verdicts", doc=__doc__, reads=(), tables={"analysis_verdicts": COLLECTED_COLUMNS},
              run=run, collects_verdicts=True)
