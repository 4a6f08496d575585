"""Persistent homology of neuron weight clouds (:mod:`analyses.topology.homology`).

References: the known-answer barcode of the issue, persim's persistent entropy, ripser's H0 diagram,
and scipy's minimum spanning tree on the full distance matrix (an independent brute force).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from persim.persistent_entropy import persistent_entropy as persim_entropy
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

from analyses.topology import homology as ph


def _scipy_mst(points: np.ndarray) -> np.ndarray:
    """Brute-force reference: scipy's MST of the full distance matrix (distinct points: no zero edge)."""
    return np.sort(minimum_spanning_tree(squareform(pdist(points))).data)


def test_known_answer_barcode() -> None:
    s = ph.summarize_bars(np.array([1.0, 1.0, 2.0]), mean_neuron_norm=2.0, n_points=4)
    assert s.n_bars == 3 and s.total_lifetime == 4.0
    assert s.entropy == pytest.approx(1.03972, abs=5e-6)
    assert s.normalized_entropy == pytest.approx(0.946395, abs=5e-7)
    assert s.normalized_entropy_log_total == pytest.approx(1.0397207708 / math.log(4), rel=1e-10)
    assert s.mean_lifetime == pytest.approx(4 / 3) and s.mean_lifetime_scaled == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_normalized_entropy_equals_persim(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(20 + 10 * seed, 6))
    deaths = ph.h0_deaths(points, "ripser")
    diagram = np.column_stack([np.zeros_like(deaths), deaths])
    s = ph.summarize_bars(deaths, 1.0, len(points))
    assert abs(s.normalized_entropy - persim_entropy(diagram, normalize=True)[0]) < 1e-12
    assert abs(s.entropy - persim_entropy(diagram)[0]) < 1e-12


@pytest.mark.parametrize("shape", [(2, 3), (17, 4), (64, 64), (40, 300), (300, 8)])
def test_h0_deaths_equal_the_minimum_spanning_tree(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    points = rng.normal(size=shape)
    reference = _scipy_mst(points)
    np.testing.assert_allclose(ph.h0_deaths(points, "ripser"), reference, rtol=1e-6)
    np.testing.assert_allclose(ph.h0_deaths(points, "mst"), reference, rtol=1e-12)


def test_clustered_points_far_from_the_origin() -> None:
    """Tight clusters at a large offset: the case where ||x||^2 + ||y||^2 - 2xy loses digits."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(5, 10)) * 3 + 1e3
    points = np.vstack([c + 1e-4 * rng.normal(size=(12, 10)) for c in centres])
    reference = _scipy_mst(points)
    np.testing.assert_allclose(ph.h0_deaths(points, "mst"), reference, rtol=1e-6)
    np.testing.assert_allclose(ph.h0_deaths(points, "ripser"), reference, rtol=1e-3)  # float32 distances


def test_duplicate_and_dead_neurons() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(6, 4))
    weight = np.vstack([base, base[[1, 1, 4]], np.zeros((2, 4))])  # 3 duplicate rows, 2 dead rows
    summary, cloud, deaths = ph.layer_topology(weight)
    assert (cloud.n_neurons, cloud.n_dead, cloud.n_duplicates, cloud.n_points) == (11, 2, 3, 6)
    assert summary.n_bars == 5 and (deaths > 0).all()
    clean, _, _ = ph.layer_topology(base)
    assert summary == clean
    # a duplicate that differs in the bias is not a duplicate once the bias is appended
    bias = np.arange(11.0)
    bias[9:] = 0.0
    _, with_bias, _ = ph.layer_topology(weight, bias)
    assert (with_bias.n_dead, with_bias.n_duplicates, with_bias.n_points) == (2, 0, 9)


@pytest.mark.parametrize("rows", [0, 1])
def test_fewer_than_two_points_have_no_bars(rows: int) -> None:
    weight = np.vstack([np.ones((rows, 3)), np.zeros((2, 3))])
    s, cloud, deaths = ph.layer_topology(weight)
    assert cloud.n_points == rows and len(deaths) == 0 and s.n_bars == 0
    assert s.entropy is None and s.normalized_entropy is None and s.mean_lifetime is None
    assert s.normalized_entropy_log_total is None and s.mean_lifetime_scaled is None


def test_one_bar_and_unit_total_lifetime() -> None:
    s = ph.summarize_bars(np.array([2.5]), 1.0, 2)
    assert s.entropy == 0.0 and s.normalized_entropy is None and s.normalized_entropy_log_total == 0.0
    s = ph.summarize_bars(np.array([0.25, 0.75]), 1.0, 3)  # L = 1: ln L = 0
    assert s.normalized_entropy_log_total is None and s.normalized_entropy == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2))


def test_zero_length_bars_are_left_out() -> None:
    assert ph.summarize_bars(np.array([0.0, 1.0, 1.0]), 1.0, 4) == ph.summarize_bars(np.array([1.0, 1.0]), 1.0, 4)
    assert ph.persistent_entropy(np.zeros(3)) is None


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="matrix"):
        ph.neuron_point_cloud(np.ones(4))
    with pytest.raises(ValueError, match="bias has 2 entries for 3 neurons"):
        ph.neuron_point_cloud(np.ones((3, 2)), np.ones(2))
    with pytest.raises(ValueError, match="non-finite"):
        ph.neuron_point_cloud(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="method"):
        ph.h0_deaths(np.ones((3, 2)), "kruskal")

