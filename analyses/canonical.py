"""Canonical correlation analysis (CCA) between a block of spectral features of each snapshot and the
block of its quality metrics, per task: the canonical correlations with Wilks' lambda tests, the
loadings that say which variables carry each canonical pair, and a held-out estimate in which whole
data sets (or, with fewer than three data sets, whole runs) are never seen by the fit they score.

Blocks
------
X is the fixed subset :data:`X_FEATURES` of ``analysis_features`` (layer means on the features'
scale): spectra of the weights, the local and loss Hessians, and saturation. Gradient-derived
features (gradient norms, natural-gradient norm, pressure, alignment) are left out on purpose: the
loss gradient is a function of the loss itself, so they would relate to the metrics by construction.
Y is ``features.METRICS[task]`` with the primary metric (test accuracy, test R²) moved first.
For each task: a column with any NULL in the task's snapshots is dropped (ReLU layers have no
local-Hessian ratios); each column is z-scored within each data set
(:data:`STANDARDIZE_WITHIN_DATASET`: data sets differ wildly in loss and spectra, so the CCA
describes variation inside data sets); then, in the listed order, a column is dropped when its
spread is below :data:`MIN_STD` (constant) or its R² on the block's columns kept so far exceeds
:data:`MAX_R2` (near-collinear; e.g. test_r2 = 1 - test MSE / var within a data set). A task is
fitted only when n - k_datasets - 1 >= p + q + :data:`MIN_EXTRA_DOF`.

Tables
------
``analysis_cca``
    per task and component c: canonical correlation ρ_c (statsmodels
    ``statsmodels.multivariate.cancorr.CanCorr``), Wilks' Λ_c = Π_{j>=c} (1 - ρ_j²) testing
    ρ_c = ... = ρ_k = 0 with Rao's F approximation (``CanCorr.corr_test()``: ``f_stat``, ``df_num``,
    ``df_den``, ``p_value``), n snapshots, n_runs, n_datasets. The test treats snapshots as
    independent and ignores the data-set means removed, so its p-value is descriptive; the held-out
    estimate below is the one the verdict uses. A task too small to fit has one row with NULLs.
``analysis_cca_loadings``
    structure correlations corr(variable, own-block canonical variate) for the first
    :data:`N_LOADING_COMPONENTS` components, block 'X' (features) or 'Y' (metrics). Each component's
    sign is fixed so that its Y variate correlates positively with the task's primary metric (test
    accuracy, test R²) when that column is in Y.
``analysis_cca_heldout``
    per task and fold: the CCA is fitted on the training folds (columns standardized with the
    training rows' mean and sd), both blocks of the held-out rows are projected with the training
    canonical weights a_1, b_1, and ``heldout_correlation`` = corr(X_test a_1, Y_test b_1). The sign
    is kept from the training fit (where the pair correlates positively), so a reversed relation
    shows as a negative value. Folds: sklearn ``GroupKFold`` with groups = data set
    (``grouped_by`` = 'dataset', at most :data:`MAX_FOLDS` folds), which also keeps every run's
    snapshots together; with fewer than 3 data sets, groups = run ('run').
``analysis_cca_scores``
    per snapshot of a fitted task: the in-sample first canonical variates (u1, v1) and the held-out
    ones (heldout_u1, heldout_v1, from the fold that held it out): the points of ``cca_scores``.
``analysis_cca_verdicts``
    001 §4.4/§5 (CCA of spectral features and quality metrics): per task, the held-out first
    canonical correlation averaged over folds on the Fisher-z scale, tanh(mean atanh r_f), with a t
    interval over folds (back-transformed, so it stays within [-1, 1]) and the one-sample t p-value,
    predicted positive (null 0, negligible band :data:`NEGLIGIBLE_R`); the detail gives the in-sample
    ρ_1 and its Wilks p. Folds are few (at most :data:`MAX_FOLDS`), so the interval is wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import seaborn as sns
from scipy import stats
from sklearn.model_selection import GroupKFold
from statsmodels.multivariate.cancorr import CanCorr

from analyses import features as feat
from analyses.presentation import empty_figure
from analyses.verdicts import Verdict, mean_ci, write_verdicts

READS = ("analysis_features",)
WRITES = ("analysis_cca", "analysis_cca_loadings", "analysis_cca_heldout", "analysis_cca_scores",
          "analysis_cca_verdicts")
TITLE = "Canonical correlation: spectral features vs quality metrics"

#: The X block: spectra of weights, local and loss Hessians, and saturation (no gradient-derived features).
X_FEATURES = ("weight_stable_rank", "weight_spectral_norm", "adjacent_similarity", "saturation_fraction",
              "local_top", "local_std", "loss_top", "loss_effective_rank_ratio", "loss_relative_std",
              "loss_skewness", "loss_near_zero_fraction", "loss_negative_mass")
#: z-score every column within each data set before the CCA.
STANDARDIZE_WITHIN_DATASET = True
#: A column whose (within-data-set standardized) sd is below this is constant and dropped.
MIN_STD = 1e-8
#: A column whose R² on the block's columns kept before it exceeds this is near-collinear and dropped.
MAX_R2 = 0.98
#: Fit only when n - k_datasets - 1 >= p + q + MIN_EXTRA_DOF.
MIN_EXTRA_DOF = 10
#: Most folds of the held-out estimate.
MAX_FOLDS = 5
#: Fewest held-out rows for a fold's correlation.
MIN_TEST_ROWS = 5
#: Components whose loadings are stored.
N_LOADING_COMPONENTS = 2
#: |ρ| below this is negligible (verdict band).
NEGLIGIBLE_R = 0.1
PRIMARY = feat.PRIMARY_METRIC


# --- pure math ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CcaFit:
    """A CCA of X (n, p) and Y (n, q), k = min(p, q) components.

    ``cancorr`` (k,); ``x_coef`` (p, k), ``y_coef`` (q, k) canonical weights of the centred blocks;
    ``x_scores`` U = X_c x_coef (n, k), ``y_scores`` V (n, k), each column of unit sample variance;
    ``x_loadings`` (p, k) = corr(X_j, U_c), ``y_loadings`` (q, k); Wilks' Λ_c = Π_{j>=c}(1 - ρ_j²)
    with Rao's F, its dfs and p-value, (k,) each.
    """

    cancorr: np.ndarray
    x_coef: np.ndarray
    y_coef: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    x_scores: np.ndarray
    y_scores: np.ndarray
    x_loadings: np.ndarray
    y_loadings: np.ndarray
    wilks: np.ndarray
    f_stat: np.ndarray
    df_num: np.ndarray
    df_den: np.ndarray
    p_value: np.ndarray

    def project(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical variates of new rows x (m, p), y (m, q): ((x - x̄) a, (y - ȳ) b), each (m, k)."""
        return (x - self.x_mean) @ self.x_coef, (y - self.y_mean) @ self.y_coef


