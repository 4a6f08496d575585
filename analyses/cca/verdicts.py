"""The CCA stage's verdict: per task, does the first canonical correlation hold on held-out data?"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from analyses.cca.heldout import fisher_mean_ci
from analyses.cca.task_analysis import TaskAnalysis
from analyses.stats import Verdict

#: |ρ| below this is negligible (verdict band).
NEGLIGIBLE_R = 0.1


def task_verdict(res: TaskAnalysis) -> Verdict:
    """001 §4.4/§5 for one task: the Fisher-z mean of the held-out first canonical correlations over
    folds, predicted positive. Folds grouped by run only (fewer than 3 data sets) give no interval."""
    values = np.array([f.heldout_correlation for f in res.folds], float)
    unit = f"folds (held-out {'data sets' if res.grouped_by == 'dataset' else 'runs'})"
    est = fisher_mean_ci(values, unit)
    fit = res.fit
    if fit is not None:
        detail = (f"in-sample first canonical correlation {fit.cancorr[0]:.3f} (Wilks lambda {fit.wilks[0]:.3g}, "
                  f"p = {fit.p_value[0]:.2g}) over {res.n} snapshots of {res.n_runs} runs in "
                  f"{res.n_datasets} data sets; X = {', '.join(res.x_names)}; Y = {', '.join(res.y_names)}; "
                  f"held-out per fold: {', '.join(f'{v:.2f}' for v in values)}")
        if res.grouped_by == "run":
            # Folds grouped by run alone let runs of the test's data set train the fit (and the
            # within-data-set scaling sees them): no verdict, the estimate stays in the table.
            est = replace(est, low=math.nan, high=math.nan)
            detail += ("; fewer than 3 data sets, so folds could group only by run, not by data set: "
                       "no interval, inconclusive")
    else:
        detail = res.reason
    return Verdict.of(
        est, f"cca.{res.task}", "001 §4.4/§5 CCA", f"Spectral features relate to quality metrics ({res.task})",
        test=("CCA of spectral features and quality metrics (z-scored within data set); held-out first canonical "
              "correlation per GroupKFold fold, Fisher-z mean with a t interval over folds"),
        effect_name="held-out first canonical correlation (Fisher-z mean over folds)", predicted="positive",
        null_value=0.0, negligible=NEGLIGIBLE_R, detail=detail)
