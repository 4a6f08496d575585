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


def _snapshots(beyond: float, seed: int) -> pl.DataFrame:
    """The planted runs of :func:`_runs` as a stage input: two snapshots per run (the last one carries
    the planted values), every claim's feature column present, ``loss_std`` minus the planted feature
    (the §5.5.4 claim predicts a negative r, so the train-loss-only case looks right as stated)."""
    runs = _runs(beyond, seed)
    rng = np.random.default_rng(seed + 10)
    cols = ("weight_rank_ratio", "stable_rank_ratio", "local_effective_rank_ratio", "loss_relative_std",
            "adjacent_similarity", "primary_metric")
    last = runs.with_columns(loss_std=-pl.col("feature"), task=pl.lit("classification"),
                             **{c: pl.Series(rng.normal(0, 1, runs.height)) for c in cols}).drop("feature")
    first = last.with_columns(step=pl.lit(0, dtype=last["step"].dtype))
    return pl.concat([first, last])


def _stage_call(beyond: float, seed: int) -> str:
    """The stage's own verdict (claim_verdicts) on the §5.5.4 absolute-std row, assessed by the core."""
    from analyses.correlations.verdicts import claim_verdicts

    (v,) = [v for v in claim_verdicts(_snapshots(beyond, seed)) if v.claim_id.endswith("s5_5_4_hessian_std")]
    row = v.row("correlations", assess(v.data, v.predicted, v.null_value))
    assert row["confound"] == CONFOUND and row["beyond_name"].startswith("partial r")
    return row["verdict"]


def test_stage_verdict_is_not_supported_when_the_gap_is_the_train_loss_only():
    # planted: loss_std and the gap both follow the train loss only; r(loss_std, gap) ~ -0.9 as stated
    from analyses.correlations.verdicts import claim_verdicts

    (v,) = [v for v in claim_verdicts(_snapshots(0.0, 2)) if v.claim_id.endswith("s5_5_4_hessian_std")]
    assert v.effect < -0.5
    assert _stage_call(0.0, seed=2) in ("not supported", "inconclusive")


def test_stage_verdict_is_decided_beyond_the_train_loss():
    # beyond: loss_std carries minus the gap's own part, a true negative partial r given the train loss
    assert _stage_call(1.5, seed=3) == "supported"
