"""Topology of the weights per layer (paper 003): the H0 persistence of each layer's neuron weight point
cloud at every stored snapshot, its persistent entropy and mean bar lifetime, how they evolve over
training and over training-set size, whether they track test accuracy, and whether they say more
about accuracy than the layer's weight variance and norm do (Girrbach et al., TMLR 2023, found
topological summaries close to functions of weight variance).

Tables
------
``layer_topology``
    one row per (run_id, step, layer_index) with stored weights: the cloud's size (``n_neurons``;
    ``n_dead`` all-zero rows dropped; ``n_duplicates`` merged; ``n_points`` left), ``n_bars`` finite
    H0 bars, ``entropy`` (nats), ``normalized_entropy`` = entropy / ln n_bars (primary),
    ``normalized_entropy_log_total`` = entropy / ln(total lifetime) (paper 003's ITMO convention:
    unit-dependent), ``mean_lifetime`` and ``mean_lifetime_scaled`` (divided by the mean neuron
    norm), and the baseline's controls ``weight_variance`` and ``weight_norm`` (Frobenius) of W.
    Definitions in :mod:`analyses.persistent_homology`. The cloud is the rows of W, bias not
    appended (:data:`INCLUDE_BIAS`); every run's weights are used, diverged runs included.
``layer_topology_bars``
    the diagrams: one row per finite bar (birth 0, death), queryable with plain SQL.
``analysis_topology_snapshots``
    ``layer_topology`` joined with the run's configuration, the layer's position (``first``,
    ``middle``, ``last`` hidden, ``output``) and the test metric at that step (non-diverged runs).
``analysis_topology_runs``
    one row per (run, layer, metric): the metric at initialization and at the last snapshot, its
    change over training (difference for the entropies, ln ratio for the lifetimes), the Spearman
    correlation over that run's snapshots between the metric and test accuracy (and the partial
    one, controlling for the ranks of ln weight variance and ln weight norm: both metric and
    accuracy drift with training time, and so does the weights' scale), and the controls and test
    metric at the last snapshot. Every correlation across runs uses these rows: one value
    per run.
``analysis_topology_correlations``
    the tests, per (metric, position): across classification runs, Pearson and Spearman r of the
    final metric with final test accuracy within (data set, architecture) groups of two or more runs
    (:func:`within_group_r`: accuracy and the weights' scale both differ by data set and by model
    size, so pooling them would correlate the groups, not the runs); the partial r after regressing
    both on the layer's ln weight variance and ln weight norm; the baselines' own r with accuracy and the
    metric's r with ln variance; the mean within-run Spearman over training; and the mean over
    train-fraction *sweeps* (runs identical but for ``train_fraction``, at least
    :data:`MIN_SWEEP_FRACTIONS` fractions) of the Spearman r between train fraction and the final
    metric. Intervals: 95% percentile bootstrap over runs for correlations across runs, t intervals
    over runs or sweeps for means of per-run or per-sweep values; ``p_adjusted`` is Benjamini-Hochberg
    over every row of the table. Train fraction is confounded with the number of optimizer steps
    (epochs are fixed, so a smaller training set takes fewer steps), as in the paper's design.
``analysis_topology_train_fraction``
    the final metric and test metric averaged over seeds per (data set, size, position, train
    fraction), for the sweeps.
``analysis_topology_verdicts``
    the paper's claims, per metric of the paper (normalized entropy, mean lifetime) and per layer
    position every network has (first hidden, output).

Pearson r reads the entropies as they are and the lifetimes and controls on a log scale
(:data:`LOG_METRICS`); Spearman r is unchanged by it.
"""

from __future__ import annotations

import json
import math

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.colors import LogNorm
from scipy import stats
from statsmodels.stats.multitest import multipletests
from tqdm import tqdm

from analyses import persistent_homology as ph
from analyses.features import POSITIONS, layer_position
from analyses.presentation import empty_figure
from analyses.verdicts import Verdict, mean_ci, mean_t_p, row_bootstrap, write_verdicts

READS = ("runs", "weights", "analysis_features_layer")
WRITES = ("layer_topology", "layer_topology_bars", "analysis_topology_snapshots", "analysis_topology_runs",
          "analysis_topology_correlations", "analysis_topology_train_fraction", "analysis_topology_verdicts")
TITLE = "Topology of the weights per layer (persistent homology)"

#: Whether each neuron's bias is appended to its incoming weight vector in the point cloud.
INCLUDE_BIAS = False
#: H0 method of :func:`analyses.persistent_homology.h0_deaths`.
METHOD: ph.Method = "auto"
#: Metrics of ``layer_topology`` the stage studies; the paper's two first.
METRICS = ("normalized_entropy", "mean_lifetime", "mean_lifetime_scaled", "entropy", "normalized_entropy_log_total")
#: The paper's metrics, which get verdict rows.
PAPER_METRICS = ("normalized_entropy", "mean_lifetime")
#: Positions with verdict rows: the two every network has.
VERDICT_POSITIONS = ("first", "output")
#: Metrics read on a log scale by Pearson r and by the change over training (ln ratio).
LOG_METRICS = ("mean_lifetime", "mean_lifetime_scaled")
#: Fewest distinct train fractions for a group of runs to count as a sweep.
MIN_SWEEP_FRACTIONS = 3
#: Correlations within +-NEGLIGIBLE_R of 0 count as no relation (the verdict's negligible band).
NEGLIGIBLE_R = 0.1
#: Negligible band of the uneven-change verdict: 0.01 of normalized entropy (its range is [0, 1]); a
#: ln ratio of ln(1.05) for the mean lifetime (a 5 % difference in growth).
NEGLIGIBLE_CHANGE = {"normalized_entropy": 0.01, "mean_lifetime": math.log(1.05)}

