"""The CCA stage's verdicts: per task, do the spectral features relate to the quality metrics on held-out
data sets (the paper's test), and do they add to training time (ln step) in a nested held-out CCA (the
sharpened test)?

Both are decided per held-out data set: the folds hold whole data sets out, so the out-of-fold first
variates of a data set's rows come from a fit that never saw it, and their correlation over that data
set's runs is its estimate (variance by leaving runs out), pooled across data sets by random effects."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.cca.task_analysis import TaskAnalysis
from analyses.stats import (
    ClaimData,
    Correlation,
    Estimate,
    Jackknifed,
    Verdict,
    assess,
    partial_r,
    pearson,
    pearson_ci,
)

#: |ρ| (and a gain in held-out correlation) below this is negligible (verdict band).
NEGLIGIBLE_R = 0.1
#: What the sharpened row's nested fit controls.
CONFOUND = "training time (ln step inside the nested fit)"
BASELINE_NAME = "held-out first canonical correlation with ln(1 + step) as the only feature"


def heldout_r(u: np.ndarray, v: np.ndarray, idx: np.ndarray) -> float:
    """corr(u[idx], v[idx]) over the finite pairs: the held-out first canonical correlation of the rows
    ``idx`` from their out-of-fold variates u, v (n,); NaN below 3 pairs or with a constant side."""
    return pearson(u[idx], v[idx])


def heldout_claim(rows: pl.DataFrame, variates: tuple[np.ndarray, np.ndarray]) -> ClaimData:
    """The held-out correlation of out-of-fold variates (u, v) (n,) per data set (the paper's test)."""
    u, v = variates
    return ClaimData(rows.select("run_id", "dataset"),
                     Jackknifed(lambda idx: heldout_r(u, v, idx), "fisher_z", "held-out first canonical correlation"))


def nested_claim(rows: pl.DataFrame, full: tuple[np.ndarray, np.ndarray], time: tuple[np.ndarray, np.ndarray],
                 ln_step: np.ndarray) -> ClaimData:
    """What the spectral features add to ln step: per held-out data set, the partial correlation of the
    out-of-fold variates of the CCA with X = [spectral features, ln step] given ln step (a nested
    estimand: the fit contains ln step, and the partial r asks what its variates share beyond it; a
    difference of the two fits' held-out correlations would compare two Y combinations). The held-out
    correlation of the ln-step-only fit is shown beside it."""
    (uf, vf), (ut, vt) = full, time
    return ClaimData(rows.select("run_id", "dataset"), Correlation(uf, vf, controls=ln_step),
                     confound=CONFOUND, baseline=lambda idx: heldout_r(ut, vt, idx), baseline_name=BASELINE_NAME)


def _variates(res: TaskAnalysis | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    if res is None or res.fit is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    return res.heldout_variates()


def task_verdicts(res: TaskAnalysis, full: TaskAnalysis, base: TaskAnalysis, rows: pl.DataFrame,
                  design: str) -> list[Verdict]:
    """001 §4.4/§5 for one task, two rows: the held-out first canonical correlation of the spectral block
    against the quality metrics (``res``), and the nested gain of [spectral block, ln step] (``full``)
    over ln step alone (``base``); predicted positive. ``rows`` are the CCA's rows (``run_id``,
    ``dataset``), ``design`` names them for the text. With folds grouped by run (fewer than 3 data sets)
    the held-out run's data set trains the fit, so no rows are handed over: inconclusive."""
    n = rows.height
    u, v = _variates(res, n)
    uf, vf = _variates(full, n)
    ut, vt = _variates(base, n)
    t = rows["ln_step"].cast(pl.Float64).to_numpy() if "ln_step" in rows.columns else np.full(n, np.nan)
    unit = "runs" if rows["run_id"].n_unique() == n else "snapshots"
    est = pearson_ci(u, v, unit) if res.fit is not None else Estimate.missing(rows["run_id"].n_unique(), unit)
    gain = Estimate.missing(est.n, unit, partial_r(uf, vf, t))
    by_run = res.grouped_by == "run"
    if by_run:  # the held-out run's data set trained the fit: no interval decides
        est = Estimate.missing(est.n, unit, est.value)
    fit = res.fit
    if fit is not None:
        def folds(r: TaskAnalysis | None) -> str:
            return ", ".join(f"{f.heldout_correlation:.2f}" for f in r.folds) if r is not None else ""

        detail = (f"{design}: {res.n} rows of {res.n_runs} runs in {res.n_datasets} data sets; in-sample first "
                  f"canonical correlation {fit.cancorr[0]:.3f} (Wilks lambda {fit.wilks[0]:.3g}, p = "
                  f"{fit.p_value[0]:.2g}); X = {', '.join(res.x_names)}; Y = {', '.join(res.y_names)} (loss-defined "
                  f"metrics left out); held-out per fold: {folds(res)}; with ln step: {folds(full) or 'none'}; ln "
                  f"step alone: {folds(base) or 'none'}" + (f" ({base.reason})" if base.reason else ""))
        if by_run:
            detail += ("; fewer than 3 data sets, so folds could group only by run, not by data set: not decided "
                       "(the held-out run's data set trains the fit)")
    else:
        detail = f"{design}: {res.reason}"
    assessed = fit is not None and not by_run
    claim = f"Spectral features relate to quality metrics ({res.task})"
    common = {"predicted": "positive", "null_value": 0.0, "negligible": NEGLIGIBLE_R, "band_units": "correlation",
              "detail": detail}
    heldout = (f"on {design}, z-scored within data set; out-of-fold first canonical variates from GroupKFold by "
               "data set; per held-out data set, their correlation over its runs (variance by leaving runs out), "
               "pooled across data sets by random effects")
    return [
        Verdict.of(est, f"cca.{res.task}", "001 §4.4/§5 CCA", claim,
                   f"CCA of the spectral features and the quality metrics without loss-defined ones, {heldout} (the "
                   "paper's test)", "held-out first canonical correlation (out-of-fold variates)",
                   data=heldout_claim(rows, (u, v)) if assessed else None, **common),
        Verdict.of(gain, f"cca.{res.task}.beyond_time", "001 §4.4/§5 CCA", claim + " beyond training time",
                   "nested held-out CCA: X = [spectral features, ln(1 + step)], same rows, Y and folds; per held-out "
                   "data set, the partial correlation of its out-of-fold first variates given ln(1 + step), pooled "
                   "across data sets by random effects on Fisher's z (the sharpened test)",
                   "held-out partial canonical correlation given ln step",
                   data=nested_claim(rows, (uf, vf), (ut, vt), t) if assessed and full is not None and
                   full.fit is not None else None, role="sharpened", pair=f"cca.{res.task}", **common),
    ]


def pooled_r(data: ClaimData) -> tuple[float, float, float, str]:
    """(value, low, high, method) of a claim's pooled estimate, for the descriptive design table."""
    a = assess(data, "positive", 0.0)
    return a.value, a.low, a.high, a.method


def finite(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None
