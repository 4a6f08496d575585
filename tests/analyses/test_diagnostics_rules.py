"""Diagnostics rules: every rule fires on a planted case and stays silent on a healthy one, and
severities follow the thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses.diagnostics import rules
from analyses.diagnostics.derived import expected_abs_cosine
from analyses.diagnostics.findings import Threshold
from tests.analyses.diagnostics_inputs import layer_frame, severities


def test_threshold_levels_and_chance_similarity():
    above = Threshold("x", 0.5, 0.8, above=True)
    below = Threshold("x", 0.5, 0.25, above=False)
    assert [above.level(v) for v in (0.4, 0.5, 0.8, None, math.nan)] == [0, 1, 2, 0, 0]
    assert [below.level(v) for v in (0.6, 0.5, 0.3, 0.2)] == [0, 0, 1, 2]
    np.testing.assert_allclose(expected_abs_cosine(np.array([2, 3])), [2 / math.pi, 0.5], rtol=1e-12)
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 20000, 16))
    cos = np.abs((u * v).sum(1)) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    assert abs(cos.mean() - expected_abs_cosine(np.array([16]))[0]) < 0.01


def test_saturated_layer_fires_on_saturated_sigmoid_not_on_relu_output_or_healthy():
    frame = layer_frame([
        {"layer_index": 0, "saturation_fraction": 0.9, "local_near_zero_fraction": 0.9},           # critical
        {"run_id": "r2", "saturation_fraction": 0.6, "local_near_zero_fraction": 0.9},             # warning
        {"run_id": "r3", "activation": "relu", "saturation_fraction": 0.9, "local_near_zero_fraction": 0.9,
         "local_exactly_zero": True},                                                              # structural
        {"run_id": "r4", "is_output": True, "saturation_fraction": 0.9, "local_near_zero_fraction": 0.9},
        {"run_id": "r5", "saturation_fraction": 0.9},                                              # spread spectrum
        {"run_id": "r6"},                                                                          # healthy
    ])
    found = rules.rule_saturated_layer(frame)
    assert found["run_id"].to_list() == ["r1", "r2"] and severities(found) == ["critical", "warning"]
    evidence = {e["key"]: e["value"] for e in found["evidence"][0]}
    assert evidence["saturation_fraction"] == 0.9 and evidence["saturation_fraction_threshold"] == 0.5


def test_saturated_layer_discounts_structural_zeros():
    # N = 4 probe points, d + 1 = 10: 60% of each block's eigenvalues are zero by the rank bound
    frame = layer_frame([{"saturation_fraction": 0.9, "local_near_zero_fraction": 0.7}], n_probe=4)
    assert frame["local_structural_zero_fraction"][0] == pytest.approx(0.6)
    assert rules.rule_saturated_layer(frame).is_empty()  # only 25% of the non-structural ones are near zero


def test_saddle_needs_symmetry_negative_mass_and_a_fallen_gradient():
    saddle = {"loss_symmetry": 0.05, "loss_negative_mass": 0.48}
    frame = layer_frame([
        {"step": 0, "grad_norm": 1.0, **saddle},                     # first snapshot: relative gradient 1
        {"step": 10, "grad_norm": 0.05, **saddle},                   # warning (gradient 5% of initial)
        {"step": 20, "grad_norm": 0.005, **saddle},                  # critical
        {"step": 30, "grad_norm": 0.005},                            # one-signed spectrum: a minimum
        {"step": 40, "grad_norm": 0.5, **saddle},                    # gradient still large
    ])
    found = rules.rule_saddle(frame)
    assert found["step"].to_list() == [10, 20] and severities(found) == ["warning", "critical"]


@pytest.mark.parametrize(("rule", "planted", "severity"), [
    (rules.rule_low_rank_weights, {"weight_rank_ratio": 0.2}, "critical"),
    (rules.rule_low_rank_weights, {"weight_rank_ratio": 0.4}, "warning"),
    (rules.rule_low_rank_hessian, {"loss_effective_rank_ratio": 1.1 / 160}, "critical"),
    (rules.rule_low_rank_hessian, {"loss_effective_rank_ratio": 1.5 / 160}, "warning"),
    (rules.rule_bias_dominated, {"local_bias_share_ratio": 5.0}, "warning"),
    (rules.rule_bias_dominated, {"loss_bias_share_ratio": 9.0}, "critical"),
    (rules.rule_rigid_direction, {"alignment": 0.6}, "warning"),
    (rules.rule_rigid_direction, {"alignment": 0.9}, "critical"),
    (rules.rule_adjacent_dissimilarity, {"adjacent_similarity": 0.15}, "warning"),   # chance in R^16 ~ 0.2
    (rules.rule_adjacent_dissimilarity, {"adjacent_similarity": 0.05}, "critical"),
])
def test_single_condition_rules_fire_on_planted_values_only(rule, planted, severity):
    found = rule(layer_frame([{"run_id": "planted", **planted}, {"run_id": "healthy"}]))
    assert found["run_id"].to_list() == ["planted"] and severities(found) == [severity]


def test_bias_rule_ignores_the_local_hessian_of_relu_layers():
    frame = layer_frame([{"activation": "relu", "local_exactly_zero": True, "local_bias_share_ratio": 9.0}])
    assert rules.rule_bias_dominated(frame).is_empty()


def test_small_spectral_std_against_the_corpus_percentile_and_the_absolute_floor():
    # 40 healthy rows in tied groups of ten, so the 5th percentile (index 2.05 of 42) is the lowest group
    rows = [{"run_id": f"r{i:02d}", "loss_relative_std": 10.0 + i // 10} for i in range(40)]
    rows += [{"run_id": "low", "loss_relative_std": 2.0}, {"run_id": "flat", "loss_relative_std": 0.5}]
    found = rules.rule_small_spectral_std(layer_frame(rows))
    assert dict(zip(found["run_id"], found["severity"], strict=True)) == {"low": "warning", "flat": "critical"}
    # too few reference rows: only the absolute floor applies
    found = rules.rule_small_spectral_std(layer_frame(rows[:5] + rows[-2:]))
    assert found["run_id"].to_list() == ["flat"]


def test_small_eigenvalues_last_layers_compares_last_hidden_with_first():
    def snapshot(step, first, last):
        return [{"step": step, "layer_index": 0, "local_near_zero_fraction": first},
                {"step": step, "layer_index": 1, "in_features": 16, "local_near_zero_fraction": last},
                {"step": step, "layer_index": 2, "is_output": True, "activation": "sigmoid",
                 "local_exactly_zero": True, "local_near_zero_fraction": None}]
    frame = layer_frame(snapshot(0, 0.1, 0.1) + snapshot(1, 0.1, 0.4) + snapshot(2, 0.1, 0.8))
    found = rules.rule_small_eigenvalues_last_layers(frame)
    assert found["step"].to_list() == [1, 2] and severities(found) == ["warning", "critical"]
    assert found["layer_index"].to_list() == [1, 1]
    # a network with one hidden layer has nothing to compare
    assert rules.rule_small_eigenvalues_last_layers(layer_frame([{"n_layers": 2}])).is_empty()

