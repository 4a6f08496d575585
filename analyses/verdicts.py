"""Every verdict in one table: the union of the verdict rows each claim-testing stage writes.

Table ``analysis_verdicts``: one row per tested claim, in stage order then by ``claim_id``: the
stage's columns (the claim and its source section, its role, the paper's test or the sharpened one,
and the pair it belongs to; the test; the decisive effect pooled across data sets with its 95% and
90% intervals, p, the interval's method, tau^2 and I^2; the band and its units; the confound held
fixed with its own effect; the stage's own estimate; the leave-one-data-set-out and leave-one-study-out
ranges; the unadjusted verdict) and what collecting them adds: whether the row is in its paper's Holm
family (testable, distinct, confirmatory: paper 000 is exploratory), ``p_holm``,
``verdict_adjusted`` and ``reading`` (a paper/sharpened pair read together). The rules are those of
:mod:`analyses.stats.verdict`.
"""

from __future__ import annotations

import duckdb

from analyses.kit.registry import verdict_tables
from analyses.kit.stage import Stage
from analyses.kit.tables import write_table
from analyses.stats.verdict import COLLECTED_COLUMNS, holm_adjusted


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_verdicts`` from every stage's ``analysis_<stage>_verdicts``."""
    union = " UNION ALL ".join(f"SELECT *, {i} AS stage_order FROM {t}" for i, t in enumerate(verdict_tables()))
    rows = con.sql(f"SELECT * EXCLUDE (stage_order) FROM ({union}) ORDER BY stage_order, claim_id").pl()
    write_table(con, "analysis_verdicts", holm_adjusted(rows))


STAGE = Stage(name="verdicts", title="Verdicts", doc=__doc__, reads=(), tables={"analysis_verdicts": COLLECTED_COLUMNS},
              run=run, collects_verdicts=True)
