"""The gap stage's verdicts on paper 004's claims, on the Jiang et al. fits (:mod:`analyses.gap.fits`).

Every verdict hands its rows to the core (:class:`analyses.stats.ClaimData`): one row per model (run)
with its out-of-fold predictions, so a resample rescores fixed predictions (the folds are not refitted:
the interval is that of the score over models, two-level where there are three or more data sets)."""

from __future__ import annotations

import numpy as np
import polars as pl

from analyses.gap.fits import BOTH, IND, LQ, POOLED
from analyses.gap.jiang import N_FOLDS, N_REPEATS, STALL_LOSS_RATIO, group_means, r2_score, tau_score, tau_within
from analyses.gap.predictors import PAPER_N_MODELS, PAPER_R2
from analyses.stats import ClaimData, Estimate, Verdict

#: Band of an R^2 difference, a tau difference and of the paper's 0.89 treated as no difference.
R2_BAND, TAU_BAND, PAPER_BAND = 0.02, 0.02, 0.05
SOURCE = "004; Jiang et al. 2019"
SETTING = (f"OLS on ln Q1, ln median, ln Q3 of the normalized margins (correct training points) at input, h0 "
           f"and output; {N_REPEATS} x {N_FOLDS} random folds of models (the paper's setting); stalled runs "
           f"(final training loss > {STALL_LOSS_RATIO} x initial) and label-noise runs left out")


def _pairs(preds: pl.DataFrame, sample: str, columns: dict[str, tuple[str, str, str]]) -> pl.DataFrame:
    """One row per model: run_id, dataset and, per output name, the (predictors, stage, fit_stage)
    prediction as ``p_<name>`` and its gap as ``y_<name>``."""
    out = None
    for name, (predictors, stage, fit) in columns.items():
        f = preds.filter((pl.col("scope") == POOLED) & (pl.col("sample") == sample) & (pl.col("predictors") ==
                         predictors) & (pl.col("stage") == stage) & (pl.col("fit_stage") == fit))
        f = f.select("run_id", "dataset", pl.col("gap").alias(f"y_{name}"), pl.col("predicted_cv").alias(f"p_{name}"))
        out = f if out is None else out.join(f.drop("dataset"), on="run_id", how="inner")
    return out.sort("run_id")


def _arrays(frame: pl.DataFrame, *names: str) -> list[np.ndarray]:
    return [frame[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in names]


def _estimate(value: float, n: int, k: int) -> Estimate:
    return Estimate(value, np.nan, np.nan, n, "models", groups=k)


def _stall_note(stall: list[dict]) -> str:
    """The pooled fit's scores at the other stall ratios, for a verdict's detail."""
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3g}"
    return "; at other stall ratios " + ", ".join(
        f"{s['stall_ratio']}: R^2_cv {num(s['r2_cv'])}, tau_cv {num(s['tau_cv'])} ({s['n_models']} models)"
        for s in stall) if stall else ""


def beyond_identity(preds: pl.DataFrame, score: str, stall: list[dict] = ()) -> Verdict:
    """Margins predict (``score = "r2"``) or rank (``"tau"``) the gap beyond data-set identity, pooled, at
    the last snapshot. R^2: R^2_cv(margins + indicators) minus R^2_cv(indicators alone). tau: the claim's
    pooled tau of the margins + indicators model beside the in-sample data-set mean's, decided on the tau
    within data sets (:func:`analyses.gap.jiang.tau_within`), where the data-set mean ranks no pair."""
    rows = _pairs(preds, "all", {"both": (BOTH, "late", "late"), "ind": (IND, "late", "late")})
    y, pb, pi = _arrays(rows, "y_both", "p_both", "p_ind")
    g = rows["dataset"].to_numpy()
    if score == "r2":
        data = ClaimData(rows.select("run_id", "dataset"), lambda i: r2_score(y[i], pb[i]),
                         confound="data-set identity", baseline=lambda i: r2_score(y[i], pi[i]),
                         baseline_name="r2_cv of data-set indicators alone",
                         beyond_name="r2_cv(margins + indicators) - r2_cv(indicators)")
        value, word, band = r2_score(y, pb), "predicts", R2_BAND
    else:
        data = ClaimData(rows.select("run_id", "dataset"), lambda i: tau_score(y[i], pb[i]),
                         confound="data-set identity",
                         baseline=lambda i: tau_score(y[i], group_means(y[i], g[i])),
                         baseline_name="tau of the data-set mean (in sample)",
                         beyond=lambda i: tau_within(y[i], pb[i], g[i]),
                         beyond_name="tau_cv within data sets (pair-weighted)")
        value, word, band = tau_score(y, pb), "ranks", TAU_BAND
    return Verdict.of(
        _estimate(value, rows.height, rows["dataset"].n_unique()),
        "gap.margins_predict_gap" if score == "r2" else "gap.margins_rank_gap", SOURCE,
        f"A linear model on training-set margin statistics {word} the generalization gap (R^2 = {PAPER_R2} over "
        f"{PAPER_N_MODELS} models), beyond what the data set a model was trained on says.",
        f"{SETTING}; data-set indicators in the fit; decisive: the margins' gain over the indicators alone"
        + ("" if score == "r2" else " (tau within data sets)"),
        f"{score}_cv", "positive", with_p=False, negligible=band, data=data,
        detail=f"{rows['dataset'].n_unique()} data sets" + _stall_note(stall))