_TOPOLOGY_SCHEMA = {
    "run_id": pl.Utf8, "step": pl.Int32, "layer_index": pl.Int32, "n_points": pl.Int32, "n_bars": pl.Int32,
    "entropy": pl.Float64, "normalized_entropy": pl.Float64, "normalized_entropy_log_total": pl.Float64,
    "mean_lifetime": pl.Float64, "mean_lifetime_scaled": pl.Float64, "n_neurons": pl.Int32, "n_dead": pl.Int32,
    "n_duplicates": pl.Int32, "total_lifetime": pl.Float64, "mean_neuron_norm": pl.Float64,
    "weight_variance": pl.Float64, "weight_norm": pl.Float64, "with_bias": pl.Boolean, "method": pl.Utf8,
}
_BAR_SCHEMA = {"run_id": pl.Utf8, "step": pl.Int32, "layer_index": pl.Int32, "bar_index": pl.Int32,
               "birth": pl.Float64, "death": pl.Float64}
_CORR_SCHEMA = {"metric": pl.Utf8, "position": pl.Utf8, "analysis": pl.Utf8, "method": pl.Utf8,
                "estimate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64,
                "n": pl.Int32, "n_unit": pl.Utf8, "n_groups": pl.Int32, "n_datasets": pl.Int32,
                "p_adjusted": pl.Float64}


# --- layer_topology -------------------------------------------------------------------------------

def topology_rows(run_id: str, step: int, layer_index: int, weight: np.ndarray,
                  bias: np.ndarray | None) -> tuple[dict, list[dict]]:
    """The ``layer_topology`` row and ``layer_topology_bars`` rows of one layer's weight (q, d)."""
    summary, cloud, deaths = ph.layer_topology(weight, bias if INCLUDE_BIAS else None, METHOD)
    w = np.asarray(weight, dtype=np.float64)
    row = {"run_id": run_id, "step": step, "layer_index": layer_index, "n_points": summary.n_points,
           "n_bars": summary.n_bars, "entropy": summary.entropy, "normalized_entropy": summary.normalized_entropy,
           "normalized_entropy_log_total": summary.normalized_entropy_log_total,
           "mean_lifetime": summary.mean_lifetime, "mean_lifetime_scaled": summary.mean_lifetime_scaled,
           "n_neurons": cloud.n_neurons, "n_dead": cloud.n_dead, "n_duplicates": cloud.n_duplicates,
           "total_lifetime": summary.total_lifetime, "mean_neuron_norm": summary.mean_neuron_norm,
           "weight_variance": float(w.var()), "weight_norm": float(np.linalg.norm(w)),
           "with_bias": INCLUDE_BIAS, "method": "mst" if METHOD == "auto" else METHOD}
    kept = deaths[deaths > 0]
    bars = [{"run_id": run_id, "step": step, "layer_index": layer_index, "bar_index": k, "birth": 0.0,
             "death": float(d)} for k, d in enumerate(kept)]
    return row, bars


def _write_layer_topology(con: duckdb.DuckDBPyConnection) -> None:
    run_ids = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM weights ORDER BY run_id").fetchall()]
    rows, bars = [], []
    for run_id in tqdm(run_ids, desc="topology", unit="run", leave=False, disable=None):
        # One run at a time: a paper-scale corpus's weights do not fit in memory at once.
        tensors = con.execute("""
            SELECT step, layer_index, tensor, shape, "values" FROM weights
            WHERE run_id = ? AND tensor IN ('linear.weight', 'linear.bias') ORDER BY step, layer_index""",
                              [run_id]).fetchall()
        by_layer: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for step, layer_index, tensor, shape, values in tensors:
            by_layer.setdefault((step, layer_index), {})[tensor] = np.asarray(values, np.float32).reshape(shape)
        for (step, layer_index), t in by_layer.items():
            row, layer_bars = topology_rows(run_id, step, layer_index, t["linear.weight"], t.get("linear.bias"))
            rows.append(row)
            bars += layer_bars
    topology = pl.DataFrame(rows, schema=_TOPOLOGY_SCHEMA)  # noqa: F841
    bar_frame = pl.DataFrame(bars, schema=_BAR_SCHEMA)  # noqa: F841
    con.execute("CREATE OR REPLACE TABLE layer_topology AS SELECT * FROM topology ORDER BY run_id, step, layer_index")
    con.execute("CREATE OR REPLACE TABLE layer_topology_bars AS SELECT * FROM bar_frame "
                "ORDER BY run_id, step, layer_index, bar_index")


# --- per snapshot and per run ---------------------------------------------------------------------