def _corr_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """corr(a[:, i], b[:, j]) for a (n, p), b (n, k): (p, k); 0 where a column is constant."""
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = np.sqrt((ac ** 2).sum(0)), np.sqrt((bc ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ac.T @ bc) / np.outer(na, nb)
    return np.nan_to_num(out)


def fit_cca(x: np.ndarray, y: np.ndarray, orient: np.ndarray | None = None) -> CcaFit:
    """CCA of x (n, p) and y (n, q) by statsmodels ``CanCorr(endog=y, exog=x)`` with its Wilks' lambda
    tests (``corr_test``). ``orient`` (n,), optional: flip each component's sign so its y variate
    correlates positively with it. Raises ValueError when a block is collinear."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    model = CanCorr(y, x)
    try:
        table = model.corr_test().stats
    except ZeroDivisionError:
        # a canonical correlation of exactly 1 (Wilks' lambda 0): the blocks are collinear, seen in a
        # small held-out fold of the test corpus
        raise ValueError("a canonical correlation is exactly 1: the blocks are collinear") from None
    # statsmodels scales the variates to unit norm; rescale them to unit sample variance
    scale = math.sqrt(max(len(x) - 1, 1))
    a, b = np.asarray(model.x_cancoef, float) * scale, np.asarray(model.y_cancoef, float) * scale
    xm, ym = x.mean(0), y.mean(0)
    u, v = (x - xm) @ a, (y - ym) @ b
    if orient is not None:
        sign = np.sign(_corr_columns(np.asarray(orient, float)[:, None], v)[0])
        sign[sign == 0] = 1.0
        a, b, u, v = a * sign, b * sign, u * sign, v * sign
    return CcaFit(cancorr=np.asarray(model.cancorr, float), x_coef=a, y_coef=b, x_mean=xm, y_mean=ym,
                  x_scores=u, y_scores=v, x_loadings=_corr_columns(x, u), y_loadings=_corr_columns(y, v),
                  wilks=table["Wilks' lambda"].to_numpy(float), f_stat=table["F Value"].to_numpy(float),
                  df_num=table["Num DF"].to_numpy(float), df_den=table["Den DF"].to_numpy(float),
                  p_value=table["Pr > F"].to_numpy(float))


def select_columns(block: np.ndarray, names: list[str]) -> list[int]:
    """Indices of the columns of block (n, p) kept, in order: drop a column with sd < MIN_STD, or
    whose R² on the columns kept before it (least squares with intercept) exceeds MAX_R2."""
    kept: list[int] = []
    for j in range(block.shape[1]):
        col = block[:, j]
        sd = col.std()
        if not np.isfinite(sd) or sd < MIN_STD:
            continue
        if kept:
            design = np.column_stack([np.ones(len(col)), block[:, kept]])
            coef, *_ = np.linalg.lstsq(design, col, rcond=None)
            resid = col - design @ coef
            r2 = 1 - float(resid @ resid) / float(((col - col.mean()) ** 2).sum())
            if r2 > MAX_R2:
                continue
        kept.append(j)
    return kept


def heldout_first_correlations(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int,
                               orient: np.ndarray | None = None) -> list[dict]:
    """Held-out first canonical correlation by GroupKFold over ``groups`` (n,).

    For each fold: standardize x (n, p), y (n, q) with the training rows' mean and sd, fit
    :func:`fit_cca` on the training rows, project the test rows with a_1, b_1 and return
    corr(u_test, v_test) (NaN if the fit fails or a projection is constant or the fold has fewer than
    :data:`MIN_TEST_ROWS` rows). Returns one dict per fold: fold, n_train, n_test, heldout_correlation,
    test_index (array), u, v (held-out first variates).
    """
    out = []
    for fold, (tr, te) in enumerate(GroupKFold(n_splits=n_splits).split(x, y, groups)):
        row = {"fold": fold, "n_train": int(len(tr)), "n_test": int(len(te)), "heldout_correlation": math.nan,
               "test_index": te, "u": np.full(len(te), np.nan), "v": np.full(len(te), np.nan)}
        out.append(row)
        mx, sx = x[tr].mean(0), x[tr].std(0)
        my, sy = y[tr].mean(0), y[tr].std(0)
        if (sx < MIN_STD).any() or (sy < MIN_STD).any() or len(tr) < x.shape[1] + y.shape[1] + 3:
            continue
        try:
            fit = fit_cca((x[tr] - mx) / sx, (y[tr] - my) / sy, None if orient is None else orient[tr])
        except (ValueError, np.linalg.LinAlgError):
            continue
        u, v = fit.project((x[te] - mx) / sx, (y[te] - my) / sy)
        row["u"], row["v"] = u[:, 0], v[:, 0]
        if len(te) >= MIN_TEST_ROWS and np.ptp(u[:, 0]) > 0 and np.ptp(v[:, 0]) > 0:
            row["heldout_correlation"] = float(np.corrcoef(u[:, 0], v[:, 0])[0, 1])
    return out


# --- the stage ------------------------------------------------------------------------------------

_CCA_SCHEMA = {"task": pl.Utf8, "component": pl.Int32, "canonical_correlation": pl.Float64,
               "wilks_lambda": pl.Float64, "f_stat": pl.Float64, "df_num": pl.Float64, "df_den": pl.Float64,
               "p_value": pl.Float64, "n": pl.Int64, "n_runs": pl.Int64, "n_datasets": pl.Int64}
_LOAD_SCHEMA = {"task": pl.Utf8, "block": pl.Utf8, "variable": pl.Utf8, "component": pl.Int32,
                "loading": pl.Float64}
_HELD_SCHEMA = {"task": pl.Utf8, "fold": pl.Int32, "grouped_by": pl.Utf8, "test_groups": pl.Utf8,
                "n_train": pl.Int64, "n_test": pl.Int64, "heldout_correlation": pl.Float64}
_SCORE_SCHEMA = {"task": pl.Utf8, "run_id": pl.Utf8, "step": pl.Int64, "dataset": pl.Utf8,
                 "architecture": pl.Utf8, "fold": pl.Int32, "u1": pl.Float64, "v1": pl.Float64,
                 "heldout_u1": pl.Float64, "heldout_v1": pl.Float64}


def _task_blocks(sub: pl.DataFrame, task: str) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """The task's X and Y blocks: NULL-free, standardized within data set, constant/collinear dropped."""
    def block(names: list[str]) -> tuple[np.ndarray, list[str]]:
        names = [c for c in names if c in sub.columns and sub[c].null_count() == 0
                 and not sub[c].cast(pl.Float64).is_nan().any()]
        if not names:
            return np.zeros((sub.height, 0)), []
        raw = sub.select([pl.col(c).cast(pl.Float64) for c in names]).to_numpy()
        if STANDARDIZE_WITHIN_DATASET:
            raw = feat.standardize_within(raw, sub["dataset"].to_numpy(), tol=MIN_STD)
        keep = select_columns(raw, names)
        return raw[:, keep], [names[j] for j in keep]

    x, xn = block(list(X_FEATURES))
    metrics = list(feat.METRICS.get(task, ()))
    if PRIMARY.get(task) in metrics:  # the primary metric first, so the collinearity rule keeps it
        metrics.remove(PRIMARY[task])
        metrics.insert(0, PRIMARY[task])
    y, yn = block(metrics)
    return x, xn, y, yn


def _analyse_task(task: str, sub: pl.DataFrame) -> dict:
    n, n_runs, n_ds = sub.height, sub["run_id"].n_unique(), sub["dataset"].n_unique()
    x, xn, y, yn = _task_blocks(sub, task)
    res = {"task": task, "n": n, "n_runs": n_runs, "n_datasets": n_ds, "x_names": xn, "y_names": yn,
           "fit": None, "folds": [], "grouped_by": None, "reason": ""}
    dof = n - (n_ds if STANDARDIZE_WITHIN_DATASET else 1)
    if not xn or not yn or dof < len(xn) + len(yn) + MIN_EXTRA_DOF:
        res["reason"] = (f"too few snapshots for the CCA: n = {n} in {n_ds} data sets for p = {len(xn)} "
                         f"features and q = {len(yn)} metrics")
        return res
    orient = y[:, yn.index(PRIMARY[task])] if PRIMARY.get(task) in yn else None
    try:
        res["fit"] = fit_cca(x, y, orient)
    except (ValueError, np.linalg.LinAlgError) as exc:
        res["reason"] = f"CCA failed: {exc}"
        return res
    if n_ds >= 3:
        groups, res["grouped_by"] = sub["dataset"].to_numpy(), "dataset"
    elif n_runs >= 3:
        groups, res["grouped_by"] = sub["run_id"].to_numpy(), "run"
    else:
        return res
    res["groups"] = groups
    n_splits = min(MAX_FOLDS, len(np.unique(groups)))
    res["folds"] = heldout_first_correlations(x, y, groups, n_splits, orient)
    return res


def fisher_mean_ci(r: np.ndarray) -> tuple[float, float, float, float, int]:
    """Mean of correlations r (k,) on the Fisher-z scale with a t 95% interval over them, back-transformed:
    tanh(mean atanh r_i ± t_{0.975, k-1} sd/√k); also the one-sample t p-value of mean atanh r = 0.
    Returns ``(effect, lo, hi, p, k)``; NaNs when k < 2."""
    r = np.asarray(r, float)
    z = np.arctanh(np.clip(r[np.isfinite(r)], -0.999999, 0.999999))
    m, lo, hi, k = mean_ci(z)
    p = float(stats.ttest_1samp(z, 0.0).pvalue) if k >= 2 and np.ptp(z) > 0 else math.nan
    return math.tanh(m) if k else math.nan, math.tanh(lo), math.tanh(hi), p, k


def _verdict(res: dict) -> Verdict:
    values = np.array([f["heldout_correlation"] for f in res["folds"]], float)
    m, lo, hi, p, k = fisher_mean_ci(values)
    fit = res["fit"]
    unit = f"folds (held-out {'data sets' if res['grouped_by'] == 'dataset' else 'runs'})"
    if fit is not None:
        detail = (f"in-sample first canonical correlation {fit.cancorr[0]:.3f} (Wilks lambda {fit.wilks[0]:.3g}, "
                  f"p = {fit.p_value[0]:.2g}) over {res['n']} snapshots of {res['n_runs']} runs in "
                  f"{res['n_datasets']} data sets; X = {', '.join(res['x_names'])}; Y = {', '.join(res['y_names'])}; "
                  f"held-out per fold: {', '.join(f'{v:.2f}' for v in values)}")
        if res["grouped_by"] == "run":
            # Folds grouped by run alone let runs of the test's data set train the fit (and the
            # within-data-set scaling sees them): no verdict, the estimate stays in the table.
            lo = hi = math.nan
            detail += ("; fewer than 3 data sets, so folds could group only by run, not by data set: "
                       "no interval, inconclusive")
    else:
        detail = res["reason"]
    return Verdict(
        claim_id=f"cca.{res['task']}", source="001 §4.4/§5 CCA",
        claim=f"Spectral features relate to quality metrics ({res['task']})",
        test=("CCA of spectral features and quality metrics (z-scored within data set); held-out first canonical "
              "correlation per GroupKFold fold, Fisher-z mean with a t interval over folds"),
        effect_name="held-out first canonical correlation (Fisher-z mean over folds)", predicted="positive",
        effect=m, ci_low=lo, ci_high=hi, n=k, n_unit=unit, p_value=p, null_value=0.0,
        negligible=NEGLIGIBLE_R, detail=detail)


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write the CCA tables and verdicts."""
    snaps = con.sql("SELECT * FROM analysis_features ORDER BY run_id, step").pl()
    cca_rows, load_rows, held_rows, score_rows, verdicts = [], [], [], [], []
    for task in sorted(snaps["task"].unique().to_list()):
        sub = snaps.filter(pl.col("task") == task)
        res = _analyse_task(task, sub)
        base = {"task": task, "n": res["n"], "n_runs": res["n_runs"], "n_datasets": res["n_datasets"]}
        fit = res["fit"]
        if fit is None:
            cca_rows.append({**base, "component": None})
        else:
            for c in range(len(fit.cancorr)):
                cca_rows.append({**base, "component": c + 1, "canonical_correlation": fit.cancorr[c],
                                 "wilks_lambda": fit.wilks[c], "f_stat": fit.f_stat[c], "df_num": fit.df_num[c],
                                 "df_den": fit.df_den[c], "p_value": fit.p_value[c]})
            for blk, names, loads in (("X", res["x_names"], fit.x_loadings), ("Y", res["y_names"], fit.y_loadings)):
                for j, name in enumerate(names):
                    for c in range(min(N_LOADING_COMPONENTS, loads.shape[1])):
                        load_rows.append({"task": task, "block": blk, "variable": name, "component": c + 1,
                                          "loading": float(loads[j, c])})
            held_u = np.full(sub.height, np.nan)
            held_v = np.full(sub.height, np.nan)
            fold_of = np.full(sub.height, -1)
            for f in res["folds"]:
                te = f["test_index"]
                held_u[te], held_v[te], fold_of[te] = f["u"], f["v"], f["fold"]
                held_rows.append({"task": task, "fold": f["fold"], "grouped_by": res["grouped_by"],
                                  "test_groups": ", ".join(sorted(map(str, np.unique(res["groups"][te])))),
                                  "n_train": f["n_train"], "n_test": f["n_test"],
                                  "heldout_correlation": f["heldout_correlation"]})
            for i, r in enumerate(sub.select("run_id", "step", "dataset", "architecture").iter_rows()):
                score_rows.append({"task": task, "run_id": r[0], "step": r[1], "dataset": r[2], "architecture": r[3],
                                   "fold": int(fold_of[i]) if fold_of[i] >= 0 else None,
                                   "u1": float(fit.x_scores[i, 0]), "v1": float(fit.y_scores[i, 0]),
                                   "heldout_u1": float(held_u[i]), "heldout_v1": float(held_v[i])})
        verdicts.append(_verdict(res))
    for name, rows, schema in (("analysis_cca", cca_rows, _CCA_SCHEMA), ("analysis_cca_loadings", load_rows,
                                                                         _LOAD_SCHEMA),
                               ("analysis_cca_heldout", held_rows, _HELD_SCHEMA),
                               ("analysis_cca_scores", score_rows, _SCORE_SCHEMA)):
        frame = pl.DataFrame(rows, schema=schema).with_columns(pl.col(pl.Float64).fill_nan(None))  # noqa: F841
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM frame")
    write_verdicts(con, "cca", verdicts)


# --- figures --------------------------------------------------------------------------------------

def loadings_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Heatmap of the structure correlations of every variable with canonical variates 1-2, per task."""
    title = "CCA loadings: correlation of each variable with its block's canonical variate"
    df = con.sql("SELECT task, block, variable, component, loading FROM analysis_cca_loadings").pl()
    tasks = [t for t in ("classification", "regression") if t in set(df["task"].to_list())]
    if not tasks:
        return empty_figure(title, "no task had enough snapshots for a CCA")
    n_rows = max(df.filter(pl.col("task") == t).select(pl.struct("block", "variable").n_unique()).item()
                 for t in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks) + 1, 0.32 * n_rows + 2), squeeze=False)
    for i, (ax, task) in enumerate(zip(axes.flat, tasks, strict=True)):
        sub = df.filter(pl.col("task") == task).to_pandas()
        sub["label"] = sub["block"].map({"X": "feature: ", "Y": "metric: "}) + sub["variable"]
        order = list(dict.fromkeys(sub.sort_values(["block"], kind="stable")["label"]))
        mat = sub.pivot(index="label", columns="component", values="loading").reindex(order)
        mat.columns = [f"pair {c}" for c in mat.columns]
        sns.heatmap(mat, ax=ax, cmap="RdBu_r", center=0, vmin=-1, vmax=1, annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar=i == len(tasks) - 1,
                    cbar_kws={"label": "structure correlation", "shrink": 0.6})
        n_x = int((sub.drop_duplicates("label")["block"] == "X").sum())
        ax.axhline(n_x, color="black", lw=1)
        ax.grid(False)
        ax.set_title(task)
        ax.set_xlabel("canonical pair")
        ax.set_ylabel("variable (features above the line, metrics below)" if i == 0 else "")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def scores_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """First canonical variate pair: in-sample (left) and held-out (right) per task, by data set."""
    title = "First canonical variate pair: in-sample fit and held-out folds"
    df = con.sql("SELECT * FROM analysis_cca_scores ORDER BY task, dataset, run_id, step").pl()
    tasks = [t for t in ("classification", "regression") if t in set(df["task"].to_list())]
    if not tasks:
        return empty_figure(title, "no task had enough snapshots for a CCA")
    stats = {(t, c): (r, p) for t, c, r, p in con.execute(
        "SELECT task, component, canonical_correlation, p_value FROM analysis_cca").fetchall()}
    held = dict(con.execute("SELECT task, avg(heldout_correlation) FROM analysis_cca_heldout GROUP BY task"
                            ).fetchall())
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 4 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        sub = df.filter(pl.col("task") == task).to_pandas()
        r1, p1 = stats.get((task, 1), (None, None))
        for col, (u, v) in enumerate((("u1", "v1"), ("heldout_u1", "heldout_v1"))):
            ax = axes[row, col]
            part = sub.dropna(subset=[u, v])
            if len(part):
                sns.scatterplot(data=part, x=u, y=v, hue="dataset", ax=ax, s=16, alpha=0.75, linewidth=0,
                                palette="colorblind", legend=col == 1)
            if col == 0:
                ax.set_title(f"{task}, in-sample: ρ1 = {r1:.2f}, Wilks p = {p1:.2g}" if r1 is not None
                             else f"{task}, in-sample")
            else:
                h = held.get(task)
                ax.set_title(f"{task}, held-out: mean fold r = {h:.2f}" if h is not None
                             else f"{task}, held-out: no fold")
                if ax.get_legend() is not None:
                    ax.legend(title="data set", fontsize=7, title_fontsize=8, loc="best")
            ax.set_xlabel("feature variate u1 (spectral block)")
            ax.set_ylabel("metric variate v1 (quality block)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


FIGURES = {"cca_loadings": loadings_figure, "cca_scores": scores_figure}
CAPTIONS = {
    "cca_loadings": (
        "Structure correlations of each spectral feature (X) and quality metric (Y) with its block's first two "
        "canonical variates, per task; columns z-scored within data set, constant and near-collinear columns "
        "dropped. Signs are oriented so the metric variate rises with the primary metric."),
    "cca_scores": (
        "First canonical variates, one point per snapshot coloured by data set. Left: the in-sample fit. Right: "
        "each snapshot projected with the weights fitted on the folds that did not contain its data set (or its "
        "run, with fewer than 3 data sets); the sign comes from the training fit."),
}


# --- report ---------------------------------------------------------------------------------------

def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences: in-sample vs held-out first canonical correlation and the Wilks test."""
    paragraphs = []
    rows = con.execute("""
        SELECT c.task, c.canonical_correlation, c.p_value, c.n, c.n_runs, c.n_datasets,
               (SELECT count(*) FROM analysis_cca c2 WHERE c2.task = c.task AND c2.p_value < 0.05),
               h.mean_r, h.min_r, h.max_r, h.k, h.grouped_by,
               (SELECT count(*) FROM analysis_cca_loadings l WHERE l.task = c.task AND l.component = 1
                AND l.block = 'X'),
               (SELECT count(*) FROM analysis_cca_loadings l WHERE l.task = c.task AND l.component = 1
                AND l.block = 'Y')
        FROM analysis_cca c
        LEFT JOIN (SELECT task, avg(heldout_correlation) AS mean_r, min(heldout_correlation) AS min_r,
                          max(heldout_correlation) AS max_r, count(heldout_correlation) AS k,
                          any_value(grouped_by) AS grouped_by
                   FROM analysis_cca_heldout GROUP BY task) h USING (task)
        WHERE c.component = 1 OR c.component IS NULL ORDER BY c.task""").fetchall()
    for task, r1, p1, n, n_runs, n_ds, n_sig, mr, lo, hi, k, by, px, qy in rows:
        if r1 is None:
            paragraphs.append(f"{task.capitalize()}: no CCA ({n} snapshots of {n_runs} runs in {n_ds} data sets "
                              "are too few for the blocks).")
            continue
        text = (f"{task.capitalize()}: {px} spectral features against {qy} metrics over {n} snapshots of {n_runs} "
                f"runs ({n_ds} data sets). In-sample first canonical correlation {r1:.2f} (Wilks p = {p1:.2g}; "
                f"{n_sig} of the components significant at 0.05, snapshots treated as independent).")
        if mr is not None:
            text += (f" Held out by {by}, the first canonical correlation averages {mr:.2f} (arithmetic mean) "
                     f"over {k} folds (range {lo:.2f} to {hi:.2f}): in-sample exceeds it by {r1 - mr:.2f}.")
        else:
            text += " No held-out fold could be scored."
        paragraphs.append(text)
    tables = [
        {"caption": "Canonical correlations and Wilks' lambda tests per task",
         "sql": """SELECT task, component, round(canonical_correlation, 3) AS rho, round(wilks_lambda, 4) AS wilks,
                          round(f_stat, 2) AS F, round(df_num, 1) AS df_num, round(df_den, 1) AS df_den, p_value,
                          n, n_runs FROM analysis_cca ORDER BY task, component"""},
        {"caption": "Held-out first canonical correlation per fold",
         "sql": """SELECT task, fold, grouped_by, test_groups, n_train, n_test,
                          round(heldout_correlation, 3) AS heldout_r FROM analysis_cca_heldout ORDER BY task, fold"""},
        {"caption": "Loadings on the first canonical pair",
         "sql": """SELECT task, block, variable, round(loading, 3) AS loading FROM analysis_cca_loadings
                   WHERE component = 1 ORDER BY task, block, abs(loading) DESC"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
