"""The propagation stage on a small synthetic corpus (no training): four arms in four cells, a planted
shadow in the plain arm, hand-set outcomes whose paired differences are known; and the same corpus
without any shadow. Every declared table, the verdicts, the figures and the report."""

from __future__ import annotations

import json

import duckdb
import matplotlib
import numpy as np
import polars as pl
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.propagation import STAGE  # noqa: E402
from snapshot_loader.schema import ddl  # noqa: E402

ARM_OPTIONS = {"plain": ("none", "none"), "template": ("every", "none"), "synthesized": ("none", "synthesized"),
               "random": ("none", "random")}
#: Final test accuracy per arm and learning rate (both seeds).
FINAL_METRIC = {"plain": {0.01: 0.5, 0.1: 0.7}, "template": {0.01: 0.9, 0.1: 0.9},
                "synthesized": {0.01: 0.6, 0.1: 0.75}, "random": {0.01: 0.55, 0.1: 0.6}}
STEPS = (0, 1, 2, 3)
N_BLOCKS = 4
#: kappa of the planted shadow pair (1, 2); the other length-1 pairs have 0.5, so r = 0.2 < SHADOW_RATIO.
SHADOW_KAPPA = 0.1


def _kappa(i: int, j: int, shadow: bool) -> float:
    if i == j:
        return 1.0
    if shadow and (i, j) == (1, 2):
        return SHADOW_KAPPA
    return {1: 0.5, 2: 0.3, 3: 0.2}[j - i]


def _build_db(planted: bool) -> duckdb.DuckDBPyConnection:
    """16 MLP runs of a 4-block chain (4 arms x lr 0.01 / 0.1 x seeds 0 / 1), a Transformer run and an MLP
    run without a coupling map (both left out of the study); the plain runs' maps hold a shadow when
    ``planted``."""
    con = duckdb.connect()
    for stmt in ddl():
        con.execute(stmt)
    rows: dict[str, list[dict]] = {t: [] for t in ("runs", "checkpoints", "curvature_coupling", "blocks",
                                                   "augmentations", "augmentation_trials")}
    specs = [(f"{arm}-{lr}-{seed}", arm, lr, seed, "mlp", 4) for arm in ARM_OPTIONS for lr in (0.01, 0.1)
             for seed in (0, 1)]
    specs += [("transformer", "plain", 0.01, 0, "transformer", 4), ("no-map", "plain", 0.01, 0, "mlp", 0)]
    for run_id, arm, lr, seed, family, probes in specs:
        residual, augment = ARM_OPTIONS[arm]
        config = {"dataset": "iris", "family": family, "lr": lr, "seed": seed, "residual": residual,
                  "augment": augment, "coupling_probes": probes}
        rows["runs"].append({"run_id": run_id, "dataset": "iris", "task": "classification", "family": family,
                             "lr": lr, "seed": seed, "epochs": 1, "residual": residual, "augment": augment,
                             "coupling_probes": probes, "config_json": json.dumps(config), "status": "complete",
                             "total_steps": STEPS[-1], "final_step": STEPS[-1]})
        final = FINAL_METRIC[arm][lr]
        for step in STEPS:
            rows["checkpoints"].append({"run_id": run_id, "step": step, "is_spectral": True,
                                        "train_loss": 1.0 - final * step / STEPS[-1] + 0.01 * seed,
                                        "test_accuracy": final if step == STEPS[-1] else 0.3})
            if probes == 0:
                continue
            for i in range(N_BLOCKS):
                for j in range(i, N_BLOCKS):
                    rows["curvature_coupling"].append({
                        "run_id": run_id, "step": step, "block_i": i, "block_j": j, "path_exists": True,
                        "path_length": j - i, "kappa": _kappa(i, j, planted and arm == "plain"), "n_probes": probes})
        for b in range(N_BLOCKS):
            rows["blocks"].append({"run_id": run_id, "block_index": b, "name": f"blocks.{b}",
                                   "successors": [b + 1] if b + 1 < N_BLOCKS else []})
        if arm in ("synthesized", "random") and family == "mlp":
            rows["augmentations"].append({"run_id": run_id, "step": 1, "edge_index": 0, "src": 0, "dst": 2,
                                          "kind": "skip", "method": arm, "gain": 0.01, "gate": 0.1})
            rows["augmentation_trials"].append({"run_id": run_id, "step": 1, "round": 0, "src": 0, "dst": 2,
                                                "kind": "skip", "gain": 0.01, "selected": True})
    for table, table_rows in rows.items():
        con.register("frame", pl.DataFrame(table_rows).to_arrow())
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")
        con.unregister("frame")
    return con


@pytest.fixture(scope="module", params=[True, False], ids=["planted-shadow", "no-shadow"])
def db(request) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """The synthetic corpus with the planted shadow or without one, the stage run on it; and which."""
    con = _build_db(request.param)
    STAGE.execute(con)
    return con, request.param


@pytest.fixture
def corpus(db) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """A fresh cursor on the module's database (a test's unfinished result must not block the next)."""
    return db[0].cursor(), db[1]


def test_every_declared_table_is_written_with_its_declared_columns(corpus):
    con, _ = corpus
    for table, columns in STAGE.tables.items():
        assert [(c[0], c[1]) for c in con.execute(f'DESCRIBE "{table}"').fetchall()] == list(columns), table


