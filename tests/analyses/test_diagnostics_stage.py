"""Diagnostics stage: it writes its declared tables, figures and report on a small synthetic database,
and runs on an empty corpus."""

from __future__ import annotations

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from analyses.diagnostics import STAGE
from analyses.diagnostics.rules import RULES
from tests.analyses.diagnostics_inputs import FLOATS, HEALTHY, runs_with_configs


def _synthetic_db() -> duckdb.DuckDBPyConnection:
    rng = np.random.default_rng(5)
    runs = runs_with_configs()
    layers, snapshots = [], []
    for run_id, norm in zip(runs["run_id"], runs["norm"], strict=True):
        loss = 1.0
        for step in (0, 10, 100):
            for layer in range(3):
                out = layer == 2
                layers.append({**HEALTHY, "run_id": run_id, "norm": norm, "step": step, "layer_index": layer,
                               "is_output": out, "local_exactly_zero": out, "in_features": 9 if layer == 0 else 8,
                               "out_features": 3 if out else 8, "grad_norm": float(rng.uniform(0.01, 1)),
                               "saturation_fraction": None if out else float(rng.uniform(0, 1)),
                               "local_near_zero_fraction": None if out else float(rng.uniform(0, 1)),
                               "alignment": float(rng.uniform(0, 1))})
            snapshots.append({"run_id": run_id, "dataset": "toy", "step": step, "train_loss": loss, "gap_loss": 0.1,
                              "alignment": float(rng.uniform(0, 1))})
            loss *= 0.5
    con = duckdb.connect()
    con.from_arrow(pl.DataFrame(layers).with_columns(pl.col(FLOATS).cast(pl.Float64)).to_arrow()).create(
        "analysis_features_layer")
    con.from_arrow(pl.DataFrame(snapshots).to_arrow()).create("analysis_features")
    con.from_arrow(runs.to_arrow()).create("runs")
    return con


def test_stage_writes_its_tables_on_a_small_database():
    con = _synthetic_db()
    STAGE.execute(con)
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'findings'").fetchall())
    assert types["evidence"] == "MAP(VARCHAR, DOUBLE)" and types["layer_index"] == "INTEGER"
    assert con.execute("SELECT count(*) FROM findings").fetchall()[0][0] > 0
    summary = con.execute("SELECT rule, severity, n_findings FROM analysis_diagnostics_summary").fetchall()
    assert len(summary) == 2 * len(RULES) + 1
    assert sum(n for *_, n in summary) == con.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    norm = con.execute("SELECT DISTINCT run_id, twin_run_id FROM analysis_diagnostics_normalization "
                       "ORDER BY run_id").fetchall()
    assert norm == [("bn", "plain"), ("ln", "plain")]
    verdicts = con.execute("SELECT claim_id, verdict FROM analysis_diagnostics_verdicts").fetchall()
    assert len(verdicts) == 12  # five claims have a paper row and a sharpened one
    assert all(v in ("supported", "not supported", "inconclusive") for _, v in verdicts)
    for figure in STAGE.figures:
        fig = figure.draw(con)
        assert fig.get_suptitle()
        plt.close(fig)
    assert STAGE.report(con)["paragraphs"]
    con.close()


def test_stage_runs_on_an_empty_corpus():
    con = _synthetic_db()
    con.execute("DELETE FROM analysis_features_layer")
    con.execute("DELETE FROM analysis_features")
    STAGE.execute(con)
    assert con.execute("SELECT count(*) FROM findings").fetchall()[0][0] == 0
    assert {v for (v,) in con.execute("SELECT verdict FROM analysis_diagnostics_verdicts").fetchall()} == {
        "inconclusive"}
    for figure in STAGE.figures:
        plt.close(figure.draw(con))
    con.close()