def sweep_id(config_json: str) -> str:
    """The run's configuration without ``train_fraction``: runs sharing it form one train-fraction sweep."""
    config = json.loads(config_json)
    config.pop("train_fraction", None)
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _write_snapshots(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    frame = con.sql("""
        SELECT t.*, f.dataset, f.task, f.size, f.architecture, f.activation, f.train_fraction, f.seed, f.epoch,
               f.progress, f.n_layers, f.is_output, f.primary_metric AS test_metric,
               CASE WHEN f.task = 'classification' THEN 'test_accuracy' ELSE 'test_r2' END AS test_metric_name,
               r.config_json
        FROM layer_topology t JOIN analysis_features_layer f USING (run_id, step, layer_index)
        JOIN runs r USING (run_id)
        ORDER BY run_id, step, layer_index""").pl()
    if frame.height:
        positions = layer_position(frame["layer_index"].to_numpy(), frame["n_layers"].to_numpy(),
                                   frame["is_output"].fill_null(False).to_numpy())
        sweeps = [sweep_id(c) for c in frame["config_json"].to_list()]
    else:
        positions, sweeps = [], []
    frame = frame.with_columns(pl.Series("position", positions, pl.Utf8), pl.Series("sweep", sweeps, pl.Utf8))
    # A sweep is named by its first run id, short enough to group by and read.
    names = frame.group_by("sweep").agg(pl.col("run_id").min().alias("sweep_name"))
    frame = frame.join(names, on="sweep", how="left").drop("sweep", "config_json").rename({"sweep_name": "sweep"})
    con.execute("CREATE OR REPLACE TABLE analysis_topology_snapshots AS SELECT * FROM frame "
                "ORDER BY run_id, step, layer_index")
    return frame


def metric_change(initial: float | None, final: float | None, metric: str) -> float | None:
    """The change of a metric over training: final - initial, or ln(final / initial) for LOG_METRICS."""
    if initial is None or final is None or not (math.isfinite(initial) and math.isfinite(final)):
        return None
    if metric in LOG_METRICS:
        return math.log(final / initial) if initial > 0 and final > 0 else None
    return final - initial


def within_run_spearman(metric: np.ndarray, accuracy: np.ndarray,
                        controls: np.ndarray | None = None) -> float | None:
    """Spearman r over one run's snapshots (arrays (s,)) between a metric and test accuracy; with
    ``controls`` (s, k), the partial Spearman r: Pearson r of the ranks' residuals on the controls'
    ranks, 0 when the metric's ranks are wholly explained by the controls'. None with fewer than
    3 + k finite snapshots, a constant series, or an accuracy wholly explained by the controls."""
    c = np.zeros((len(metric), 0)) if controls is None else _as_columns(controls)
    ok = np.isfinite(metric) & np.isfinite(accuracy) & np.isfinite(c).all(axis=1)
    k = c.shape[1]
    if ok.sum() < 3 + k or np.ptp(metric[ok]) == 0 or np.ptp(accuracy[ok]) == 0:
        return None
    if k == 0:
        return float(stats.spearmanr(metric[ok], accuracy[ok]).statistic)
    ranks = stats.rankdata(c[ok], axis=0)
    res_metric = _residuals(stats.rankdata(metric[ok]), ranks)
    res_accuracy = _residuals(stats.rankdata(accuracy[ok]), ranks)
    if not np.any(res_accuracy):
        return None  # accuracy itself is a function of the controls: nothing left to explain
    if not np.any(res_metric):
        return 0.0  # the metric's ranks are the controls': it carries no information beyond them
    return float(_pearson_rows(res_metric, res_accuracy))


def _write_runs(con: duckdb.DuckDBPyConnection, snapshots: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for (run_id, layer_index), g in snapshots.group_by(["run_id", "layer_index"], maintain_order=True):
        g = g.sort("step")
        first, last = g.row(0, named=True), g.row(g.height - 1, named=True)
        accuracy = g["test_metric"].cast(pl.Float64).fill_null(math.nan).to_numpy()
        controls = np.column_stack([_scale(g["weight_variance"].to_numpy(), "weight_variance"),
                                    _scale(g["weight_norm"].to_numpy(), "weight_norm")])
        classification = last["task"] == "classification"
        for metric in METRICS:
            values = g[metric].cast(pl.Float64).fill_null(math.nan).to_numpy()
            rows.append({
                "run_id": run_id, "layer_index": layer_index, "position": last["position"], "metric": metric,
                "dataset": last["dataset"], "task": last["task"], "size": last["size"],
                "architecture": last["architecture"], "train_fraction": last["train_fraction"],
                "seed": last["seed"], "sweep": last["sweep"], "final_step": last["step"],
                "n_snapshots": g.height, "initial": first[metric], "final": last[metric],
                "change": metric_change(first[metric], last[metric], metric),
                "spearman_over_training": within_run_spearman(values, accuracy) if classification else None,
                "partial_spearman_over_training": (within_run_spearman(values, accuracy, controls)
                                                   if classification else None),
                "weight_variance": last["weight_variance"], "weight_norm": last["weight_norm"],
                "test_metric": last["test_metric"], "test_metric_name": last["test_metric_name"]})
    schema = {"run_id": pl.Utf8, "layer_index": pl.Int32, "position": pl.Utf8, "metric": pl.Utf8,
              "dataset": pl.Utf8, "task": pl.Utf8, "size": pl.Utf8, "architecture": pl.Utf8,
              "train_fraction": pl.Float64, "seed": pl.Int32, "sweep": pl.Utf8, "final_step": pl.Int32,
              "n_snapshots": pl.Int32, "initial": pl.Float64, "final": pl.Float64, "change": pl.Float64,
              "spearman_over_training": pl.Float64, "partial_spearman_over_training": pl.Float64,
              "weight_variance": pl.Float64, "weight_norm": pl.Float64,
              "test_metric": pl.Float64, "test_metric_name": pl.Utf8}
    frame = pl.DataFrame(rows, schema=schema)
    con.execute("CREATE OR REPLACE TABLE analysis_topology_runs AS SELECT * FROM frame "
                "ORDER BY run_id, layer_index, metric")
    return frame


# --- correlation estimators (pure) ----------------------------------------------------------------

def _as_columns(controls: np.ndarray) -> np.ndarray:
    c = np.asarray(controls, float)
    return c[:, None] if c.ndim == 1 else c


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis of x, y (..., n); NaN where either is constant."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _residuals(y: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Residuals of y (..., n) after least squares on [1, controls] (..., n, k), by pseudo-inverse, so
    collinear controls (ln variance and ln norm of same-shaped layers) still give the projection."""
    design = np.concatenate([np.ones((*controls.shape[:-1], 1)), controls], axis=-1)
    beta = np.linalg.pinv(design) @ y[..., None]
    res = y - (design @ beta)[..., 0]
    # y wholly explained by the controls: its residual is rounding noise, not a direction to correlate.
    scale = np.linalg.norm(y - y.mean(axis=-1, keepdims=True), axis=-1, keepdims=True)
    return np.where(np.linalg.norm(res, axis=-1, keepdims=True) <= 1e-9 * scale, 0.0, res)


def _scale(values: np.ndarray, metric: str) -> np.ndarray:
    v = np.asarray(values, float)
    if metric in LOG_METRICS or metric in ("weight_variance", "weight_norm"):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
    return v


def rank_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Average ranks of values (n,) within each group (n,): Pearson r of these, z-scored within group,
    is the within-group Spearman r."""
    v = np.asarray(values, float)
    out = np.empty_like(v)
    for g in np.unique(groups):
        m = groups == g
        out[m] = stats.rankdata(v[m])
    return out


def standardize_batched(values: np.ndarray, codes: np.ndarray, n_codes: int, tol: float = 1e-12) -> np.ndarray:
    """:func:`analyses.features.standardize_within` for a batch: values (B, n, m) z-scored (ddof 0)
    within the groups ``codes`` (B, n) of integers below n_codes, per column; a group of one row or a
    column with sd <= tol * max(1, |mean|) there maps to 0."""
    b, n, m = values.shape
    flat, v = codes.reshape(-1), values.reshape(b * n, m)
    count = np.bincount(flat, minlength=n_codes).astype(float)
    safe = np.maximum(count, 1.0)
    out = np.zeros_like(v)
    for j in range(m):
        mean = np.bincount(flat, weights=v[:, j], minlength=n_codes) / safe
        centred = v[:, j] - mean[flat]
        sd = np.sqrt(np.bincount(flat, weights=centred ** 2, minlength=n_codes) / safe)
        ok = (count[flat] > 1) & (sd[flat] > tol * np.maximum(1.0, np.abs(mean[flat])))
        out[ok, j] = centred[ok] / sd[flat][ok]
    return out.reshape(b, n, m)


def within_group_r(x: np.ndarray, y: np.ndarray, groups: np.ndarray, controls: np.ndarray | None = None,
                   method: str = "pearson", seed: int = 0) -> tuple[float, float, float, float, int, int, int]:
    """Correlation of x and y (n,), one row per run, within groups (n,) such as (data set, architecture).

    Rows of groups with one finite row carry no within-group information and are dropped. x, y (and
    the controls (n, c), if any) are z-scored within each group; r is Pearson r of the z-scores, or
    with controls the partial r (Pearson r of the residuals of both on [1, controls]); "spearman"
    ranks x and y within group first. The 95% interval is a percentile bootstrap over runs
    (:func:`analyses.verdicts.row_bootstrap`) that redoes the z-scoring in every resample (the ranks
    stay those of the full sample). p from t = r sqrt(nu / (1 - r^2)), nu = n - k - 1 - c (k groups).
    Returns ``(r, lo, hi, p, n_runs, n_groups, n_datasets)``, n_datasets the number of distinct first
    fields of the group labels ("dataset|architecture").
    """
    x, y, g = np.asarray(x, float), np.asarray(y, float), np.asarray(groups).astype(str)
    c = np.zeros((len(x), 0)) if controls is None else _as_columns(controls)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(c).all(axis=1)
    x, y, c, g = x[ok], y[ok], c[ok], g[ok]
    _, inv = np.unique(g, return_inverse=True)
    keep = np.bincount(inv)[inv] >= 2
    x, y, c, g = x[keep], y[keep], c[keep], g[keep]
    labels, codes = np.unique(g, return_inverse=True)
    n, k, n_first = int(len(x)), int(len(labels)), int(len({lab.split("|")[0] for lab in labels}))
    if method == "spearman":
        x, y = rank_within(x, codes), rank_within(y, codes)
    data = np.column_stack([x, y, c])

    def statistic(idx: np.ndarray) -> np.ndarray:
        batch = np.atleast_2d(idx)
        offsets = np.arange(len(batch))[:, None] * k
        z = standardize_batched(data[batch], codes[batch] + offsets, len(batch) * k)
        zx, zy = z[..., 0], z[..., 1]
        if c.shape[1]:
            zx, zy = _residuals(zx, z[..., 2:]), _residuals(zy, z[..., 2:])
        r = _pearson_rows(zx, zy)
        return r if np.ndim(idx) == 2 else r[0]

    if n < 4:
        return math.nan, math.nan, math.nan, math.nan, n, k, n_first
    r, lo, hi, _ = row_bootstrap(statistic, n, seed=seed)
    dof = n - k - 1 - c.shape[1]
    if not math.isfinite(r) or dof < 1:
        return r, lo, hi, math.nan, n, k, n_first
    t = r * math.sqrt(dof / max(1e-300, 1 - r * r))
    return r, lo, hi, float(2 * stats.t.sf(abs(t), dof)), n, k, n_first


def _correlation_rows(runs: pl.DataFrame) -> list[dict]:
    out = []

    def add(metric, position, analysis, method, est, lo, hi, p, n, n_groups, n_datasets, unit="runs"):
        out.append({"metric": metric, "position": position, "analysis": analysis, "method": method,
                    "estimate": est, "ci_low": lo, "ci_high": hi, "p_value": p, "n": n, "n_unit": unit,
                    "n_groups": n_groups, "n_datasets": n_datasets})

    positions = [p for p in POSITIONS if p in set(runs["position"].to_list())]
    for metric in METRICS:
        for position in positions:
            g = runs.filter((pl.col("metric") == metric) & (pl.col("position") == position))
            cls = g.filter((pl.col("task") == "classification") & pl.col("final").is_not_null()
                           & pl.col("test_metric").is_not_null())
            if cls.height:
                # Like with like: accuracy and the weights' scale both differ by data set and by model.
                groups = (cls["dataset"] + "|" + cls["architecture"]).to_numpy()
                x = _scale(cls["final"].to_numpy(), metric)
                acc = cls["test_metric"].to_numpy().astype(float)
                controls = np.column_stack([_scale(cls["weight_variance"].to_numpy(), "weight_variance"),
                                            _scale(cls["weight_norm"].to_numpy(), "weight_norm")])
                for method in ("pearson", "spearman"):
                    add(metric, position, "accuracy_across_runs", method, *within_group_r(x, acc, groups,
                                                                                         method=method))
                add(metric, position, "accuracy_beyond_variance", "partial",
                    *within_group_r(x, acc, groups, controls))
                add(metric, position, "metric_vs_ln_variance", "pearson", *within_group_r(x, controls[:, 0], groups))
                if metric == METRICS[0]:  # the baselines' own relation with accuracy, once per position
                    add("weight_variance", position, "accuracy_across_runs", "pearson",
                        *within_group_r(controls[:, 0], acc, groups))
                    add("weight_norm", position, "accuracy_across_runs", "pearson",
                        *within_group_r(controls[:, 1], acc, groups))
                for column, analysis, method in (
                        ("spearman_over_training", "accuracy_over_training", "mean within-run spearman"),
                        ("partial_spearman_over_training", "accuracy_over_training_beyond_variance",
                         "mean within-run partial spearman")):
                    values = cls[column].cast(pl.Float64).fill_null(math.nan).to_numpy()
                    kept = cls.filter(pl.col(column).is_not_null())
                    add(metric, position, analysis, method, *_mean_r_ci(values), mean_t_p(values),
                        int(np.isfinite(values).sum()), None, kept["dataset"].n_unique())
            per = sweep_spearman(g)
            values = per["spearman"].to_numpy()
            add(metric, position, "train_fraction", "mean within-sweep spearman", *_mean_r_ci(values), mean_t_p(values),
                len(values), None, per["dataset"].n_unique(), unit="sweeps")
    return out


def sweep_spearman(frame: pl.DataFrame) -> pl.DataFrame:
    """Per sweep (rows of one metric and position with ``sweep``, ``train_fraction``, ``final``), the
    Spearman r between train fraction and the final metric, for sweeps with at least
    MIN_SWEEP_FRACTIONS distinct fractions and a finite, non-constant metric."""
    rows = []
    for (sweep,), g in frame.filter(pl.col("final").is_not_null()).group_by(["sweep"], maintain_order=True):
        frac, value = g["train_fraction"].to_numpy(), g["final"].to_numpy().astype(float)
        ok = np.isfinite(value)
        if len(np.unique(frac[ok])) < MIN_SWEEP_FRACTIONS or np.ptp(value[ok]) == 0:
            continue
        rows.append({"sweep": sweep, "dataset": g["dataset"][0],
                     "spearman": float(stats.spearmanr(frac[ok], value[ok]).statistic)})
    return pl.DataFrame(rows, schema={"sweep": pl.Utf8, "dataset": pl.Utf8, "spearman": pl.Float64})


def _mean_r_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean of correlations with its t interval, clipped to [-1, 1] (a mean of r cannot leave it)."""
    m, lo, hi, _ = mean_ci(values)
    return m, (max(lo, -1.0) if math.isfinite(lo) else lo), (min(hi, 1.0) if math.isfinite(hi) else hi)


def _write_train_fraction(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""
        CREATE OR REPLACE TABLE analysis_topology_train_fraction AS
        WITH sweeps AS (
            SELECT sweep FROM analysis_topology_runs GROUP BY sweep
            HAVING count(DISTINCT train_fraction) >= {MIN_SWEEP_FRACTIONS})
        SELECT metric, position, dataset, size, train_fraction, count(DISTINCT run_id) AS n_runs,
               avg("final") AS final_mean, stddev_samp("final") AS final_sd, avg(change) AS change_mean,
               avg(test_metric) AS test_metric_mean, any_value(test_metric_name) AS test_metric_name
        FROM analysis_topology_runs WHERE sweep IN (SELECT sweep FROM sweeps)
        GROUP BY ALL ORDER BY metric, position, dataset, size, train_fraction""")


# --- verdicts -------------------------------------------------------------------------------------

_LABEL = {"normalized_entropy": "normalized persistent entropy", "mean_lifetime": "mean H0 lifetime"}


def _verdicts(corr: pl.DataFrame, runs: pl.DataFrame) -> list[Verdict]:
    out: list[Verdict] = []

    def pick(metric: str, position: str, analysis: str, method: str) -> dict | None:
        hit = corr.filter((pl.col("metric") == metric) & (pl.col("position") == position)
                          & (pl.col("analysis") == analysis) & (pl.col("method") == method))
        return hit.row(0, named=True) if hit.height else None

    specs = [
        ("tracks_accuracy", "accuracy_across_runs", "pearson",
         "{label} of the {pos} layer correlates with test accuracy across trained networks",
         "Pearson r across classification runs of the final {scale}{label} and final test accuracy, both "
         "z-scored within (data set, architecture) groups; bootstrap over runs", "Pearson r"),
        ("beyond_variance", "accuracy_beyond_variance", "partial",
         "{label} of the {pos} layer tells about test accuracy beyond the layer's weight variance and norm",
         "partial Pearson r of the final {scale}{label} with test accuracy after regressing both on ln weight "
         "variance and ln weight norm (all z-scored within (data set, architecture) groups); bootstrap over runs",
         "partial r"),
        ("over_training", "accuracy_over_training", "mean within-run spearman",
         "{label} of the {pos} layer moves with test accuracy over training",
         "Spearman r between the metric and test accuracy over each run's snapshots, mean over runs with a t "
         "interval (training time drives both; the partial version is in analysis_topology_correlations)",
         "mean within-run Spearman r"),
        ("over_training_beyond_variance", "accuracy_over_training_beyond_variance",
         "mean within-run partial spearman",
         "{label} of the {pos} layer moves with test accuracy over training beyond its weight variance and norm",
         "partial Spearman r between the metric and test accuracy over each run's snapshots, controlling for the "
         "ranks of ln weight variance and ln weight norm; mean over runs with a t interval",
         "mean within-run partial Spearman r"),
        ("train_fraction", "train_fraction", "mean within-sweep spearman",
         "{label} of the {pos} layer changes with the training-set size",
         "Spearman r between train fraction and the final metric within each sweep (runs identical but for "
         "the fraction), mean over sweeps with a t interval", "mean within-sweep Spearman r"),
    ]
    for metric in PAPER_METRICS:
        for position in VERDICT_POSITIONS:
            pos = "first hidden" if position == "first" else position
            for name, analysis, method, claim, test, effect_name in specs:
                row = pick(metric, position, analysis, method) or {}
                out.append(Verdict(
                    claim_id=f"topology.{metric}.{position}.{name}", source="003",
                    claim=claim.format(label=_LABEL[metric], pos=pos),
                    test=test.format(label=_LABEL[metric], scale="ln " if metric in LOG_METRICS else ""),
                    effect_name=effect_name, predicted="nonzero", effect=row.get("estimate"),
                    ci_low=row.get("ci_low"), ci_high=row.get("ci_high"), n=int(row.get("n") or 0),
                    n_unit=row.get("n_unit") or ("sweeps" if name == "train_fraction" else "runs"),
                    p_value=row.get("p_value"), negligible=NEGLIGIBLE_R,
                    detail=(f"{row.get('n_datasets') or 0} data sets"
                            + (f" in {row['n_groups']} (data set, architecture) groups" if row.get("n_groups") else "")
                            + f"; metric {metric}, layer position {position}")))
        paired = _layer_change_difference(runs, metric)
        m, lo, hi, n = mean_ci(paired)
        out.append(Verdict(
            claim_id=f"topology.{metric}.uneven_across_layers", source="003",
            claim=f"The {_LABEL[metric]} changes unevenly across layers during training",
            test=("per run, change over training (initial to last snapshot; "
                  + ("ln ratio" if metric in LOG_METRICS else "difference")
                  + ") of the first hidden layer minus that of the output layer; mean over runs with a t interval"),
            effect_name="mean paired difference of the change", predicted="nonzero", effect=m, ci_low=lo,
            ci_high=hi, n=n, n_unit="runs", p_value=mean_t_p(paired), negligible=NEGLIGIBLE_CHANGE[metric],
            detail=("runs where both layers have the metric at both ends; negligible band "
                    f"+-{NEGLIGIBLE_CHANGE[metric]:.3g}")))
    return out


def _layer_change_difference(runs: pl.DataFrame, metric: str) -> np.ndarray:
    g = runs.filter((pl.col("metric") == metric) & pl.col("change").is_not_null())
    first = g.filter(pl.col("position") == "first").select("run_id", pl.col("change").alias("first"))
    out = g.filter(pl.col("position") == "output").select("run_id", pl.col("change").alias("output"))
    both = first.join(out, on="run_id")
    return (both["first"] - both["output"]).to_numpy().astype(float)


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write every table of the module doc."""
    _write_layer_topology(con)
    snapshots = _write_snapshots(con)
    runs = _write_runs(con, snapshots)
    rows = _correlation_rows(runs)
    p = np.array([math.nan if r["p_value"] is None else r["p_value"] for r in rows], float)
    adjusted = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="fdr_bh")[1]
    for r, a in zip(rows, adjusted, strict=True):
        r["p_adjusted"] = float(a)
    corr = pl.DataFrame(rows, schema=_CORR_SCHEMA).with_columns(pl.col(pl.Float64).fill_nan(None))
    con.execute("CREATE OR REPLACE TABLE analysis_topology_correlations AS SELECT * FROM corr")
    _write_train_fraction(con)
    write_verdicts(con, "topology", _verdicts(corr, runs))


# --- figures --------------------------------------------------------------------------------------

_AXIS_LABEL = {"normalized_entropy": "normalized entropy H / ln m", "mean_lifetime": "mean lifetime L / m",
               "mean_lifetime_scaled": "mean lifetime / mean neuron norm", "entropy": "entropy H (nats)",
               "normalized_entropy_log_total": "H / ln L (ITMO)"}
#: Metrics drawn in the curves: the paper's two, which the verdicts test (mean lifetime on a log axis).
CURVE_METRICS = PAPER_METRICS


def trajectories_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Metric vs epoch per layer position, one line per run of the train-fraction sweeps, coloured by
    train fraction (log scale)."""
    title = "Topology of the weights over training, per layer, coloured by training-set fraction"
    frame = con.sql(f"""
        WITH sweeps AS (SELECT sweep FROM analysis_topology_snapshots GROUP BY sweep
                        HAVING count(DISTINCT train_fraction) >= {MIN_SWEEP_FRACTIONS})
        SELECT run_id, layer_index, position, epoch, train_fraction, {", ".join(CURVE_METRICS)}
        FROM analysis_topology_snapshots WHERE sweep IN (SELECT sweep FROM sweeps)
        ORDER BY run_id, layer_index, epoch""").pl()
    if frame.height == 0:
        return empty_figure(title, f"no train-fraction sweep (runs differing only in train_fraction, "
                                   f">= {MIN_SWEEP_FRACTIONS} fractions)")
    positions = [p for p in POSITIONS if p in set(frame["position"].to_list())]
    fracs = frame["train_fraction"].to_numpy()
    norm = LogNorm(vmin=float(fracs.min()), vmax=max(float(fracs.max()), float(fracs.min()) * 1.01))
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(len(CURVE_METRICS), len(positions),
                             figsize=(4.2 * len(positions), 3.4 * len(CURVE_METRICS)), squeeze=False)
    for j, position in enumerate(positions):
        sub = frame.filter(pl.col("position") == position)
        for i, metric in enumerate(CURVE_METRICS):
            ax = axes[i, j]
            for (_, _), g in sub.group_by(["run_id", "layer_index"], maintain_order=True):
                ax.plot(g["epoch"].to_numpy(), g[metric].cast(pl.Float64).to_numpy(), lw=1, alpha=0.75,
                        color=cmap(norm(g["train_fraction"][0])))
            ax.set_title(f"{position} layer" if i == 0 else "", fontsize=10)
            if metric in LOG_METRICS:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel(_AXIS_LABEL[metric])
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.suptitle(title)
    fig.tight_layout()
    fig.colorbar(sm, ax=axes.ravel().tolist(), label="train fraction (log scale)", shrink=0.85)
    return fig


def train_fraction_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Final metric and test metric vs train fraction per layer position, one line per (data set, size)."""
    title = "Topology of the weights at the end of training vs training-set fraction"
    frame = con.sql("SELECT * FROM analysis_topology_train_fraction").pl()
    if frame.height == 0:
        return empty_figure(title, "no train-fraction sweep in this corpus")
    positions = [p for p in POSITIONS if p in set(frame["position"].to_list())]
    rows = [*CURVE_METRICS, "test_metric"]
    # one colour per data set, one line style per model size: distinguishable at any count
    colour = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(sorted(set(frame["dataset"].to_list())))}
    fig, axes = plt.subplots(len(rows), len(positions), figsize=(4.2 * len(positions), 3.2 * len(rows)),
                             squeeze=False)
    for j, position in enumerate(positions):
        for i, what in enumerate(rows):
            ax = axes[i, j]
            metric = CURVE_METRICS[0] if what == "test_metric" else what
            sub = frame.filter((pl.col("position") == position) & (pl.col("metric") == metric))
            for (dataset, size), g in sub.group_by(["dataset", "size"], maintain_order=True):
                g = g.sort("train_fraction")
                y = g["test_metric_mean" if what == "test_metric" else "final_mean"].cast(pl.Float64).to_numpy()
                ax.plot(g["train_fraction"].to_numpy(), y, marker="o" if size == "small" else "s", ms=3, lw=1.2,
                        ls="-" if size == "small" else "--", color=colour[dataset], label=f"{dataset} ({size})")
            ax.set_xscale("log")
            if what in LOG_METRICS:
                ax.set_yscale("log")
            ax.set_xlabel("train fraction")
            ax.set_ylabel("test metric (accuracy or R2)" if what == "test_metric" else _AXIS_LABEL[metric])
            if i == 0:
                ax.set_title(f"{position} layer", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(0.85, 0.5), title="data set (size)")
    return fig


def correlations_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Forest plot: r with accuracy, partial r beyond variance and norm, and r with ln variance, with
    95% intervals, per metric and layer position."""
    title = "Does topology track test accuracy beyond weight variance? (across runs, within data set and architecture)"
    frame = con.sql("""
        SELECT * FROM analysis_topology_correlations
        WHERE metric IN ('normalized_entropy', 'mean_lifetime', 'mean_lifetime_scaled')
          AND ((analysis = 'accuracy_across_runs' AND method = 'pearson')
               OR analysis IN ('accuracy_beyond_variance', 'metric_vs_ln_variance'))
          AND estimate IS NOT NULL""").pl()
    if frame.height == 0:
        return empty_figure(title, "too few classification runs for a correlation across runs")
    keys = [(m, p) for m in METRICS for p in POSITIONS
            if frame.filter((pl.col("metric") == m) & (pl.col("position") == p)).height]
    kinds = [("accuracy_across_runs", "r with accuracy", "C0"),
             ("accuracy_beyond_variance", "partial r with accuracy | ln var, ln norm", "C3"),
             ("metric_vs_ln_variance", "r with ln weight variance", "C7")]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(keys) + 1.6))
    labelled: set[str] = set()
    for k, (analysis, label, color) in enumerate(kinds):
        for y, (metric, position) in enumerate(keys):
            hit = frame.filter((pl.col("metric") == metric) & (pl.col("position") == position)
                               & (pl.col("analysis") == analysis))
            if not hit.height:
                continue
            r = hit.row(0, named=True)
            yy = y + (k - 1) * 0.22
            lo = r["ci_low"] if r["ci_low"] is not None else r["estimate"]
            hi = r["ci_high"] if r["ci_high"] is not None else r["estimate"]
            ax.errorbar(r["estimate"], yy, xerr=[[r["estimate"] - lo], [hi - r["estimate"]]], fmt="o", ms=4,
                        color=color, capsize=2, label=None if label in labelled else label)
            labelled.add(label)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(keys)), [f"{m} ({p})" for m, p in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("correlation (95% bootstrap interval over runs)")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=3)
    return fig


