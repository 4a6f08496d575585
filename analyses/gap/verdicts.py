"""The gap stage's verdicts on paper 004's claims, on the Jiang et al. fits (:mod:`analyses.gap.fits`).

Every verdict on a random-fold fit hands its models to the core with a statistic that refits the whole
cross-validation on the models it is given (:mod:`analyses.gap.resample`), so its interval is a
bootstrap of the whole procedure, models drawn within their data sets. The claim that margins predict
the gap has two rows: the paper's (the margin model alone, pooled) and the sharpened one (what the
margins add to the data-set indicators, in a nested fit). The unseen-data-set claim is decided per
held-out data set and pooled across data sets by random effects."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import polars as pl

from analyses.gap.fits import BOTH, IND, LQ, POOLED, _design, kept_models, paired_kept
from analyses.gap.jiang import MIN_MODELS, N_FOLDS, N_REPEATS, STALL_LOSS_RATIO, r2_score, tau_score, tau_within
from analyses.gap.predictors import PAPER_N_MODELS, PAPER_R2, column
from analyses.gap.resample import CVFit, Score, cv_statistic
from analyses.stats import ClaimData, Estimate, Jackknifed, Resampled, Verdict

#: Band of an R^2 difference, a tau difference and of the paper's 0.89 treated as no difference.
R2_BAND, TAU_BAND, PAPER_BAND = 0.02, 0.02, 0.05
#: Bootstrap draws of the whole cross-validation per verdict.
N_REFIT = 400
SOURCE = "004; Jiang et al. 2019"
SETTING = (f"OLS on ln Q1, ln median, ln Q3 of the normalized margins (correct training points) at input, h0 "
           f"and output; {N_REPEATS} x {N_FOLDS} random folds of models (the paper's setting); stalled runs "
           f"(final training loss > {STALL_LOSS_RATIO} x initial) and label-noise runs left out")
REFIT = f"interval: {N_REFIT} bootstrap draws of the models within their data sets, the cross-validation refitted"

def _fit(frame: pl.DataFrame, predictors: str, eval_frame: pl.DataFrame | None = None) -> CVFit:
    """The cross-validated fit of ``predictors`` on ``frame``'s models, evaluated on ``eval_frame``'s (the
    same models at another stage; default the same)."""
    levels = frame["dataset"].to_numpy()
    ev = frame if eval_frame is None else eval_frame
    return CVFit(_design(frame, predictors, levels), column(frame, "gap"), _design(ev, predictors, levels),
                 column(ev, "gap"))


def _claim(frame: pl.DataFrame, fits: Mapping[str, CVFit], score: Score, seed: int, confound: str = "",
           baseline: Callable[[np.ndarray], float] | None = None, baseline_name: str = "",
           bounds: tuple[float, float] | None = None) -> ClaimData:
    """The claim data of a refitted cross-validation score; ``bounds``: the score's range (an R^2 is at
    most 1, a tau in [-1, 1]), which clips the interval's ends."""
    return ClaimData(frame.select("run_id", "dataset"),
                     Resampled(cv_statistic(fits, score), N_REFIT, seed, "cross-validated score", bounds),
                     confound=confound, baseline=baseline, baseline_name=baseline_name)


R2_BOUNDS, TAU_BOUNDS = (-math.inf, 1.0), (-1.0, 1.0)


def _r2(name: str) -> Score:
    return lambda out, idx: r2_score(*out[name])


def _tau(name: str) -> Score:
    return lambda out, idx: tau_score(*out[name])


def _estimate(value: float, frame: pl.DataFrame) -> Estimate:
    return Estimate.missing(frame.height, "models", value, groups=frame["dataset"].n_unique())


def _stall_note(stall: list[dict]) -> str:
    """The pooled fit's scores at the other stall ratios, for a verdict's detail."""
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3g}"
    return "; at other stall ratios " + ", ".join(
        f"{s['stall_ratio']}: R^2_cv {num(s['r2_cv'])}, tau_cv {num(s['tau_cv'])} ({s['n_models']} models)"
        for s in stall) if stall else ""