def reaches_paper(preds: pl.DataFrame, scope: str, stall: list[dict] = ()) -> Verdict | None:
    """R^2_cv reaches the paper's 0.89: pooled (margins + indicators) or within one data set (margins)."""
    predictors = BOTH if scope == POOLED else LQ
    f = preds.filter((pl.col("scope") == scope) & (pl.col("predictors") == predictors) & (pl.col("sample") == "all")
                     & (pl.col("stage") == "late") & (pl.col("fit_stage") == "late")).sort("run_id")
    if f.height == 0:
        return None
    y, p = _arrays(f, "gap", "predicted_cv")
    data = ClaimData(f.select("run_id", "dataset"), lambda i: r2_score(y[i], p[i]))
    where = "pooled over data sets, with data-set indicators" if scope == POOLED else f"on {scope}'s models alone"
    return Verdict.of(
        _estimate(r2_score(y, p), f.height, f["dataset"].n_unique()),
        "gap.r2_reaches_paper" + ("" if scope == POOLED else f".{scope}"), SOURCE,
        f"The margin model's R^2 reaches the paper's {PAPER_R2}.",
        f"{SETTING}; {where}; supported when the interval's lower end reaches {PAPER_R2} - {PAPER_BAND}",
        "r2_cv", "at_least", with_p=False, null_value=PAPER_R2, negligible=PAPER_BAND, data=data,
        detail=f"tau_cv = {tau_score(y, p):.3f}" + (_stall_note(stall) if scope == POOLED else ""))


def stage_difference(preds: pl.DataFrame, claim: str, score: str) -> Verdict:
    """``late_only``: score at the last snapshot minus at the 20 % one (each fitted at its stage);
    ``no_transfer``: the late fit's score on the held-out models' 50 % snapshots minus its score at the
    last one. Same models (``all_stages``), same folds; pooled with indicators."""
    if claim == "late_only":
        cols = {"a": (BOTH, "late", "late"), "b": (BOTH, "early", "early")}
    else:
        cols = {"a": (BOTH, "middle", "late"), "b": (BOTH, "late", "late")}
    rows = _pairs(preds, "all_stages", cols)
    ya, pa, yb, pb = _arrays(rows, "y_a", "p_a", "y_b", "p_b")
    g = rows["dataset"].to_numpy()

    def f(y: np.ndarray, p: np.ndarray, i: np.ndarray) -> float:
        return r2_score(y[i], p[i]) if score == "r2" else tau_within(y[i], p[i], g[i])

    def stat(i: np.ndarray) -> float:
        return f(ya, pa, i) - f(yb, pb, i)

    data = ClaimData(rows.select("run_id", "dataset"), stat, confound="", seed=1)
    est = _estimate(stat(np.arange(rows.height)), rows.height, rows["dataset"].n_unique())
    suffix = "" if score == "r2" else "_tau"
    band = R2_BAND if score == "r2" else TAU_BAND
    if claim == "late_only":
        return Verdict.of(
            est, f"gap.late_only{suffix}", "004", "Margin statistics relate to the gap only late in training.",
            f"{SETTING}; {score}_cv at the last snapshot minus at the snapshot nearest 20 % of training (the gap at "
            "the same step), same models and folds" + ("" if score == "r2" else "; tau within data sets"),
            f"{score}_cv(late) - {score}_cv(early)", "positive",
            with_p=False, negligible=band, data=data, detail=f"{est.groups} data sets")
    return Verdict.of(
        est, f"gap.no_transfer{suffix}", "004", "A gap model fitted on long-trained networks does not carry over to "
        "shorter-trained ones.",
        f"{SETTING}; the late-fitted model on held-out models' snapshots nearest half the steps (their gap there) "
        f"minus its {score}_cv on their last ones; "
        + ("R^2 also drops when the middle gap is a rescaled copy of the late one (calibration alone)"
           if score == "r2" else "tau (within data sets) is blind to a rescaled gap, so a drop is a change of ranking"),
        f"{score}(late fit -> middle) - {score}_cv(late)", "negative", with_p=False, negligible=band, data=data,
        detail=f"{est.groups} data sets")


def unseen_datasets(main: dict, grouped: pl.DataFrame) -> Verdict:
    """The old main specification, folds grouped by data set, rescored from its out-of-fold predictions."""
    y, p = _arrays(grouped, "gap", "predicted_cv")
    data = ClaimData(grouped.select("run_id", "dataset"), lambda i: r2_score(y[i], p[i]),
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
        "cross-validated with folds grouped by data set", "r2_cv", "positive", with_p=False, data=data,
        detail=f"{main['n_datasets']} data sets")


def verdicts(preds: pl.DataFrame, main: dict, grouped: pl.DataFrame, stall: list[dict] = ()) -> list[Verdict]:
    """Every verdict of the stage from the Jiang fits' predictions (``analysis_gap_jiang_predictions``),
    the old main regression row and its grouped out-of-fold predictions; ``stall`` is
    :func:`analyses.gap.fits.stall_sensitivity`, quoted in the pooled verdicts' detail."""
    out = [beyond_identity(preds, "r2", stall), beyond_identity(preds, "tau", stall)]
    scopes = [POOLED, *sorted(set(preds.filter(pl.col("scope") != POOLED)["scope"].to_list()))]
    out += [v for s in scopes if (v := reaches_paper(preds, s, stall)) is not None]
    out += [stage_difference(preds, c, s) for c in ("late_only", "no_transfer") for s in ("r2", "tau")]
    out.append(unseen_datasets(main, grouped))
    return out
