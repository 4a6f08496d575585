"""Calibration by simulation: the intervals the verdicts decide on cover a planted effect at their nominal
95% at the corpora's sizes (k in {5, 10, 20} data sets, m in {10, 30} runs each, between-data-set SD in
{0, 0.1, 0.3}), for every kind of estimand (:mod:`analyses.stats.calibration`).

The fast version runs REPS corpora a cell (seeded). Tolerance: every cell's coverage in [0.87, 1]
(REPS = 120: a cell at a true 95% falls below 0.87 with probability under 1e-4), and each kind's
coverage over its 18 cells (2,160 corpora, Monte Carlo SE 0.5 %) in [0.93, 0.97].
``benchmarks/calibration.py`` runs 1,000 a cell for the table in docs/verdicts/calibration.md."""

from __future__ import annotations

import pytest

from analyses.stats.calibration import KINDS, Cell, coverage, grid

REPS = 120
CELL_FLOOR = 0.87
KIND_BAND = (0.93, 0.97)


@pytest.mark.parametrize("kind", KINDS)
def test_intervals_cover_the_planted_effect(kind: str) -> None:
    hits = total = 0
    low_cells = []
    for i, cell in enumerate(grid((kind,))):
        cov, n = coverage(cell, REPS, seed=1000 + i)
        assert n >= 0.95 * REPS, f"{cell}: only {n} of {REPS} corpora had an interval"
        if cov < CELL_FLOOR:
            low_cells.append((cell, cov))
        hits += cov * n
        total += n
    assert not low_cells, f"cells below {CELL_FLOOR}: {low_cells}"
    assert KIND_BAND[0] <= hits / total <= KIND_BAND[1], f"{kind}: coverage {hits / total:.3f} over the grid"


def test_one_cell_is_reproducible() -> None:
    cell = Cell("mean", 5, 10, 0.3)
    assert coverage(cell, 20, seed=7) == coverage(cell, 20, seed=7)