def margins_predict(late: pl.DataFrame, score: str, stall: list[dict] = ()) -> list[Verdict]:
    """Margins predict (``score = "r2"``) or rank (``"tau"``) the gap: the paper's row, the pooled margin
    model's score; the sharpened row, beyond data-set identity: R^2 of margins + indicators minus that of
    the indicators alone (nested, same folds), or tau within data sets of margins + indicators (no pair
    across data sets counts, so identity ranks nothing)."""
    fits = {"lq": _fit(late, LQ), "both": _fit(late, BOTH), "ind": _fit(late, IND)}
    g = late["dataset"].to_numpy()
    claim_id = "gap.margins_predict_gap" if score == "r2" else "gap.margins_rank_gap"
    word = "predicts" if score == "r2" else "ranks"
    band = R2_BAND if score == "r2" else TAU_BAND
    k = late["dataset"].n_unique()
    if score == "r2":
        paper = _claim(late, {"lq": fits["lq"]}, _r2("lq"), 1, bounds=R2_BOUNDS)
        sharp = _claim(late, {"both": fits["both"], "ind": fits["ind"]},
                       lambda out, idx: r2_score(*out["both"]) - r2_score(*out["ind"]), 2, "data-set identity")
        sharp_name = "r2_cv(margins + indicators) - r2_cv(indicators)"
    else:
        paper = _claim(late, {"lq": fits["lq"]}, _tau("lq"), 3, bounds=TAU_BOUNDS)
        sharp = _claim(late, {"both": fits["both"]}, lambda out, idx: tau_within(*out["both"], g[idx]), 4,
                       "data-set identity", bounds=TAU_BOUNDS)
        sharp_name = "tau_cv within data sets (pair-weighted)"
    paper_value = paper.estimand.value(np.arange(late.height))
    sharp_value = sharp.estimand.value(np.arange(late.height))
    claim = (f"A linear model on training-set margin statistics {word} the generalization gap (R^2 = {PAPER_R2} "
             f"over {PAPER_N_MODELS} models)")
    detail = f"{k} data sets" + _stall_note(stall)
    common = {"predicted": "positive", "with_p": False, "negligible": band, "band_units": f"{score}_cv",
              "detail": detail}
    return [
        Verdict.of(_estimate(paper_value, late), claim_id, SOURCE, claim + ".",
                   f"{SETTING}; the margin model alone, pooled over data sets (the paper's test); {REFIT}",
                   f"{score}_cv", data=paper, **common),
        Verdict.of(_estimate(sharp_value, late), f"{claim_id}.beyond_datasets", SOURCE,
                   claim + ", beyond what the data set a model was trained on says.",
                   f"{SETTING}; data-set indicators in the fit; the margins' gain over the indicators alone, same "
                   f"folds (the sharpened test); {REFIT}", sharp_name, data=sharp, role="sharpened", pair=claim_id,
                   **common),
    ]


def reaches_paper(late: pl.DataFrame, scope: str, stall: list[dict] = ()) -> Verdict | None:
    """R^2_cv reaches the paper's 0.89: pooled (margins + indicators) or within one data set (margins)."""
    frame = late if scope == POOLED else late.filter(pl.col("dataset") == scope)
    if scope != POOLED and frame.height < MIN_MODELS:
        return None
    predictors = BOTH if scope == POOLED else LQ
    fit = _fit(frame, predictors)
    data = _claim(frame, {"m": fit}, _r2("m"), 5, bounds=R2_BOUNDS)
    value = data.estimand.value(np.arange(frame.height))
    where = "pooled over data sets, with data-set indicators" if scope == POOLED else f"on {scope}'s models alone"
    return Verdict.of(
        _estimate(value, frame), "gap.r2_reaches_paper" + ("" if scope == POOLED else f".{scope}"), SOURCE,
        f"The margin model's R^2 reaches the paper's {PAPER_R2}.",
        f"{SETTING}; {where}; supported when the interval's lower end reaches {PAPER_R2} - {PAPER_BAND}; {REFIT}",
        "r2_cv", "at_least", with_p=False, null_value=PAPER_R2, negligible=PAPER_BAND, band_units="r2_cv",
        data=data, detail=f"{frame['dataset'].n_unique()} data sets" + (_stall_note(stall) if scope == POOLED else ""))


