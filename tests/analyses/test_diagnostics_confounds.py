"""Diagnostics verdicts against their confounds: a snapshot correlation that is training time alone is
not supported, one beyond it is; a bias share no larger than the untrained network's is not evidence."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.diagnostics.verdicts import NEGLIGIBLE_R, snapshot_claim_data
from analyses.stats import Estimate, Verdict, assess


def _snapshots(beyond: float, seed: int) -> pl.DataFrame:
    """40 runs in 5 data sets x 8 snapshots: both columns drift with ln(1 + step); ``beyond`` ties y to
    x's deviation from the drift."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(5):
        for r in range(8):
            for step in (0, 3, 10, 30, 100, 300, 1000, 3000):
                t = np.log1p(step)
                own = rng.normal()
                rows.append({"run_id": f"d{d}r{r}", "dataset": f"d{d}", "step": step, "x": t + own,
                             "y": t + beyond * own + rng.normal()})
    return pl.DataFrame(rows)


def _call(frame: pl.DataFrame) -> str:
    data = snapshot_claim_data(frame, "x", "y")
    a = assess(data, "positive", 0.0)
    est = Estimate(a.effect, a.effect_low, a.effect_high, a.n_runs, "runs")
    return Verdict.of(est, "diagnostics.x", "001", "c", "t", "r", "positive", negligible=NEGLIGIBLE_R,
                      data=data).row("s", a)["verdict"]


def test_a_snapshot_correlation_that_is_training_time_alone_is_not_supported():
    frame = _snapshots(0.0, seed=0)
    assert np.corrcoef(frame["x"], frame["y"])[0, 1] > 0.5  # as stated it looks strong
    assert _call(frame) in ("not supported", "inconclusive")


def test_a_snapshot_correlation_beyond_training_time_is_supported():
    assert _call(_snapshots(1.0, seed=1)) == "supported"


def _bias_frame(gain: float, seed: int) -> pl.DataFrame:
    """30 runs in 5 data sets, 3 layers x 4 snapshots: the untrained (first-snapshot) bias share ratio
    is already ~2.8 (a random layer's structure, as measured); trained snapshots add ``gain``."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(30):
        base = 2.8 + rng.normal(0, 0.1)
        for k, step in enumerate((0, 10, 100, 1000)):
            for layer in range(3):
                rows.append({"run_id": f"r{r}", "dataset": f"d{r % 5}", "step": step, "layer": layer,
                             "is_first_snapshot": k == 0, "local_eligible": True,
                             "loss_bias_share_ratio": base + (gain if k else 0.0) + rng.normal(0, 0.1)})
    return pl.DataFrame(rows)


def _bias_call(frame: pl.DataFrame) -> tuple[str, dict]:
    from analyses.diagnostics.verdicts import verdict_bias

    v = verdict_bias(frame, "loss")
    row = v.row("diagnostics", assess(v.data, v.predicted, v.null_value))
    return row["verdict"], row


def test_a_bias_share_no_larger_than_the_untrained_layers_is_not_supported():
    verdict, row = _bias_call(_bias_frame(0.0, seed=0))
    assert row["ci_low"] > 2.0  # against the 1/(d+1) null alone it would be "supported"
    assert row["confound"].startswith("initialization") and abs(row["baseline_effect"] - 2.8) < 0.1
    assert verdict in ("not supported", "inconclusive")


def test_a_bias_share_above_the_untrained_layers_is_supported():
    verdict, row = _bias_call(_bias_frame(0.5, seed=1))
    assert abs(row["beyond_effect"] - 0.5) < 0.1
    assert verdict == "supported"
