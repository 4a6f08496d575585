"""Diagnostics verdicts: planted effects make them "supported" and reversed ones "not supported", on the
stage's own estimate and on the pooled one that decides (write_verdicts)."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from analyses.diagnostics import verdicts
from analyses.kit.tables import write_verdicts
from tests.analyses.diagnostics_inputs import layer_frame


def _correlated(n_runs: int, per_run: int, slope: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n_runs * per_run)
    y = 0.5 + slope * (x - 0.5) + rng.normal(0, 0.05, x.size)
    runs = [f"r{i:02d}" for i in range(n_runs) for _ in range(per_run)]
    return x, y, runs


@pytest.mark.parametrize(("slope", "verdict"), [(0.8, "supported"), (-0.8, "not supported")])
def test_saturation_verdict_planted_and_reversed(slope, verdict):
    x, y, runs = _correlated(12, 4, slope)
    frame = layer_frame([{"run_id": r, "step": i, "saturation_fraction": a, "local_near_zero_fraction": b}
                    for i, (r, a, b) in enumerate(zip(runs, x, y, strict=True))])
    paper, sharp = verdicts.verdict_saturation(frame)
    assert paper.verdict == verdict and paper.n == 12 and paper.n_unit == "runs"
    assert sharp.role == "sharpened" and sharp.pair == paper.claim_id


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
    v = verdicts.verdict_rigid(pl.DataFrame(rows))
    assert v.verdict == verdict and v.n == 12


@pytest.mark.parametrize(("difference", "verdict"), [(-0.05, "supported"), (0.05, "not supported")])
def test_normalization_verdict_planted_and_reversed(difference, verdict):
    rng = np.random.default_rng(2)
    d = difference + rng.normal(0, 0.01, 6)
    # two normalized runs (batch and layer norm) per unnormalized twin: n counts twins, not pairs
    comparison = pl.DataFrame({"dataset": [f"d{i // 2}" for i in range(12)], "metric": "saturation_fraction",
                               "twin_run_id": [f"t{i // 2}" for i in range(12)],
                               "difference": np.repeat(d, 2) + rng.normal(0, 0.002, 12)})
    v = verdicts.verdict_normalization(comparison)
    assert v.verdict == verdict and v.n == 6 and "12 matched pairs" in v.detail


@pytest.mark.parametrize(("trained", "untrained", "verdict"), [
    (2.0, 1.0, "supported"),  # training raises the share above what the untrained layers have
    (2.0, 2.0, "not supported"),  # above 1/(d+1), but no more than at initialization: inside the band
    (0.5, 1.0, "not supported"),  # training lowers it
])
def test_bias_verdict_against_the_untrained_layers(trained, untrained, verdict):
    rng = np.random.default_rng(3)
    rows = [{"run_id": f"r{i:02d}", "dataset": f"d{i % 4}", "step": step,
             "loss_bias_share_ratio": (untrained if step == 0 else trained) + rng.normal(0, 0.01)}
            for i in range(12) for step in (0, 10, 20)]
    paper, sharp = verdicts.verdict_bias(layer_frame(rows), "loss")
    con = duckdb.connect()
    write_verdicts(con, "diagnostics", [paper, sharp])
    (p_call,), (s_call, baseline) = con.execute(
        "SELECT verdict FROM analysis_diagnostics_verdicts WHERE role = 'paper' UNION ALL "
        "SELECT verdict || '|' || baseline_effect FROM analysis_diagnostics_verdicts WHERE role = 'sharpened'"
    ).fetchall()[0], con.execute("SELECT verdict, baseline_effect FROM analysis_diagnostics_verdicts "
                                 "WHERE role = 'sharpened'").fetchall()[0]
    # against 1/(d+1), the paper's test, any share above 1 holds
    assert p_call == ("supported" if trained > 1 else "not supported")
    assert s_call == verdict and baseline == pytest.approx(untrained, abs=0.01)


@pytest.mark.parametrize(("slope", "verdict"), [(0.8, "supported"), (-0.8, "not supported")])
def test_last_layer_verdict_planted_and_reversed(slope, verdict):
    x, y, runs = _correlated(20, 1, slope, seed=4)
    pairs = pl.DataFrame({"run_id": runs, "step": 5, "difference": x})
    snapshots = pl.DataFrame({"run_id": runs, "step": 5, "gap_loss": y})
    paper, _ = verdicts.verdict_last_layers(pairs, snapshots)
    assert paper.verdict == verdict and paper.n == 20