def stage_difference(paired: Mapping[str, pl.DataFrame], claim: str, score: str) -> Verdict:
    """``late_only``: score at the last snapshot minus at the 20 % one (each fitted at its stage);
    ``no_transfer``: the late fit's score on the held-out models' 50 % snapshots minus its score at the
    last one. Same models (``paired``), same folds; pooled with indicators; tau within data sets."""
    late = paired["late"]
    if claim == "late_only":
        fits = {"a": _fit(late, BOTH), "b": _fit(paired["early"], BOTH)}
    else:
        fits = {"a": _fit(late, BOTH, paired["middle"]), "b": _fit(late, BOTH)}
    g = late["dataset"].to_numpy()

    def f(out: Mapping[str, tuple[np.ndarray, np.ndarray]], idx: np.ndarray, name: str) -> float:
        y, p = out[name]
        return r2_score(y, p) if score == "r2" else tau_within(y, p, g[idx])

    data = _claim(late, fits, lambda out, idx: f(out, idx, "a") - f(out, idx, "b"), 6 if claim == "late_only" else 7)
    est = _estimate(data.estimand.value(np.arange(late.height)), late)
    suffix = "" if score == "r2" else "_tau"
    band = R2_BAND if score == "r2" else TAU_BAND
    common = {"with_p": False, "negligible": band, "band_units": f"{score}_cv difference", "data": data,
              "detail": f"{est.groups} data sets"}
    if claim == "late_only":
        return Verdict.of(
            est, f"gap.late_only{suffix}", "004", "Margin statistics relate to the gap only late in training.",
            f"{SETTING}; {score}_cv at the last snapshot minus at the snapshot nearest 20 % of training (the gap at "
            "the same step), same models and folds" + ("" if score == "r2" else "; tau within data sets")
            + f"; {REFIT}", f"{score}_cv(late) - {score}_cv(early)", "positive", **common)
    return Verdict.of(
        est, f"gap.no_transfer{suffix}", "004", "A gap model fitted on long-trained networks does not carry over to "
        "shorter-trained ones.",
        f"{SETTING}; the late-fitted model on held-out models' snapshots nearest half the steps (their gap there) "
        f"minus its {score}_cv on their last ones; "
        + ("R^2 also drops when the middle gap is a rescaled copy of the late one (calibration alone)"
           if score == "r2" else "tau (within data sets) is blind to a rescaled gap, so a drop is a change of ranking")
        + f"; {REFIT}", f"{score}(late fit -> middle) - {score}_cv(late)", "negative", **common)


def unseen_datasets(main: dict, grouped: pl.DataFrame) -> Verdict:
    """The old main specification, folds grouped by data set: per held-out data set, the R^2 of its
    models' predictions (from a fit that never saw the data set; variance by leaving models out), pooled
    across data sets by random effects."""
    y = grouped["gap"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    p = grouped["predicted_cv"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    data = ClaimData(grouped.select("run_id", "dataset"),
                     Jackknifed(lambda i: r2_score(y[i], p[i]), description="R^2 of the held-out data set's models"),
                     confound="data-set identity (held out by the folds)")

    def value(key: str) -> float:
        return np.nan if main[key] is None else main[key]
    return Verdict.of(
        Estimate(value("r2_cv"), value("r2_cv_low"), value("r2_cv_high"), main["n_models"], "models",
                 groups=main["n_datasets"]),
        "gap.margins_predict_unseen_datasets", SOURCE,
        "The margin model also predicts the gap of networks on data sets it was not fitted on (a stricter test "
        "than the paper's).",
        "OLS on the slog margin signature at input, h0 and output (15 columns, every completed model), "
        "cross-validated with folds grouped by data set; per held-out data set the R^2 of its models' "
        "predictions, pooled across data sets by random effects", "r2 within the held-out data set", "positive",
        with_p=False, negligible=R2_BAND, band_units="r2", data=data, detail=f"{main['n_datasets']} data sets")


def verdicts(models: pl.DataFrame, main: dict, grouped: pl.DataFrame, stall: list[dict] = ()) -> list[Verdict]:
    """Every verdict of the stage from the models table (``analysis_gap_models``; the Jiang fits are redone
    on it in every bootstrap draw), the old main regression row and its grouped out-of-fold predictions;
    ``stall`` is :func:`analyses.gap.fits.stall_sensitivity`, quoted in the pooled verdicts' detail."""
    by_stage, _ = kept_models(models)
    late = by_stage["late"]
    out = margins_predict(late, "r2", stall) + margins_predict(late, "tau", stall)
    scopes = [POOLED, *sorted(set(late["dataset"].to_list()))]
    out += [v for s in scopes if (v := reaches_paper(late, s, stall)) is not None]
    paired = paired_kept(by_stage)
    out += [stage_difference(paired, c, s) for c in ("late_only", "no_transfer") for s in ("r2", "tau")]
    out.append(unseen_datasets(main, grouped))
    return out
