"""Diagnostics: every rule fires on a planted case and stays silent on a healthy one; severities follow
the thresholds; normalization twins are matched exactly; planted effects make the verdicts
"supported" and reversed ones "not supported"; and the stage runs on a small synthetic database."""

from __future__ import annotations

import json
import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from analyses import diagnostics as dg

#: A healthy sigmoid hidden layer: no rule should fire on it.
HEALTHY = {
    "run_id": "r1", "step": 0, "layer_index": 0, "dataset": "toy", "norm": "none", "activation": "sigmoid",
    "is_output": False, "local_exactly_zero": False, "in_features": 9, "out_features": 16, "n_layers": 3,
    "grad_norm": 1.0, "saturation_fraction": 0.05, "local_near_zero_fraction": 0.1,
    "local_effective_rank_ratio": 0.2, "local_bias_share_ratio": 1.5, "loss_bias_share_ratio": 1.2,
    "loss_symmetry": 1.2, "loss_negative_mass": 0.1, "loss_near_zero_fraction": 0.2,
    "loss_effective_rank_ratio": 0.05, "loss_relative_std": 5.0, "weight_rank_ratio": 1.0,
    "weight_stable_rank": 4.0, "alignment": 0.2, "adjacent_similarity": 0.6,
}
FLOATS = [k for k, v in HEALTHY.items() if isinstance(v, float)]


def _frame(rows: list[dict], n_probe: int = 64) -> pl.DataFrame:
    layer = pl.DataFrame([{**HEALTHY, **r} for r in rows]).with_columns(pl.col(FLOATS).cast(pl.Float64))
    runs = pl.DataFrame({"run_id": sorted(set(layer["run_id"])), "n_probe": n_probe})
    return dg.derive_columns(layer, runs)


def _severities(findings: pl.DataFrame) -> list[str]:
    return findings.sort("run_id", "step", "layer_index")["severity"].to_list()


def test_threshold_levels_and_chance_similarity():
    above = dg.Threshold("x", 0.5, 0.8, above=True)
    below = dg.Threshold("x", 0.5, 0.25, above=False)
    assert [above.level(v) for v in (0.4, 0.5, 0.8, None, math.nan)] == [0, 1, 2, 0, 0]
    assert [below.level(v) for v in (0.6, 0.5, 0.3, 0.2)] == [0, 0, 1, 2]
    np.testing.assert_allclose(dg.expected_abs_cosine(np.array([2, 3])), [2 / math.pi, 0.5], rtol=1e-12)
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 20000, 16))
    cos = np.abs((u * v).sum(1)) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    assert abs(cos.mean() - dg.expected_abs_cosine(np.array([16]))[0]) < 0.01


def test_saturated_layer_fires_on_saturated_sigmoid_not_on_relu_output_or_healthy():
    frame = _frame([
        {"layer_index": 0, "saturation_fraction": 0.9, "local_near_zero_fraction": 0.9},           # critical
        {"run_id": "r2", "saturation_fraction": 0.6, "local_near_zero_fraction": 0.9},             # warning
        {"run_id": "r3", "activation": "relu", "saturation_fraction": 0.9, "local_near_zero_fraction": 0.9,
         "local_exactly_zero": True},                                                              # structural
        {"run_id": "r4", "is_output": True, "saturation_fraction": 0.9, "local_near_zero_fraction": 0.9},
        {"run_id": "r5", "saturation_fraction": 0.9},                                              # spread spectrum
        {"run_id": "r6"},                                                                          # healthy
    ])
    found = dg.rule_saturated_layer(frame)
    assert found["run_id"].to_list() == ["r1", "r2"] and _severities(found) == ["critical", "warning"]
    evidence = {e["key"]: e["value"] for e in found["evidence"][0]}
    assert evidence["saturation_fraction"] == 0.9 and evidence["saturation_fraction_threshold"] == 0.5


def test_saturated_layer_discounts_structural_zeros():
    # N = 4 probe points, d + 1 = 10: 60% of each block's eigenvalues are zero by the rank bound
    frame = _frame([{"saturation_fraction": 0.9, "local_near_zero_fraction": 0.7}], n_probe=4)
    assert frame["local_structural_zero_fraction"][0] == pytest.approx(0.6)
    assert dg.rule_saturated_layer(frame).is_empty()  # only 25% of the non-structural ones are near zero


