"""Dynamics math: spectral distance, change rates per e-fold, exact change points (against brute force,
planted shifts and stationary series) and the phase-naming rule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from analyses.dynamics.phases import PHASES, SINGLE_PHASE, name_segments, segment_rates
from analyses.dynamics.segmentation import change_points, noise_sigma, optimal_partitions
from analyses.dynamics.spectral_change import change_rates, spectral_distance


def test_spectral_distance_is_scale_free_and_uses_common_top_part():
    rng = np.random.default_rng(0)
    lam = rng.exponential(size=30)
    assert spectral_distance(lam, lam) == 0.0
    for c in (0.5, 2.0, 7.0):
        assert spectral_distance(lam, c * lam) == pytest.approx(abs(c - 1) / (c + 1))
        # scale-free: the same relative change at any scale
        assert spectral_distance(10 * lam, 10 * c * lam) == pytest.approx(spectral_distance(lam, c * lam))
    assert spectral_distance(np.zeros(5), np.zeros(5)) == 0.0
    # incomplete spectra compare the common sorted top part (order of input irrelevant)
    top = np.array([5.0, 4.0, 3.0])
    longer = np.array([-1.0, 3.0, 5.0, 4.0, -2.0])
    assert spectral_distance(top, longer, complete=False) == 0.0
    assert math.isnan(spectral_distance(np.array([np.nan, 1.0]), np.array([1.0, 2.0])))


def test_change_rates_per_efold_of_steps():
    steps = np.array([0, 1, 3, 7])
    d = np.array([0.2, 0.1, 0.3])
    expected = d / np.diff(np.log(steps + 1.0))
    np.testing.assert_allclose(change_rates(steps, d), expected)


def _brute_force_sse(x: np.ndarray, k: int, min_seg: int) -> float:
    n, best = len(x), math.inf
    for taus in itertools.combinations(range(1, n), k):
        bounds = [0, *taus, n]
        if min(b - a for a, b in itertools.pairwise(bounds)) < min_seg:
            continue
        best = min(best, sum(float(((x[a:b] - x[a:b].mean()) ** 2).sum()) for a, b in itertools.pairwise(bounds)))
    return best


def test_optimal_partitions_is_exact():
    rng = np.random.default_rng(3)
    for n in (4, 7, 11):
        x = rng.normal(size=n)
        parts = optimal_partitions(x, max_changes=3, min_segment=2)
        for k in range(4):
            ref = _brute_force_sse(x, k, 2)
            if math.isinf(ref):
                assert k not in parts
            else:
                assert parts[k][0] == pytest.approx(ref, abs=1e-9)
                bounds = [0, *parts[k][1], n]
                got = sum(float(((x[a:b] - x[a:b].mean()) ** 2).sum()) for a, b in itertools.pairwise(bounds))
                assert got == pytest.approx(ref, abs=1e-9)


def _planted(rng: np.random.Generator, n: int, taus: list[int], shift: float = 5.0) -> np.ndarray:
    level, x = 0.0, np.zeros(n)
    for t in taus:
        level += rng.choice([-1.0, 1.0]) * shift
        x[t:] = level
    return x + rng.normal(size=n)


PLANTED = [(10, [5]), (12, [4, 8]), (9, [3, 6]), (20, [5, 10, 15]), (16, [4, 8, 12]), (40, [10, 25, 33]),
           (60, [15, 30, 45]), (30, [12])]


def test_change_points_recover_planted_shifts_within_one_index():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        series = [_planted(rng, n, taus) for n, taus in PLANTED]
        sigma = noise_sigma(series)  # pooled over the batch, as run() pools over runs
        for x, (_, taus) in zip(series, PLANTED, strict=True):
            found = change_points(x, sigma=sigma)
            assert len(found) == len(taus), (seed, taus, found)
            assert all(abs(a - b) <= 1 for a, b in zip(found, taus, strict=True)), (seed, taus, found)


def test_change_points_find_none_in_stationary_series():
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        series = [rng.normal(size=n) * 0.7 + 3.0 for n in (9, 12, 20, 40, 60)]
        sigma = noise_sigma(series)
        for x in series:
            assert change_points(x, sigma=sigma) == [], (seed, len(x))
        # long series also with their own noise estimate
        assert change_points(series[-1]) == []


def test_change_points_short_or_bad_input():
    assert change_points(np.array([])) == []
    assert change_points(np.array([1.0, 5.0, 1.0])) == []
    assert change_points(np.array([1.0, np.nan, 1.0, 2.0, 3.0])) == []


def test_name_segments_rule():
    assert name_segments([0.3]) == [SINGLE_PHASE]
    assert name_segments([1.0, 3.0]) == ["initial", "fast learning"]
    assert name_segments([3.0, 1.0]) == ["fast learning", "fine-tuning"]
    assert name_segments([3.0, 0.5]) == ["fast learning", "saturation"]
    assert name_segments([0.2, 0.5, 3.0, 1.0, 0.1]) == ["initial", "initial", "fast learning", "fine-tuning",
                                                         "saturation"]


def test_planted_four_phase_series_is_named_in_order():
    rng = np.random.default_rng(7)
    levels, length = [0.1, 1.0, 0.4, 0.03], 6
    rates = np.repeat(levels, length) * np.exp(rng.normal(scale=0.15, size=length * 4))
    seg = segment_rates(rates, sigma=0.15)
    assert [p[0] for p in seg.phases] == list(PHASES)
    starts = [a for _, a, _ in seg.phases]
    assert all(abs(s - t) <= 1 for s, t in zip(starts, [0, 6, 12, 18], strict=True))
    # the two-level rise is merged into one "initial" phase, not two
    seg2 = segment_rates(np.repeat([0.01, 0.1, 1.0], 5) * np.exp(rng.normal(scale=0.1, size=15)), sigma=0.1)
    assert [p[0] for p in seg2.phases] == ["initial", "fast learning"]
    assert seg2.segment.max() == 2 and seg2.phase.max() == 1


def test_segment_rates_with_few_intervals():
    for n in range(4):
        seg = segment_rates(np.full(n, 0.3))
        assert [p[0] for p in seg.phases] == [SINGLE_PHASE]
