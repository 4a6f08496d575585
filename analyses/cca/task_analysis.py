"""One task's CCA: its blocks, the in-sample fit, and the held-out folds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from analyses.cca.blocks import STANDARDIZE_WITHIN_DATASET, X_FEATURES, task_blocks
from analyses.cca.canonical import CcaFit, fit_cca
from analyses.cca.heldout import MAX_FOLDS, HeldOutFold, heldout_first_correlations
from analyses.kit import features as feat

#: Fit only when n - k_datasets >= p + q + MIN_EXTRA_DOF (n - 1 without the within-data-set z-scores).
MIN_EXTRA_DOF = 10


@dataclass
class TaskAnalysis:
    """The CCA of one task's n snapshots (of n_runs runs in n_datasets data sets): the kept X and Y
    columns, the in-sample ``fit`` (None: too few snapshots or a failed fit, said in ``reason``), and
    the held-out ``folds`` with the ``groups`` (n,) they were drawn by, ``grouped_by`` 'dataset' or
    'run' (None: fewer than 3 runs, no folds)."""

    task: str
    n: int
    n_runs: int
    n_datasets: int
    x_names: list[str]
    y_names: list[str]
    fit: CcaFit | None = None
    folds: list[HeldOutFold] = field(default_factory=list)
    grouped_by: str | None = None
    groups: np.ndarray | None = None
    reason: str = ""

    def heldout_variates(self) -> tuple[np.ndarray, np.ndarray]:
        """The out-of-fold first canonical variates (u, v), each (n,): row i's from the fold that held
        it out (fitted without its data set, or its run); NaN where no fold scored it."""
        u, v = np.full(self.n, np.nan), np.full(self.n, np.nan)
        for f in self.folds:
            u[f.test_index], v[f.test_index] = f.u, f.v
        return u, v


def analyse_task(task: str, sub: pl.DataFrame, features: tuple[str, ...] = X_FEATURES,
                 metrics: tuple[str, ...] | None = None, partial_time: bool = False) -> TaskAnalysis:
    """The CCA of the task's snapshot rows ``sub`` (``analysis_features`` columns): X = ``features``
    (default the spectral block), Y = ``metrics`` (default ``features.METRICS[task]``), oriented so
    the metric variate rises with the primary metric; folds by data set with >= 3 data sets, else by
    run. The folds depend on the groups alone (GroupKFold), so two calls on the same rows share them.
    ``partial_time``: both blocks residualized on ln(1 + step) within data set first (:func:`task_blocks`)."""
    n, n_runs, n_ds = sub.height, sub["run_id"].n_unique(), sub["dataset"].n_unique()
    x, xn, y, yn = task_blocks(sub, task, features, metrics, partial_time)
    res = TaskAnalysis(task, n, n_runs, n_ds, xn, yn)
    dof = n - (n_ds if STANDARDIZE_WITHIN_DATASET else 1)
    if not xn or not yn or dof < len(xn) + len(yn) + MIN_EXTRA_DOF:
        res.reason = (f"too few snapshots for the CCA: n = {n} in {n_ds} data sets for p = {len(xn)} "
                      f"features and q = {len(yn)} metrics")
        return res
    primary = feat.PRIMARY_METRIC.get(task)
    orient = y[:, yn.index(primary)] if primary in yn else None
    try:
        res.fit = fit_cca(x, y, orient)
    except (ValueError, np.linalg.LinAlgError) as exc:
        res.reason = f"CCA failed: {exc}"
        return res
    if n_ds >= 3:
        res.groups, res.grouped_by = sub["dataset"].to_numpy(), "dataset"
    elif n_runs >= 3:
        res.groups, res.grouped_by = sub["run_id"].to_numpy(), "run"
    else:
        return res
    n_splits = min(MAX_FOLDS, len(np.unique(res.groups)))
    res.folds = heldout_first_correlations(x, y, res.groups, n_splits, orient)
    return res