def test_saddle_needs_symmetry_negative_mass_and_a_fallen_gradient():
    saddle = {"loss_symmetry": 0.05, "loss_negative_mass": 0.48}
    frame = _frame([
        {"step": 0, "grad_norm": 1.0, **saddle},                     # first snapshot: relative gradient 1
        {"step": 10, "grad_norm": 0.05, **saddle},                   # warning (gradient 5% of initial)
        {"step": 20, "grad_norm": 0.005, **saddle},                  # critical
        {"step": 30, "grad_norm": 0.005},                            # one-signed spectrum: a minimum
        {"step": 40, "grad_norm": 0.5, **saddle},                    # gradient still large
    ])
    found = dg.rule_saddle(frame)
    assert found["step"].to_list() == [10, 20] and _severities(found) == ["warning", "critical"]


@pytest.mark.parametrize(("rule", "planted", "severity"), [
    (dg.rule_low_rank_weights, {"weight_rank_ratio": 0.2}, "critical"),
    (dg.rule_low_rank_weights, {"weight_rank_ratio": 0.4}, "warning"),
    (dg.rule_low_rank_hessian, {"loss_effective_rank_ratio": 1.1 / 160}, "critical"),
    (dg.rule_low_rank_hessian, {"loss_effective_rank_ratio": 1.5 / 160}, "warning"),
    (dg.rule_bias_dominated, {"local_bias_share_ratio": 5.0}, "warning"),
    (dg.rule_bias_dominated, {"loss_bias_share_ratio": 9.0}, "critical"),
    (dg.rule_rigid_direction, {"alignment": 0.6}, "warning"),
    (dg.rule_rigid_direction, {"alignment": 0.9}, "critical"),
    (dg.rule_adjacent_dissimilarity, {"adjacent_similarity": 0.15}, "warning"),   # chance in R^16 ~ 0.2
    (dg.rule_adjacent_dissimilarity, {"adjacent_similarity": 0.05}, "critical"),
])
def test_single_condition_rules_fire_on_planted_values_only(rule, planted, severity):
    found = rule(_frame([{"run_id": "planted", **planted}, {"run_id": "healthy"}]))
    assert found["run_id"].to_list() == ["planted"] and _severities(found) == [severity]


def test_bias_rule_ignores_the_local_hessian_of_relu_layers():
    frame = _frame([{"activation": "relu", "local_exactly_zero": True, "local_bias_share_ratio": 9.0}])
    assert dg.rule_bias_dominated(frame).is_empty()


