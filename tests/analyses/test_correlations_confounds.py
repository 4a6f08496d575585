"""The correlation claims against their confound, the fit and length of training: a feature that goes
with the gap only because both follow the final train loss is not supported; one that adds to it is."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.correlations.verdicts import CONFOUND, NEGLIGIBLE_R, claim_data, with_derived
from analyses.stats import Estimate, Verdict, assess


def _runs(beyond: float, seed: int) -> pl.DataFrame:
    """48 runs in 6 data sets (one row each): the gap follows the final train loss; the feature follows
    it too, plus ``beyond`` times a part of the gap the train loss does not explain."""
    rng = np.random.default_rng(seed)
    n = 48
    train_loss = rng.normal(0, 1, n)
    own = rng.normal(0, 1, n)
    gap = -2.0 * train_loss + 0.5 * own + rng.normal(0, 0.3, n)
    feature = -2.0 * train_loss + beyond * own + rng.normal(0, 0.5, n)
    return pl.DataFrame({"run_id": [f"r{i}" for i in range(n)], "dataset": [f"d{i % 6}" for i in range(n)],
                         "step": rng.integers(100, 1000, n), "train_loss": train_loss, "gap_loss": gap,
                         "feature": feature, "loss_top": rng.lognormal(0, 1, n), "loss_trace": rng.lognormal(0, 1, n)})


def _call(runs: pl.DataFrame) -> tuple[str, float]:
    runs = with_derived(runs)
    groups = runs["dataset"].to_numpy()
    data = claim_data(runs, "feature", "gap_loss", groups)
    a = assess(data, "positive", 0.0)
    row = Verdict.of(Estimate(a.effect, a.effect_low, a.effect_high, a.n_runs, "runs"), "correlations.x", "001",
                     "c", "t", "r", "positive", negligible=NEGLIGIBLE_R, data=data).row("s", a)
    assert row["confound"] == CONFOUND
    return row["verdict"], a.effect


def test_a_feature_that_follows_the_train_loss_only_is_not_supported():
    verdict, effect = _call(_runs(0.0, seed=0))
    assert effect > 0.5  # as stated, the correlation looks strong
    assert verdict in ("not supported", "inconclusive")


def test_a_feature_beyond_the_train_loss_is_supported():
    verdict, _ = _call(_runs(1.5, seed=1))
    assert verdict == "supported"


def test_flatness_features_are_logs_of_positive_curvature():
    frame = with_derived(pl.DataFrame({"step": [0, 9], "loss_top": [np.e, -1.0], "loss_trace": [1.0, 0.0]}))
    assert frame["ln_loss_top"].to_list()[0] == 1.0 and frame["ln_loss_top"][1] is None
    assert frame["ln_step"].to_list()[1] == np.log(10.0) and frame["ln_loss_trace"][1] is None
