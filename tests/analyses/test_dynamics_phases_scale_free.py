"""The scale-free spectral distance against a brute-force computation and under rescaling, the hump
statistic against its definition, and the rise-then-fall verdict on planted rate series: a rise then
fall is supported; a monotone series, and spectra that only shrink (at a rate that rises then falls),
are not."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from analyses.dynamics.spectral_change import change_rates, log_rates, shape_distance, spectral_distance
from analyses.dynamics.verdicts import hump, permuted_hump, rise_fall_verdict
from analyses.stats import assess


def _brute_shape(a, b) -> float:
    """Loop form of the definition: sort descending, divide by max |λ|, RMS difference over 2."""
    a = sorted(a, reverse=True)
    b = sorted(b, reverse=True)
    m = min(len(a), len(b))
    sa = max(abs(v) for v in a[:m])
    sb = max(abs(v) for v in b[:m])
    return math.sqrt(sum((a[i] / sa - b[i] / sb) ** 2 for i in range(m))) / (2 * math.sqrt(m))


def test_shape_distance_matches_brute_force_and_is_scale_free():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = rng.normal(size=9), rng.normal(size=9)
        d = shape_distance(a, b)
        assert abs(d - _brute_shape(a, b)) < 1e-12
        assert 0 <= d <= 1
        c1, c2 = np.exp(rng.normal(scale=3, size=2))
        assert abs(shape_distance(c1 * a, c2 * b) - d) < 1e-12  # invariant to rescaling either spectrum
    a = rng.exponential(size=12)
    assert shape_distance(a, 0.01 * a) < 1e-15
    # the scale-relative distance it replaced counts a pure rescaling as change
    assert abs(spectral_distance(a, 0.5 * a) - 0.5 / 1.5) < 1e-12
    # incomplete spectra compare the common top part only
    big, other = rng.normal(size=20), rng.normal(size=10)
    assert shape_distance(big, np.sort(big)[::-1][:10] * 3, complete=False) < 1e-12
    assert abs(shape_distance(big, other, complete=False)
               - _brute_shape(np.sort(big)[::-1][:8], np.sort(other)[::-1][:8])) < 1e-12
    assert math.isnan(shape_distance(np.array([]), a))
    assert math.isnan(shape_distance(np.array([np.nan, 1.0]), a[:2]))


def test_hump_matches_its_definition():
    rng = np.random.default_rng(1)
    for n in (6, 7, 8, 17):
        x = rng.normal(size=n)
        k1 = math.ceil(n / 3) if n % 3 else n // 3
        k2 = k1 + (n // 3 + (1 if n % 3 == 2 else 0))
        first, mid, last = x[:k1], x[k1:k2], x[k2:]
        assert abs(hump(x) - min(mid.mean() - first.mean(), mid.mean() - last.mean())) < 1e-12
    assert hump(np.arange(9.0)) == -3.0  # a rising straight line: no fall
    assert hump(np.array([0, 0, 0, 0, -1, -1.0])) == 0.0  # flat, then falling: no rise
    assert hump(np.array([0, 0, 1, 1, 0.5, 0.5])) == 0.5


def _runs(series, rng, noise=0.2, n_runs=20) -> pl.DataFrame:
    """``n_runs`` runs in 4 data sets, each the log-rate ``series`` plus Gaussian noise, as hump rows with
    their permutation null."""
    rows = []
    for i in range(n_runs):
        x = np.asarray(series, float) + noise * rng.normal(size=len(series))
        rows.append({"run_id": f"r{i}", "dataset": f"d{i % 4}", "hump": hump(x),
                     "hump_null": permuted_hump(x, f"r{i}", 500)})
    return pl.DataFrame(rows)


def test_the_permutation_centred_hump_of_noise_is_centred_and_its_verdict_is_rarely_supported():
    """For iid noise E[hump] = -sigma / sqrt(pi m) (m per third): the plain hump errs against the claim;
    hump - permuted_hump is centred at 0, and the verdict on pure noise is supported in at most 5 % of 40
    simulated corpora."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2000, 9))
    plain = np.array([hump(r) for r in x])
    assert plain.mean() == pytest.approx(-1 / math.sqrt(math.pi * 3), abs=0.03)
    centred = plain - np.array([permuted_hump(r, str(i), 200) for i, r in enumerate(x[:400])]).mean()
    assert abs(centred.mean()) < 0.05
    calls = [_call(rise_fall_verdict(_runs(np.zeros(9), np.random.default_rng(s), noise=1.0, n_runs=16)))
             for s in range(40)]
    assert calls.count("supported") <= 2


def _call(v) -> str:
    a = assess(v.data, v.predicted, v.null_value)
    return v.row("dynamics", a)["verdict"]


def test_rise_then_fall_planted_supported_monotone_not():
    rng = np.random.default_rng(2)
    t = np.linspace(0, 1, 17)
    rise_fall = np.log(0.05 + np.exp(-((t - 0.5) / 0.2) ** 2))
    v = rise_fall_verdict(_runs(rise_fall, rng))
    assert v.effect > 1 and _call(v) == "supported"
    # a rate that rises (straight in log rate) all through training: no hump
    rising = -4 + 3 * t
    v = rise_fall_verdict(_runs(rising, rng))
    assert v.effect < 0 and _call(v) in ("not supported", "inconclusive")
    # flat, then falling (concave): no rise, so no rise-then-fall
    falling = np.where(t < 0.6, -3.0, -3.0 - 5 * (t - 0.6))
    v = rise_fall_verdict(_runs(falling, rng))
    assert _call(v) in ("not supported", "inconclusive")
    # too few runs: inconclusive, no data for the assessment
    v = rise_fall_verdict(_runs(rise_fall, rng).head(3))
    assert v.verdict == "inconclusive" and v.data is None


def test_scale_shrinkage_alone_gives_no_hump():
    """Spectra of fixed shape whose scale shrinks at a rate that rises then falls: the scale-relative
    rate shows the hump, the scale-free rate is at its floor everywhere and shows none."""
    rng = np.random.default_rng(3)
    steps = np.unique(np.round(np.geomspace(1, 3000, 18)) - 1)
    t = np.linspace(0, 1, len(steps) - 1)
    rows = []
    for i in range(20):
        shape = np.sort(rng.exponential(size=10))[::-1]
        shrink = 0.05 + 0.6 * np.exp(-((t - 0.5) / 0.2) ** 2)
        scales = np.exp(-np.concatenate([[0], np.cumsum(shrink)]))
        spectra = [c * shape for c in scales]
        d_shape = np.array([shape_distance(a, b) for a, b in zip(spectra[:-1], spectra[1:], strict=True)])
        d_rel = np.array([spectral_distance(a, b) for a, b in zip(spectra[:-1], spectra[1:], strict=True)])
        x = log_rates(change_rates(steps, d_shape))
        rows.append({"run_id": f"r{i}", "dataset": f"d{i % 4}", "hump": hump(x),
                     "hump_null": permuted_hump(x, f"r{i}", 200),
                     "hump_relative": hump(log_rates(change_rates(steps, d_rel)))})
    runs = pl.DataFrame(rows)
    assert (runs["hump_relative"] > 0.3).all()
    v = rise_fall_verdict(runs)
    assert abs(v.effect) < 1e-9 and _call(v) != "supported"