def test_small_spectral_std_against_the_corpus_percentile_and_the_absolute_floor():
    # 40 healthy rows in tied groups of ten, so the 5th percentile (index 2.05 of 42) is the lowest group
    rows = [{"run_id": f"r{i:02d}", "loss_relative_std": 10.0 + i // 10} for i in range(40)]
    rows += [{"run_id": "low", "loss_relative_std": 2.0}, {"run_id": "flat", "loss_relative_std": 0.5}]
    found = dg.rule_small_spectral_std(_frame(rows))
    assert dict(zip(found["run_id"], found["severity"], strict=True)) == {"low": "warning", "flat": "critical"}
    # too few reference rows: only the absolute floor applies
    found = dg.rule_small_spectral_std(_frame(rows[:5] + rows[-2:]))
    assert found["run_id"].to_list() == ["flat"]


def test_small_eigenvalues_last_layers_compares_last_hidden_with_first():
    def snapshot(step, first, last):
        return [{"step": step, "layer_index": 0, "local_near_zero_fraction": first},
                {"step": step, "layer_index": 1, "in_features": 16, "local_near_zero_fraction": last},
                {"step": step, "layer_index": 2, "is_output": True, "activation": "sigmoid",
                 "local_exactly_zero": True, "local_near_zero_fraction": None}]
    frame = _frame(snapshot(0, 0.1, 0.1) + snapshot(1, 0.1, 0.4) + snapshot(2, 0.1, 0.8))
    found = dg.rule_small_eigenvalues_last_layers(frame)
    assert found["step"].to_list() == [1, 2] and _severities(found) == ["warning", "critical"]
    assert found["layer_index"].to_list() == [1, 1]
    # a network with one hidden layer has nothing to compare
    assert dg.rule_small_eigenvalues_last_layers(_frame([{"n_layers": 2}])).is_empty()


def _runs_with_configs() -> pl.DataFrame:
    base = {"dataset": "toy", "widths": [8, 8], "activation": "sigmoid", "lr": 0.01, "seed": 0,
            "spectral_snapshots": 10}
    configs = {
        "plain": {**base, "norm": "none"},
        "bn": {**base, "norm": "batchnorm", "spectral_snapshots": 5},   # measurement setting ignored
        "ln": {**base, "norm": "layernorm"},
        "ln_other_lr": {**base, "norm": "layernorm", "lr": 0.1},        # no twin: another lr
    }
    return pl.DataFrame([{"run_id": k, "norm": v["norm"], "n_probe": 64, "config_json": json.dumps(v)}
                         for k, v in configs.items()])


def test_normalization_twins_comparison_and_info_finding():
    runs = _runs_with_configs()
    twins = dg.normalization_twins(runs)
    assert twins.rows() == [("bn", "plain"), ("ln", "plain")]
    layer = pl.DataFrame([{**HEALTHY, "run_id": r, "norm": n, "saturation_fraction": s}
                          for r, n, s in (("plain", "none", 0.3), ("bn", "batchnorm", 0.1),
                                          ("ln", "layernorm", 0.4), ("ln_other_lr", "layernorm", 0.0))])
    layer = layer.with_columns(pl.col(FLOATS).cast(pl.Float64))
    comparison = dg.normalization_comparison(dg.derive_columns(layer, runs), twins)
    sat = comparison.filter(pl.col("metric") == "saturation_fraction").sort("run_id")
    assert sat["difference"].to_list() == pytest.approx([-0.2, 0.1])
    found = dg.rule_normalization_effect(comparison)
    assert found["run_id"].to_list() == ["ln"] and found["severity"].to_list() == ["info"]
    assert found["step"].to_list() == [None] and found["layer_index"].to_list() == [None]


# --- verdicts -------------------------------------------------------------------------------------

def _correlated(n_runs: int, per_run: int, slope: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n_runs * per_run)
    y = 0.5 + slope * (x - 0.5) + rng.normal(0, 0.05, x.size)
    runs = [f"r{i:02d}" for i in range(n_runs) for _ in range(per_run)]
    return x, y, runs


@pytest.mark.parametrize(("slope", "verdict"), [(0.8, "supported"), (-0.8, "not supported")])
def test_saturation_verdict_planted_and_reversed(slope, verdict):
    x, y, runs = _correlated(12, 4, slope)
    frame = _frame([{"run_id": r, "step": i, "saturation_fraction": a, "local_near_zero_fraction": b}
                    for i, (r, a, b) in enumerate(zip(runs, x, y, strict=True))])
    v = dg.verdict_saturation(frame)
    assert v.verdict == verdict and v.n == 12 and v.n_unit == "runs"


@pytest.mark.parametrize(("slope", "verdict"), [(-0.5, "supported"), (0.5, "not supported")])
def test_alignment_verdict_planted_and_reversed(slope, verdict):
    rng = np.random.default_rng(1)
    rows = []
    for r in range(12):
        loss = 1.0
        for k in range(6):
            a = rng.uniform(0, 1)
            rows.append({"run_id": f"r{r:02d}", "step": k, "alignment": a, "train_loss": loss, "gap_loss": 0.1})
            decrease = float(np.clip(0.4 + slope * (a - 0.5) + rng.normal(0, 0.02), 0.01, 0.9))
            loss *= 1 - decrease
    v = dg.verdict_rigid(pl.DataFrame(rows))
    assert v.verdict == verdict and v.n == 12


@pytest.mark.parametrize(("difference", "verdict"), [(-0.05, "supported"), (0.05, "not supported")])
def test_normalization_verdict_planted_and_reversed(difference, verdict):
    rng = np.random.default_rng(2)
    d = difference + rng.normal(0, 0.01, 6)
    # two normalized runs (batch and layer norm) per unnormalized twin: n counts twins, not pairs
    comparison = pl.DataFrame({"dataset": [f"d{i // 2}" for i in range(12)], "metric": "saturation_fraction",
                               "twin_run_id": [f"t{i // 2}" for i in range(12)],
                               "difference": np.repeat(d, 2) + rng.normal(0, 0.002, 12)})
    v = dg.verdict_normalization(comparison)
    assert v.verdict == verdict and v.n == 6 and "12 matched pairs" in v.detail


@pytest.mark.parametrize(("ratio", "verdict"), [(2.0, "supported"), (0.5, "not supported"),
                                                (1.0, "not supported")])
def test_bias_verdict_against_the_baseline(ratio, verdict):
    rng = np.random.default_rng(3)
    frame = _frame([{"run_id": f"r{i:02d}", "loss_bias_share_ratio": ratio + rng.normal(0, 0.01)}
                    for i in range(10)])
    assert dg.verdict_bias(frame, "loss").verdict == verdict  # 1.0: inside the negligible band


@pytest.mark.parametrize(("slope", "verdict"), [(0.8, "supported"), (-0.8, "not supported")])
def test_last_layer_verdict_planted_and_reversed(slope, verdict):
    x, y, runs = _correlated(20, 1, slope, seed=4)
    pairs = pl.DataFrame({"run_id": runs, "step": 5, "difference": x})
    snapshots = pl.DataFrame({"run_id": runs, "step": 5, "gap_loss": y})
    v = dg.verdict_last_layers(pairs, snapshots)
    assert v.verdict == verdict and v.n == 20


# --- the stage on a synthetic database ------------------------------------------------------------

def _synthetic_db() -> duckdb.DuckDBPyConnection:
    rng = np.random.default_rng(5)
    runs = _runs_with_configs()
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
            snapshots.append({"run_id": run_id, "step": step, "train_loss": loss, "gap_loss": 0.1,
                              "alignment": float(rng.uniform(0, 1))})
            loss *= 0.5
    layer_frame = pl.DataFrame(layers).with_columns(pl.col(FLOATS).cast(pl.Float64))  # noqa: F841
    snapshot_frame = pl.DataFrame(snapshots)  # noqa: F841
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_features_layer AS SELECT * FROM layer_frame")
    con.execute("CREATE TABLE analysis_features AS SELECT * FROM snapshot_frame")
    con.execute("CREATE TABLE runs AS SELECT * FROM runs")
    return con


def test_stage_writes_its_tables_on_a_small_database():
    con = _synthetic_db()
    dg.run(con)
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'findings'").fetchall())
    assert types["evidence"] == "MAP(VARCHAR, DOUBLE)" and types["layer_index"] == "INTEGER"
    assert con.execute("SELECT count(*) FROM findings").fetchall()[0][0] > 0
    summary = con.execute("SELECT rule, severity, n_findings FROM analysis_diagnostics_summary").fetchall()
    assert len(summary) == 2 * len(dg.RULES) + 1
    assert sum(n for *_, n in summary) == con.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    norm = con.execute("SELECT DISTINCT run_id, twin_run_id FROM analysis_diagnostics_normalization "
                       "ORDER BY run_id").fetchall()
    assert norm == [("bn", "plain"), ("ln", "plain")]
    verdicts = con.execute("SELECT claim_id, verdict FROM analysis_diagnostics_verdicts").fetchall()
    assert len(verdicts) == 7
    assert all(v in ("supported", "not supported", "inconclusive") for _, v in verdicts)
    for make in dg.FIGURES.values():
        fig = make(con)
        assert fig.get_suptitle()
        plt.close(fig)
    assert dg.report(con)["paragraphs"]
    con.close()


def test_stage_runs_on_an_empty_corpus():
    con = _synthetic_db()
    con.execute("DELETE FROM analysis_features_layer")
    con.execute("DELETE FROM analysis_features")
    dg.run(con)
    assert con.execute("SELECT count(*) FROM findings").fetchall()[0][0] == 0
    assert {v for (v,) in con.execute("SELECT verdict FROM analysis_diagnostics_verdicts").fetchall()} == {
        "inconclusive"}
    for make in dg.FIGURES.values():
        plt.close(make(con))
    con.close()
