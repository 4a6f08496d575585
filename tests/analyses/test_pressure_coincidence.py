"""The pressure stage's coincidence of the top-pressure and the slowest-improving layer (000)."""

from __future__ import annotations

import pytest

from analyses.pressure.coincidence import coincidence
from analyses.stats import decide
from tests.analyses.pressure_inputs import layers


def test_coincidence_of_top_pressure_and_slowest_layer():
    runs, p, y = layers(sign=-1.0)
    s = coincidence(runs, p, y)
    assert s.rate == 1.0 and s.chance == pytest.approx(0.25)
    # every run hits: the bootstrap interval has zero width, and no call is made on it
    assert s.effect.low == s.effect.high == pytest.approx(0.75)
    assert decide(s.effect.low, s.effect.high, "positive") == "inconclusive"
    runs, p, y = layers(sign=1.0)
    s = coincidence(runs, p, y)
    assert s.rate == 0.0 and s.effect.value == pytest.approx(-0.25)
