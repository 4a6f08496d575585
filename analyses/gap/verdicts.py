"""The gap stage's verdicts on paper 004's three claims (four rows: the first claim is tested in the
paper's setting and in a stricter one)."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.gap.predictors import MAIN, PAPER_N_MODELS, PAPER_R2, SPECIFICATIONS, column, design
from analyses.gap.regression import N_BOOT, RANDOM_FOLDS, cv_r2, n_folds, transfer_predictions
from analyses.presentation import fmt_number
from analyses.stats import Estimate, Verdict, stratified_bootstrap


def paired_difference(paired: dict[str, pl.DataFrame], first: tuple[str, str], second: tuple[str, str],
                      n_boot: int = N_BOOT) -> Estimate:
    """R^2_cv(first) - R^2_cv(second) on the same models, each a (feature stage, fit stage) pair, with
    :data:`RANDOM_FOLDS` random folds of models (the same folds for both terms: the paper's within-data-set
    setting) and a stratified bootstrap interval (both terms on the same resamples); n counts models,
    ``groups`` data sets."""
    features = SPECIFICATIONS[MAIN][1]
    groups = paired["late"]["dataset"].to_numpy()
    n, k = len(groups), len(np.unique(groups))
    folds = np.random.default_rng(7).permutation(n) % RANDOM_FOLDS
    if n < len(features) + 3 or n_folds(folds, RANDOM_FOLDS) == 0:
        return Estimate.missing(n, "models", groups=k)

    def parts(stage_pair: tuple[str, str]) -> tuple[np.ndarray, ...]:
        stage, fit = stage_pair
        f = paired[stage]
        return design(paired[fit], features), column(paired[fit], "gap"), design(f, features), column(f, "gap")

    a, b = parts(first), parts(second)

    def score(idx: np.ndarray) -> float:
        ra = cv_r2(a[3][idx], transfer_predictions(a[0][idx], a[1][idx], a[2][idx], folds[idx], RANDOM_FOLDS))
        rb = cv_r2(b[3][idx], transfer_predictions(b[0][idx], b[1][idx], b[2][idx], folds[idx], RANDOM_FOLDS))
        return ra - rb

    return stratified_bootstrap(score, groups, n_boot, seed=1, unit="models")


def _r2_cv(row: dict) -> Estimate:
    """The cross-validated R^2 of a regression row, with its bootstrap interval."""
    def value(key: str) -> float:
        return np.nan if row[key] is None else row[key]

    return Estimate(value("r2_cv"), value("r2_cv_low"), value("r2_cv_high"), row["n_models"], "models",
                    groups=row["n_datasets"])


def verdicts(main: dict, random: dict, paired: dict[str, pl.DataFrame]) -> list[Verdict]:
    """The verdicts from the main specification's rows (folds grouped by data set: ``main``; random folds:
    ``random``) and the models with every stage (``paired``, per stage)."""
    def covers(row: dict) -> str:
        lo, hi = row["r2_cv_low"], row["r2_cv_high"]
        if lo is None or hi is None:
            return "no interval"
        return f"the paper's {PAPER_R2} is {'inside' if lo <= PAPER_R2 <= hi else 'outside'} the interval"

    out = [Verdict.of(
        _r2_cv(random), "gap.margins_predict_gap", "004; Jiang et al. 2019",
        f"A linear model on training-set margin statistics predicts the generalization gap (R^2 = {PAPER_R2} "
        f"over {PAPER_N_MODELS} models).",
        f"OLS of the final gap on the margin signature at input, h0 and output (slog), {RANDOM_FOLDS} random folds "
        "of models (the paper's setting: a model's data set is in the fit); bootstrap of models within data sets",
        "r2_cv", "positive", with_p=False,
        detail=f"{random['n_datasets']} data sets; in-sample R^2 = {fmt_number(random['r2'])}, adjusted "
               f"{fmt_number(random['r2_adj'])}; {covers(random)}; the interval holds the data sets fixed"),
        Verdict.of(
        _r2_cv(main), "gap.margins_predict_unseen_datasets", "004; Jiang et al. 2019",
        "The margin model also predicts the gap of networks on data sets it was not fitted on (a stricter test "
        "than the paper's).",
        "The same OLS, cross-validated with folds grouped by data set; bootstrap of models within data sets",
        "r2_cv", "positive", with_p=False, detail=f"{main['n_datasets']} data sets; {covers(main)}")]
    late_only = paired_difference(paired, ("late", "late"), ("early", "early"))
    out.append(Verdict.of(
        late_only, "gap.late_only", "004", "Margin statistics relate to the gap only late in training.",
        f"R^2_cv ({RANDOM_FOLDS} random folds) at the last snapshot minus at the snapshot nearest 20 % of training "
        "(gap at the same step), same models and folds, paired bootstrap", "r2_cv(late) - r2_cv(early)", "positive",
        with_p=False, detail=f"{late_only.groups} data sets"))
    transfer = paired_difference(paired, ("middle", "late"), ("late", "late"))
    out.append(Verdict.of(
        transfer, "gap.no_transfer", "004", "A gap model fitted on long-trained networks does not carry over to "
        "shorter-trained ones.",
        f"R^2 of the late-fitted model ({RANDOM_FOLDS} random folds) on held-out models at the snapshot nearest half "
        "the steps minus its R^2 on their late snapshots, paired bootstrap", "r2(late fit -> middle) - r2_cv(late)",
        "negative", with_p=False, detail=f"{transfer.groups} data sets"))
    return out
