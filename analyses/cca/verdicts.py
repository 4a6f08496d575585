"""The CCA stage's verdict: per task, do the spectral features relate to the quality metrics on held-out
data sets, beyond what training time (ln step) alone gives by the same procedure?"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analyses.cca.task_analysis import TaskAnalysis
from analyses.stats import ClaimData, Estimate, Verdict, pearson, pearson_ci

#: |ρ| below this is negligible (verdict band; for the decisive difference of two correlations too).
NEGLIGIBLE_R = 0.1
#: What the baseline controls.
CONFOUND = "training time"
BASELINE_NAME = "held-out first canonical correlation with ln(1 + step) as the only feature"


def heldout_r(u: np.ndarray, v: np.ndarray, idx: np.ndarray) -> float:
    """corr(u[idx], v[idx]) over the finite pairs: the held-out first canonical correlation of the rows
    ``idx`` from their out-of-fold variates u, v (n,); NaN below 3 pairs or with a constant side."""
    return pearson(u[idx], v[idx])


def heldout_claim(rows: pl.DataFrame, spectral: tuple[np.ndarray, np.ndarray],
                  time: tuple[np.ndarray, np.ndarray] | None, not_assessed: str = "") -> ClaimData:
    """The claim's rows and statistics for the two-level assessment.

    ``rows`` (n rows, ``run_id``, ``dataset``): the CCA's rows (one per run on the verdict's last-snapshot
    design); ``spectral`` = (u, v) out-of-fold first variates of the spectral CCA, ``time`` = (u, v) of the
    ln-step CCA, each (n,), NaN where no fold scored a row. statistic = corr(u, v) over the rows drawn,
    baseline = the same of the time variates, decisive = statistic - baseline. ``not_assessed``, when
    given, says why there is no decisive quantity (folds grouped by run, no fit): it is NaN, so the
    verdict is inconclusive while both effects keep whatever intervals they have. ``time`` None (a design
    that partials training time out of both blocks): no baseline, the statistic alone."""
    u, v = spectral
    if time is None:
        return ClaimData(rows.select("run_id", "dataset"), lambda idx: heldout_r(u, v, idx))
    ut, vt = time
    base = {"confound": CONFOUND, "baseline": lambda idx: heldout_r(ut, vt, idx), "baseline_name": BASELINE_NAME}
    if not_assessed:
        base |= {"beyond": lambda idx: math.nan, "beyond_name": f"none: {not_assessed}"}
    return ClaimData(rows.select("run_id", "dataset"), lambda idx: heldout_r(u, v, idx), **base)


def task_verdict(res: TaskAnalysis, base: TaskAnalysis, rows: pl.DataFrame, design: str) -> Verdict:
    """001 §4.4/§5 for one task: the held-out first canonical correlation of the spectral block against
    the quality metrics (``res``), pooled over the out-of-fold variates of its rows, against the same
    with ln(1 + step) as X (``base``); predicted positive beyond the baseline. ``rows`` are the CCA's
    rows (``run_id``, ``dataset``), ``design`` names them for the text."""
    u, v = res.heldout_variates() if res.fit is not None else (np.full(rows.height, np.nan),) * 2
    ut, vt = base.heldout_variates() if base.fit is not None else (np.full(rows.height, np.nan),) * 2
    unit = "runs" if rows["run_id"].n_unique() == rows.height else "snapshots"
    est = pearson_ci(u, v, unit) if res.fit is not None else Estimate.missing(rows["run_id"].n_unique(), unit)
    by_run = res.grouped_by == "run"
    fit = res.fit
    if fit is not None:
        folds = ", ".join(f"{f.heldout_correlation:.2f}" for f in res.folds)
        time_folds = ", ".join(f"{f.heldout_correlation:.2f}" for f in base.folds)
        detail = (f"{design}: {res.n} rows of {res.n_runs} runs in {res.n_datasets} data sets; in-sample first "
                  f"canonical correlation {fit.cancorr[0]:.3f} (Wilks lambda {fit.wilks[0]:.3g}, p = "
                  f"{fit.p_value[0]:.2g}); X = {', '.join(res.x_names)}; Y = {', '.join(res.y_names)} (loss-defined "
                  f"metrics left out); held-out per fold: {folds}; ln-step baseline per fold: {time_folds or 'none'}"
                  + (f" ({base.reason})" if base.reason else "")
                  + "; stage interval: Fisher z over rows as if independent")
        if by_run:
            detail += ("; fewer than 3 data sets, so folds could group only by run, not by data set: no decisive "
                       "interval, inconclusive")
    else:
        detail = f"{design}: {res.reason}"
    return Verdict.of(
        est, f"cca.{res.task}", "001 §4.4/§5 CCA", f"Spectral features relate to quality metrics ({res.task})",
        test=(f"CCA of the spectral features and the quality metrics without loss-defined ones, on {design}, "
              "z-scored within data set; out-of-fold first canonical variates from GroupKFold by data set; "
              "effect: their correlation over the rows; baseline: the same procedure with ln(1 + step) as the "
              "only feature; decisive: effect minus baseline"),
        effect_name="held-out first canonical correlation (out-of-fold variates)", predicted="positive",
        null_value=0.0, negligible=NEGLIGIBLE_R, detail=detail,
        data=heldout_claim(rows, (u, v), (ut, vt), not_assessed=(
            "no CCA (too few rows)" if fit is None else
            "folds grouped by run (fewer than 3 data sets) let the held-out run's data set train the fit"
            if by_run else "")))
