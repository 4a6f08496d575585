"""The pressure verdicts against their mechanism: a claim whose per-run rank correlation is what the
early gradient size alone gives is not supported; one beyond it is."""

from __future__ import annotations

import math

import numpy as np

from analyses.pressure.rank_correlation import RankCorrelation
from analyses.pressure.verdicts import rho_claim_data
from analyses.stats import Estimate, Verdict, assess


def _rc(rho: dict[str, float]) -> RankCorrelation:
    v = np.array(list(rho.values()))
    return RankCorrelation(Estimate(float(v.mean()), math.nan, math.nan, len(v), "runs"), rho, math.nan, 0)


def _planted(shift: float, seed: int) -> tuple[RankCorrelation, RankCorrelation, dict[str, str]]:
    """Per run, the gradient-size baseline's ρ and pressure's ρ = baseline + shift + noise; 6 data sets."""
    rng = np.random.default_rng(seed)
    runs = [f"d{d}r{r}" for d in range(6) for r in range(10)]
    base = {r: float(np.clip(rng.normal(0.4, 0.3), -1, 1)) for r in runs}
    claim = {r: float(np.clip(base[r] + shift + rng.normal(0, 0.1), -1, 1)) for r in runs}
    return _rc(claim), _rc(base), {r: r.split("r")[0] for r in runs}


def _call(claim: RankCorrelation, base: RankCorrelation, datasets: dict[str, str]) -> str:
    data = rho_claim_data(claim, datasets, base)
    a = assess(data, "negative", 0.0)
    return Verdict.of(claim.effect, "pressure.x", "000", "c", "t", "rho", "negative", data=data).row("s", a)["verdict"]


def test_pressure_ranked_like_gradient_size_is_no_evidence():
    # the mechanism alone: pressure's ρ is the gradient size's ρ (both positive, against the claim)
    claim, base, datasets = _planted(0.0, seed=0)
    assert _call(claim, base, datasets) == "inconclusive"


def test_pressure_beyond_gradient_size_is_supported():
    # pressure ranks the slow layers well beyond what gradient size does
    claim, base, datasets = _planted(-0.5, seed=1)
    assert _call(claim, base, datasets) == "supported"


def test_without_runs_there_is_nothing_to_hand_over():
    assert rho_claim_data(RankCorrelation(Estimate.missing(0, "runs"), {}, math.nan, 0), {}) is None