FIGURES = {"topology_trajectories": trajectories_figure, "topology_train_fraction": train_fraction_figure,
           "topology_correlations": correlations_figure}
CAPTIONS = {
    "topology_trajectories": (
        "Normalized persistent entropy of H0 (top) and mean bar lifetime (bottom, log axis) of each layer's "
        "neuron weight cloud at every stored snapshot, for the runs of the train-fraction sweeps; colour = "
        "fraction of the training split used (log scale)."),
    "topology_train_fraction": (
        "The same metrics at the last snapshot, and the test metric, against the train fraction; mean over "
        "seeds per data set (colour) and model size (solid: small, dashed: medium)."),
    "topology_correlations": (
        "Across classification runs (one value per run, z-scored within (data set, architecture) groups): "
        "Pearson r of the final "
        "metric with test accuracy (blue), the partial r after controlling for ln weight variance and ln "
        "weight norm (red: what topology adds), and the metric's r with ln weight variance (grey: how much of "
        "it is variance). Bars are 95% bootstrap intervals over runs."),
}


# --- report ---------------------------------------------------------------------------------------

def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences on the clouds, the baseline comparison, and the tables."""
    paragraphs = []
    n, runs, dead, dup, undefined = con.execute("""
        SELECT count(*), count(DISTINCT run_id), sum(n_dead), sum(n_duplicates),
               count(*) FILTER (WHERE normalized_entropy IS NULL) FROM layer_topology""").fetchall()[0]
    paragraphs.append(
        f"{n} layer snapshots of {runs} runs: the point cloud is each layer's rows of W (one point per neuron, "
        f"bias {'appended' if INCLUDE_BIAS else 'not appended'}); {dead or 0} dead (all-zero) rows were dropped "
        f"and {dup or 0} duplicate rows merged. H0 deaths by "
        + ("Prim's minimum spanning tree (the tests check it against ripser's diagram and scipy's MST)"
           if METHOD != "ripser" else "ripser")
        + f". {undefined} layer snapshots have fewer than two bars (e.g. the output layer of a binary or "
        "regression task), where the normalized entropy is undefined (NULL). Mean lifetimes and the controls "
        "enter Pearson r on a log scale.")
    rows = con.execute("""
        SELECT metric, position, max(estimate) FILTER (WHERE analysis = 'accuracy_across_runs' AND method = 'pearson'),
               max(ci_low) FILTER (WHERE analysis = 'accuracy_across_runs' AND method = 'pearson'),
               max(ci_high) FILTER (WHERE analysis = 'accuracy_across_runs' AND method = 'pearson'),
               max(estimate) FILTER (WHERE analysis = 'accuracy_beyond_variance'),
               max(ci_low) FILTER (WHERE analysis = 'accuracy_beyond_variance'),
               max(ci_high) FILTER (WHERE analysis = 'accuracy_beyond_variance'),
               max(n) FILTER (WHERE analysis = 'accuracy_beyond_variance')
        FROM analysis_topology_correlations WHERE metric IN ('normalized_entropy', 'mean_lifetime')
        GROUP BY metric, position""").fetchall()
    order = {p: i for i, p in enumerate(POSITIONS)}
    parts, adds, untested = [], [], 0
    for metric, position, r, lo, hi, pr, plo, phi, n_runs in sorted(rows, key=lambda t: (t[0], order.get(t[1], 9))):
        if pr is None or plo is None or phi is None:
            untested += 1
            continue
        parts.append(f"{_LABEL[metric]}, {position} layer: r = {_fmt_ci(r, lo, hi)}, partial r = "
                     f"{_fmt_ci(pr, plo, phi)} (n = {n_runs} runs)")
        if plo > 0 or phi < 0:
            adds.append(f"{_LABEL[metric]} ({position}, partial r {pr:+.2f})")
    if parts:
        paragraphs.append("Across classification runs, within (data set, architecture) groups: "
                          + "; ".join(parts) + ".")
        skipped = f" ({untested} metric x position pairs had too few runs for an interval)" if untested else ""
        paragraphs.append(
            ("Topology adds information about accuracy beyond the layer's weight variance and norm here for "
             + ", ".join(adds) + f": the partial correlation's interval excludes 0{skipped}. These are "
             "unadjusted intervals; analysis_topology_correlations.p_adjusted corrects for the table's many tests.")
            if adds else
            ("Topology adds no detectable information about accuracy beyond the layer's weight variance and norm "
             f"here: every partial correlation's interval covers 0{skipped}."))
    else:
        paragraphs.append("Too few classification runs for correlations across runs.")
    tables = [
        {"caption": "Correlation tests per metric and layer position (analysis_topology_correlations)",
         "sql": """SELECT metric, position, analysis, method, round(estimate, 3) AS estimate,
                          round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high, p_value, p_adjusted, n, n_unit,
                          n_groups, n_datasets
                   FROM analysis_topology_correlations
                   WHERE metric IN ('normalized_entropy', 'mean_lifetime', 'mean_lifetime_scaled',
                                    'weight_variance', 'weight_norm')
                   ORDER BY metric, position, analysis, method"""},
        {"caption": "Final metric by train fraction, mean over seeds (analysis_topology_train_fraction)",
         "sql": """SELECT position, dataset, size, train_fraction, n_runs,
                          round(max(final_mean) FILTER (WHERE metric = 'normalized_entropy'), 4) AS normalized_entropy,
                          round(max(final_mean) FILTER (WHERE metric = 'mean_lifetime'), 4) AS mean_lifetime,
                          round(max(final_mean) FILTER (WHERE metric = 'mean_lifetime_scaled'), 4)
                              AS mean_lifetime_scaled,
                          round(max(test_metric_mean), 4) AS test_metric
                   FROM analysis_topology_train_fraction GROUP BY ALL
                   ORDER BY position, dataset, size, train_fraction"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}


def _fmt_ci(r: float | None, lo: float | None, hi: float | None) -> str:
    if r is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{r:.2f} (no interval)"
    return f"{r:.2f} [{lo:.2f}, {hi:.2f}]"