def test_runs_are_the_mlp_runs_with_a_map_four_arms_per_cell(corpus):
    con, _ = corpus
    runs = con.sql("SELECT * FROM analysis_propagation_runs").pl()
    assert runs.height == 16 and not {"transformer", "no-map"} & set(runs["run_id"])
    assert dict(runs.group_by("arm").len().iter_rows()) == {arm: 4 for arm in ARM_OPTIONS}
    cells = runs.group_by("cell").agg(pl.col("arm").sort(), pl.col("lr").n_unique(), pl.col("seed").n_unique())
    assert cells.height == 4  # the arm fields do not enter the cell; lr and seed do
    assert all(arms == sorted(ARM_OPTIONS) for arms in cells["arm"].to_list())
    assert set(cells["lr"]) == set(cells["seed"]) == {1}
    edges = dict(runs.select("run_id", "edges_added").iter_rows())
    assert edges["synthesized-0.01-0"] == edges["random-0.1-1"] == 1 and edges["plain-0.01-0"] == 0


def test_coherence_and_shadows_of_the_planted_pair(corpus):
    con, planted = corpus
    runs = con.sql("SELECT * FROM analysis_propagation_runs").pl()
    # mean kappa over the 6 path pairs: 3 x 0.5 + 2 x 0.3 + 0.2, the shadow pair at 0.1 instead of 0.5
    healthy, shadowed = 2.3 / 6, (2.3 - 0.5 + SHADOW_KAPPA) / 6
    for row in runs.iter_rows(named=True):
        expected = shadowed if planted and row["arm"] == "plain" else healthy
        assert row["coherence_first"] == pytest.approx(expected) and row["coherence_last"] == pytest.approx(expected)
        assert row["shadows_last"] == (1 if planted and row["arm"] == "plain" else 0)
    shadows = con.sql("SELECT * FROM shadows ORDER BY run_id, step_last").pl()
    if not planted:
        assert shadows.height == 0
        return
    # two windows of three maps (steps 0-2 and 1-3) per plain run, both with the pair (1, 2) at r = 0.2; the
    # Transformer run's map (planted too) has its shadows, though it is not in the MLP arms
    assert shadows.height == 2 * 5 and set(shadows["run_id"].str.split("-").list.first()) == {"plain", "transformer"}
    assert set(shadows.select("step_first", "step_last").iter_rows()) == {(0, 2), (1, 3)}
    assert set(shadows.select("block_i", "block_j", "path_length", "n_maps").iter_rows()) == {(1, 2, 1, 3)}
    assert shadows["max_relative"].to_list() == pytest.approx([SHADOW_KAPPA / 0.5] * 10)


def test_arm_table_and_verdicts_are_the_planted_differences(corpus):
    con, planted = corpus
    arms = {r["arm"]: r for r in con.sql("SELECT * FROM analysis_propagation WHERE dataset = 'all'").pl()
            .iter_rows(named=True)}
    assert set(arms) == set(ARM_OPTIONS) and all(r["n_runs"] == 4 for r in arms.values())
    for arm, by_lr in FINAL_METRIC.items():
        assert arms[arm]["final_test_metric"] == pytest.approx(np.mean(list(by_lr.values())))
        assert arms[arm]["lr_sensitivity"] == pytest.approx(max(by_lr.values()) - min(by_lr.values()))
    assert con.execute("SELECT count(*) FROM analysis_propagation WHERE dataset = 'iris'").fetchall() == [(4,)]
    verdicts = {r["claim_id"]: r for r in con.sql("SELECT * FROM analysis_propagation_verdicts").pl()
                .iter_rows(named=True)}
    plain, synth, rand = FINAL_METRIC["plain"], FINAL_METRIC["synthesized"], FINAL_METRIC["random"]
    beats_plain = verdicts["propagation.synthesis_beats_plain"]
    assert beats_plain["effect"] == pytest.approx(np.mean([synth[lr] - plain[lr] for lr in plain]))
    assert (beats_plain["n"], beats_plain["n_unit"]) == (2, "(data set, lr) units")
    assert beats_plain["ci_low"] < beats_plain["effect"] < beats_plain["ci_high"]
    assert verdicts["propagation.synthesis_beats_random"]["effect"] == pytest.approx(
        np.mean([synth[lr] - rand[lr] for lr in plain]))
    assert beats_plain["interval_method"].startswith("one data set (iris)")
    # the same range reduction in both (data set, seed) units: no spread, so no interval decides
    lr_range = verdicts["propagation.synthesis_lowers_lr_sensitivity"]
    reduction = (plain[0.1] - plain[0.01]) - (synth[0.1] - synth[0.01])
    assert lr_range["effect"] == pytest.approx(reduction) and lr_range["ci_low"] is None
    assert (lr_range["n"], lr_range["n_unit"], lr_range["verdict"]) == (2, "(data set, seed) units", "inconclusive")
    coherence = verdicts["propagation.synthesis_restores_coherence"]
    # planted: synthesized maps have no shadow, the plain ones do: restored by (0.5 - 0.1) / 6 everywhere;
    # else no difference at all; either way the same in both units, never a zero-width decision
    assert coherence["effect"] == pytest.approx((0.5 - SHADOW_KAPPA) / 6 if planted else 0.0)
    assert coherence["verdict"] == "inconclusive" and coherence["ci_low"] is None


def test_figures_and_report_render_from_the_tables(corpus):
    con, _ = corpus
    for fig in STAGE.figures:
        f = fig.draw(con)
        assert f.axes, fig.name
        plt.close(f)
    report = STAGE.report(con.cursor())
    assert report["paragraphs"][0].startswith("16 runs in 4 cells")
    for table in report["tables"]:
        assert con.cursor().sql(table["sql"]).pl().height > 0, table["caption"]
