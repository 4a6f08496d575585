"""The gap stage's models: which snapshots are a run's early, middle and late stages."""

from __future__ import annotations

import duckdb

from analyses.gap import models


def test_stages_never_share_a_snapshot_and_stay_near_their_target() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE runs (run_id VARCHAR, total_steps INT, task VARCHAR, status VARCHAR)")
    con.execute("CREATE TABLE checkpoints (run_id VARCHAR, step INT, is_spectral BOOLEAN)")
    con.execute("INSERT INTO runs VALUES ('a', 100, 'classification', 'complete'), "
                "('b', 100, 'classification', 'complete'), ('r', 100, 'regression', 'complete')")
    # a: one snapshot between start and end (at 30 %): early takes it, middle has none left within 0.1
    # b: snapshots at 18 %, 52 %: both stages found
    con.execute("INSERT INTO checkpoints VALUES ('a', 0, true), ('a', 30, true), ('a', 100, true), "
                "('b', 0, true), ('b', 18, true), ('b', 52, true), ('b', 100, true), ('r', 100, true)")
    stages = {(r, s): step for r, s, step, _ in models.stage_steps(con).rows()}
    assert stages == {("a", "late"): 100, ("a", "early"): 30, ("b", "late"): 100, ("b", "early"): 18,
                      ("b", "middle"): 52}
