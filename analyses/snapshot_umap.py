"""Snapshots in two dimensions (001 §5.6, Figure 2): every spectral snapshot's weights, gradients and
Hessian spectra summarized into one standardized vector and embedded with UMAP, coloured by
architecture; and numbers that say how real the clustering is, not just how it looks: silhouette by
architecture, and a k-NN classifier that predicts the architecture of a snapshot from runs it has
never seen, against labels shuffled among runs.

Snapshot vector
---------------
For each (run_id, step) spectral snapshot: every feature of :data:`SNAPSHOT_GROUPS` (weights,
gradients, local_hessian, loss_hessian, ggn; see ``analysis_features_catalog``) as its layer mean of
the transformed feature (the row of ``analysis_features``), followed by the same features of the
output layer alone (``out_<feature>``, transformed the same way, from ``analysis_features_layer``):
every network has an output layer, so this adds depth-independent, layer-resolved information.
Non-finite values count as missing. Columns missing on every snapshot are dropped; the remaining
missing entries are imputed by the column median (the share imputed is stated in the scores
table); columns that are then constant (``std <= CONSTANT_TOL``) are dropped; every column is
standardized to mean 0, standard deviation 1 over the snapshots.

Embedding
---------
umap-learn ``UMAP(n_components=2, n_neighbors=k, min_dist=MIN_DIST, random_state=SEED)``, Euclidean,
with ``k = clip(round(sqrt(n_snapshots)), N_NEIGHBORS_MIN, N_NEIGHBORS_MAX)`` capped at n - 1: about
20 on the default corpus (416 snapshots), twice the ~10 snapshots of one run, so a snapshot's
neighbour graph reaches beyond its own run's trajectory and the layout shows how runs relate rather
than only tracing each run. A fixed ``random_state`` makes umap-learn single-threaded and
deterministic. Fewer than :data:`MIN_UMAP_SNAPSHOTS` snapshots: no embedding (x, y NULL).

Scores (:func:`cluster_scores`)
-------------------------------
- silhouette by architecture (Euclidean) in the standardized feature space and in the embedding;
  beside it the silhouette with architecture labels permuted among runs (a run keeps one label): the
  value that the run structure alone gives (many unequal classes make it negative).
- k-NN accuracy (``k = KNN_K``, uniform vote, ties to the class of the nearest tied neighbour)
  predicting the architecture of every snapshot from the snapshots of *other runs only* (exactly
  leave-one-run-out cross-validation: the neighbours of a snapshot never include a checkpoint of its
  own run); the same with all runs of its data set excluded (leave-one-data-set-out, when there are
  at least :data:`MIN_DATASETS` data sets): can the pattern be recognized on unseen data?
- shuffled-label baseline: the architecture labels permuted among runs :data:`N_PERMUTATIONS` times
  (constant within a run), the same k-NN re-scored: its mean and 2.5-97.5% quantiles; permutation
  p-value ``(1 + #{shuffled >= observed}) / (1 + N_PERMUTATIONS)``.
- interval of the accuracy and of the effect (accuracy minus the baseline mean): a bootstrap over runs
  (:data:`analyses.verdicts.N_BOOTSTRAP` resamples) of the cross-validated predictions, the baseline
  recomputed on the same resampled runs (paired), so the interval reflects the number of runs, not
  of snapshots. The permutation distribution is the null's spread, not the estimate's, so it is
  reported beside the effect but not used as its interval.
- majority-class rate (always predicting the most common architecture) and balanced accuracy (mean
  per-class recall).
The same k-NN scores for the size preset and the activation alone (``target`` = size, activation)
show which part of the architecture the snapshots carry.

Tables
------
``analysis_umap``: one row per snapshot: run_id, step, snapshot_index, progress, dataset, task,
architecture, size, activation, norm, optimizer, x, y.
``analysis_umap_scores``: what, target, cv_groups, value, ci_low, ci_high, n (snapshots), n_runs, detail.
``analysis_umap_verdicts``: the claim that snapshots cluster by architecture (leave-one-run-out) and
that the pattern transfers to unseen data sets (leave-one-data-set-out).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from sklearn.metrics import silhouette_score

from analyses import features
from analyses.presentation import fmt_number as _f
from analyses.verdicts import CONFIDENCE, N_BOOTSTRAP, Verdict, write_verdicts

READS = ("analysis_features", "analysis_features_layer", "analysis_features_catalog")
WRITES = ("analysis_umap", "analysis_umap_scores", "analysis_umap_verdicts")
TITLE = "UMAP of snapshots: do snapshots cluster by architecture? (001 §5.6, Figure 2)"

#: Feature groups of the snapshot vector.
SNAPSHOT_GROUPS = ("weights", "gradients", "local_hessian", "loss_hessian", "ggn")
#: A column whose standard deviation after imputation is at most this is dropped as constant.
CONSTANT_TOL = 1e-12
#: UMAP n_neighbors = clip(round(sqrt(n)), N_NEIGHBORS_MIN, N_NEIGHBORS_MAX), at most n - 1.
N_NEIGHBORS_MIN, N_NEIGHBORS_MAX = 5, 50
#: UMAP min_dist (umap-learn's default).
MIN_DIST = 0.1
#: Seed of UMAP and of every permutation and bootstrap.
SEED = 0
#: No embedding below this many snapshots.
MIN_UMAP_SNAPSHOTS = 10
#: Neighbours of the k-NN classifier.
KNN_K = 5
#: Label permutations among runs for the shuffled baseline.
N_PERMUTATIONS = 200
#: Leave-one-data-set-out needs at least this many data sets.
MIN_DATASETS = 3
#: The targets the k-NN predicts; the first is the claim's.
TARGETS = ("architecture", "size", "activation")


# --- the snapshot vector ----------------------------------------------------------------------------

def standardize_features(raw: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], float]:
    """Impute, prune and standardize a snapshot-by-feature matrix.

    ``raw`` (n, p) with NaN (or inf) for missing. Columns with no finite value are dropped, missing
    entries set to the column median, columns with ``std <= CONSTANT_TOL`` dropped, the rest z-scored
    (population std). Returns ``(Z (n, p'), kept names, share of imputed entries among the kept)``.
    """
    x = np.array(raw, dtype=float, copy=True)
    x[~np.isfinite(x)] = np.nan
    if x.size == 0:
        return np.zeros((x.shape[0], 0)), [], 0.0
    has = ~np.all(np.isnan(x), axis=0)
    x, names = x[:, has], [n for n, h in zip(names, has, strict=True) if h]
    missing = np.isnan(x)
    if x.shape[1]:
        med = np.nanmedian(x, axis=0)
        x = np.where(missing, med[None, :], x)
    std = x.std(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    keep = std > CONSTANT_TOL
    imputed = float(missing[:, keep].mean()) if keep.any() else 0.0
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]
    return z, [n for n, k in zip(names, keep, strict=True) if k], imputed


def snapshot_matrix(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, np.ndarray, list[str]]:
    """Context frame (one row per snapshot, ordered by run_id, step) and the raw feature matrix."""
    cat = con.execute('SELECT feature, transform FROM analysis_features_catalog WHERE "group" IN '
                      f"({', '.join(repr(g) for g in SNAPSHOT_GROUPS)}) ORDER BY feature").fetchall()
    feats = [f for f, _ in cat]
    out_cols = ", ".join(
        (features.slog_sql(f"o.{f}") if t == "slog" else f"o.{f}") + f" AS out_{f}" for f, t in cat)
    mean_cols = ", ".join(f"a.{f}" for f in feats)
    sql = f"""
        SELECT a.run_id, a.step, a.snapshot_index, a.progress, a.dataset, a.task, a.architecture, a.size,
               a.activation, a.norm, a.optimizer
               {', ' + mean_cols if feats else ''} {', ' + out_cols if feats else ''}
        FROM analysis_features a
        LEFT JOIN (SELECT * FROM analysis_features_layer WHERE is_output) o USING (run_id, step)
        ORDER BY a.run_id, a.step"""
    df = con.sql(sql).pl()
    names = feats + [f"out_{f}" for f in feats]
    raw = (df.select([pl.col(c).cast(pl.Float64) for c in names]).to_numpy()
           if names and df.height else np.zeros((df.height, len(names))))
    return df.select(df.columns[:11]), raw, names


# --- scores ---------------------------------------------------------------------------------------

def _codes(values) -> tuple[np.ndarray, list]:
    uniq = sorted(set(values), key=str)
    index = {v: i for i, v in enumerate(uniq)}
    return np.array([index[v] for v in values], dtype=int), uniq


def group_neighbours(d: np.ndarray, cv_groups: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each point's k nearest points outside its own cv group, nearest first.

    ``d`` (n, n) distances. Where fewer than k points lie outside the group the row is padded with -1.
    """
    n = d.shape[0]
    masked = np.where(cv_groups[:, None] == cv_groups[None, :], np.inf, d)
    k_eff = min(k, n)
    order = np.argsort(masked, axis=1, kind="stable")[:, :k_eff]
    valid = np.isfinite(np.take_along_axis(masked, order, axis=1))
    order = np.where(valid, order, -1)
    if k_eff < k:
        order = np.hstack([order, -np.ones((n, k - k_eff), dtype=int)])
    return order


def knn_vote(neighbours: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority vote of the neighbours' labels (n,), ties to the class met first (the nearest).

    ``neighbours`` (n, k) from :func:`group_neighbours`; rows without any neighbour predict -1.
    """
    n, k = neighbours.shape
    valid = neighbours >= 0
    lab = np.where(valid, labels[np.maximum(neighbours, 0)], n_classes)  # n_classes = "none"
    counts = np.zeros((n, n_classes + 1), dtype=int)
    np.add.at(counts, (np.repeat(np.arange(n), k), lab.ravel()), 1)
    counts = counts[:, :n_classes]
    first = np.full((n, n_classes + 1), k, dtype=int)
    for j in range(k - 1, -1, -1):
        first[np.arange(n), lab[:, j]] = j
    first = first[:, :n_classes]
    best = counts.max(axis=1) if n_classes else np.zeros(n, dtype=int)
    # among the classes with the top count, the one whose first neighbour is nearest
    score = np.where(counts == best[:, None], first, k + 1)
    pred = score.argmin(axis=1) if n_classes else np.full(n, -1)
    return np.where(best > 0, pred, -1)


def _per_group(correct: np.ndarray, gidx: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(gidx, weights=correct.astype(float), minlength=n_groups)


def _silhouette(d: np.ndarray, labels: np.ndarray) -> float:
    k = len(np.unique(labels))
    if k < 2 or k > len(labels) - 1:
        return math.nan
    return float(silhouette_score(d, labels, metric="precomputed"))


def _pairwise(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def _group_labels(labels: np.ndarray, gidx: np.ndarray, n_groups: int) -> np.ndarray:
    """One label per group: the most common label of its rows (labels are meant to be constant)."""
    out = np.zeros(n_groups, dtype=int)
    for g in range(n_groups):
        out[g] = np.bincount(labels[gidx == g]).argmax()
    return out


def cluster_scores(x: np.ndarray, labels, groups, cv_groups=None, k: int = KNN_K,
                   n_perm: int = N_PERMUTATIONS, n_boot: int = N_BOOTSTRAP, seed: int = SEED,
                   silhouette: bool = True) -> dict:
    """How well points cluster by label, beyond what their grouping alone explains.

    ``x`` (n, p) points (standardized features or an embedding); ``labels`` (n,) class of each
    point, constant within a group; ``groups`` (n,) the permutation and bootstrap unit (a run);
    ``cv_groups`` (n,) the cross-validation unit (default ``groups``): a point's neighbours are
    taken only outside its cv group (exact leave-one-group-out k-NN).

    Returns a dict with: ``n``, ``n_groups``, ``n_classes``; ``silhouette`` (Euclidean, NaN when
    undefined) and ``silhouette_shuffled_mean/_lo/_hi``, ``silhouette_p`` (labels permuted among
    groups); ``knn_accuracy`` with bootstrap-over-groups ``knn_ci_low/high``, ``knn_balanced_accuracy``;
    ``shuffled_mean/_lo/_hi`` (the permutation distribution of the accuracy) and ``knn_p`` (its
    permutation p-value); ``effect`` = accuracy - shuffled mean with paired bootstrap
    ``effect_ci_low/high``; ``majority_rate``. Intervals are NaN with fewer than 3 groups.
    """
    x = np.asarray(x, dtype=float)
    y, _ = _codes(list(labels))
    gidx, gnames = _codes(list(groups))
    cv = gidx if cv_groups is None else _codes(list(cv_groups))[0]
    n, n_groups, n_classes = len(y), len(gnames), int(y.max()) + 1 if len(y) else 0
    nan = math.nan
    out = {"n": n, "n_groups": n_groups, "n_classes": n_classes, "silhouette": nan,
           "silhouette_shuffled_mean": nan, "silhouette_shuffled_lo": nan, "silhouette_shuffled_hi": nan,
           "silhouette_p": nan, "knn_accuracy": nan, "knn_ci_low": nan, "knn_ci_high": nan,
           "knn_balanced_accuracy": nan, "shuffled_mean": nan, "shuffled_lo": nan, "shuffled_hi": nan,
           "knn_p": nan, "effect": nan, "effect_ci_low": nan, "effect_ci_high": nan, "majority_rate": nan}
    if n == 0:
        return out
    out["majority_rate"] = float(np.bincount(y).max() / n)
    if n_groups < 2 or n_classes < 2:
        return out
    rng = np.random.default_rng(seed)
    glab = _group_labels(y, gidx, n_groups)
    perms = [glab[rng.permutation(n_groups)][gidx] for _ in range(n_perm)]
    d = _pairwise(x)
    a = (1 - CONFIDENCE) / 2
    if silhouette:
        s = _silhouette(d, y)
        out["silhouette"] = s
        if math.isfinite(s):
            null = np.array([_silhouette(d, p) for p in perms[:n_perm]])
            null = null[np.isfinite(null)]
            if len(null):
                out["silhouette_shuffled_mean"] = float(null.mean())
                out["silhouette_shuffled_lo"], out["silhouette_shuffled_hi"] = map(
                    float, np.quantile(null, [a, 1 - a]))
                out["silhouette_p"] = float((1 + np.sum(null >= s)) / (1 + len(null)))
    nb = group_neighbours(d, cv, k)
    pred = knn_vote(nb, y, n_classes)
    correct = pred == y
    acc = float(correct.mean())
    out["knn_accuracy"] = acc
    out["knn_balanced_accuracy"] = float(np.mean([correct[y == c].mean() for c in np.unique(y)]))
    null_correct = np.array([knn_vote(nb, p, n_classes) == p for p in perms]) if n_perm else np.zeros((0, n))
    null_acc = null_correct.mean(axis=1) if n_perm else np.zeros(0)
    if n_perm:
        out["shuffled_mean"] = float(null_acc.mean())
        out["shuffled_lo"], out["shuffled_hi"] = map(float, np.quantile(null_acc, [a, 1 - a]))
        out["knn_p"] = float((1 + np.sum(null_acc >= acc)) / (1 + n_perm))
        out["effect"] = acc - out["shuffled_mean"]
    if n_groups >= 3 and n_boot > 0:
        sizes = np.bincount(gidx, minlength=n_groups).astype(float)
        c_obs = _per_group(correct, gidx, n_groups)
        pick = rng.integers(0, n_groups, size=(n_boot, n_groups))
        tot = sizes[pick].sum(axis=1)
        boot_acc = c_obs[pick].sum(axis=1) / tot
        out["knn_ci_low"], out["knn_ci_high"] = map(float, np.quantile(boot_acc, [a, 1 - a]))
        if n_perm:
            c_null = np.array([_per_group(c, gidx, n_groups) for c in null_correct])  # (P, G)
            boot_null = np.stack([c_null[:, row].sum(axis=1) for row in pick]).mean(axis=1) / tot
            out["effect_ci_low"], out["effect_ci_high"] = map(
                float, np.quantile(boot_acc - boot_null, [a, 1 - a]))
    return out


# --- embedding ------------------------------------------------------------------------------------

def n_neighbors_for(n: int) -> int:
    """UMAP's n_neighbors for n snapshots (see the module doc)."""
    return int(min(max(n - 1, 2), np.clip(round(math.sqrt(n)), N_NEIGHBORS_MIN, N_NEIGHBORS_MAX)))


def embed(z: np.ndarray, seed: int = SEED) -> np.ndarray:
    """2-D UMAP embedding (n, 2) of the standardized snapshot vectors; NaN below MIN_UMAP_SNAPSHOTS."""
    n = z.shape[0]
    if n < MIN_UMAP_SNAPSHOTS or z.shape[1] == 0:
        return np.full((n, 2), np.nan)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / "build" / "numba-cache"))
    import warnings

    import umap  # deferred: importing umap-learn costs seconds of numba start-up

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors_for(n), min_dist=MIN_DIST,
                                random_state=seed, n_jobs=1)
            emb = reducer.fit_transform(z)
        except (ValueError, TypeError, np.linalg.LinAlgError):  # spectral init failing on a tiny graph
            reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors_for(n), min_dist=MIN_DIST,
                                random_state=seed, n_jobs=1, init="random")
            emb = reducer.fit_transform(z)
    return np.asarray(emb, dtype=float)


# --- the stage --------------------------------------------------------------------------------------

_SCORE_SCHEMA = {"what": pl.Utf8, "target": pl.Utf8, "cv_groups": pl.Utf8, "value": pl.Float64,
                 "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64, "n_runs": pl.Int64,
                 "detail": pl.Utf8}


def _score_rows(s: dict, target: str, cv: str, space: str) -> list[dict]:
    base = {"target": target, "cv_groups": cv, "n": s["n"], "n_runs": s["n_groups"]}
    rows = []
    if space:
        rows.append({**base, "what": f"silhouette_{space}", "value": s["silhouette"], "cv_groups": "-",
                     "ci_low": None, "ci_high": None,
                     "detail": "Euclidean silhouette by label; no interval (resampling duplicates points)"})
        rows.append({**base, "what": f"silhouette_{space}_shuffled", "value": s["silhouette_shuffled_mean"],
                     "cv_groups": "-", "ci_low": s["silhouette_shuffled_lo"], "ci_high": s["silhouette_shuffled_hi"],
                     "detail": f"labels permuted among runs ({N_PERMUTATIONS}x): mean and 2.5-97.5% quantiles; "
                               f"permutation p of the observed silhouette = {_f(s['silhouette_p'])}"})
    if space != "embedding":
        rows += [
            {**base, "what": "knn_accuracy", "value": s["knn_accuracy"], "ci_low": s["knn_ci_low"],
             "ci_high": s["knn_ci_high"],
             "detail": f"k-NN (k={KNN_K}) accuracy over snapshots, neighbours only from other {cv}s; "
                       "interval: bootstrap over runs"},
            {**base, "what": "knn_shuffled", "value": s["shuffled_mean"], "ci_low": s["shuffled_lo"],
             "ci_high": s["shuffled_hi"],
             "detail": f"the same with labels permuted among runs ({N_PERMUTATIONS}x): mean, 2.5-97.5% quantiles"},
            {**base, "what": "knn_minus_shuffled", "value": s["effect"], "ci_low": s["effect_ci_low"],
             "ci_high": s["effect_ci_high"], "detail": "paired bootstrap over runs"},
            {**base, "what": "knn_permutation_p", "value": s["knn_p"], "ci_low": None, "ci_high": None,
             "detail": "(1 + #{shuffled >= observed}) / (1 + permutations)"},
            {**base, "what": "knn_balanced_accuracy", "value": s["knn_balanced_accuracy"], "ci_low": None,
             "ci_high": None, "detail": "mean per-class recall"},
        ]
        if cv == "run":
            rows.append({**base, "what": "majority_rate", "value": s["majority_rate"], "ci_low": None,
                         "ci_high": None, "cv_groups": "-", "detail": "share of snapshots in the most common class"})
    return rows


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``analysis_umap``, ``analysis_umap_scores`` and ``analysis_umap_verdicts``."""
    ctx, raw, names = snapshot_matrix(con)
    z, kept, imputed = standardize_features(raw, names)
    emb = embed(z)
    frame = ctx.with_columns(pl.Series("x", emb[:, 0] if len(emb) else [], dtype=pl.Float64),
                             pl.Series("y", emb[:, 1] if len(emb) else [], dtype=pl.Float64))
    frame = frame.with_columns(pl.col("x").fill_nan(None), pl.col("y").fill_nan(None))
    con.execute("CREATE OR REPLACE TABLE analysis_umap AS SELECT run_id, step, snapshot_index, progress, dataset, "
                "task, architecture, size, activation, norm, optimizer, x, y FROM frame ORDER BY run_id, step")

    runs = ctx["run_id"].to_list()
    datasets = ctx["dataset"].to_list()
    n_datasets = len(set(datasets))
    rows: list[dict] = [{"what": "snapshot_vector", "target": "-", "cv_groups": "-", "value": float(len(kept)),
                         "ci_low": None, "ci_high": None, "n": len(runs), "n_runs": len(set(runs)),
                         "detail": f"{len(kept)} of {len(names)} feature columns kept; {100 * imputed:.1f}% of "
                                   f"their entries imputed by the median; UMAP n_neighbors = "
                                   f"{n_neighbors_for(len(runs))}" + ("" if np.isfinite(emb).all() and len(emb)
                                                                      else " (no embedding: too few snapshots)")}]
    scores: dict[tuple[str, str], dict] = {}
    for target in TARGETS:
        labels = ctx[target].to_list()
        s = cluster_scores(z, labels, runs, silhouette=target == "architecture")
        scores[(target, "run")] = s
        rows += _score_rows(s, target, "run", "features" if target == "architecture" else "")
        if n_datasets >= MIN_DATASETS:
            s = cluster_scores(z, labels, runs, cv_groups=datasets, silhouette=False)
            scores[(target, "dataset")] = s
            rows += _score_rows(s, target, "dataset", "")
    if len(emb) and np.isfinite(emb).all():
        s = cluster_scores(emb, ctx["architecture"].to_list(), runs, n_boot=0)
        rows += _score_rows(s, "architecture", "run", "embedding")[:2]
        scores[("embedding", "run")] = s
    scores_frame = pl.DataFrame(rows, schema=_SCORE_SCHEMA).with_columns(  # noqa: F841
        pl.col(c).fill_nan(None) for c in ("value", "ci_low", "ci_high"))
    con.execute("CREATE OR REPLACE TABLE analysis_umap_scores AS SELECT * FROM scores_frame")
    write_verdicts(con, "umap", _verdicts(scores, n_datasets))


def _verdicts(scores: dict, n_datasets: int) -> list[Verdict]:
    run_s = scores[("architecture", "run")]
    emb = scores.get(("embedding", "run"), {})
    ds = scores.get(("architecture", "dataset"))
    size_s, act_s = scores[("size", "run")], scores[("activation", "run")]
    ds_text = (f"leave-one-data-set-out ({n_datasets} data sets) accuracy {_f(ds['knn_accuracy'])} vs shuffled "
               f"{_f(ds['shuffled_mean'])} [{_f(ds['shuffled_lo'])}, {_f(ds['shuffled_hi'])}]" if ds else
               f"leave-one-data-set-out not run (fewer than {MIN_DATASETS} data sets)")
    detail = (
        f"leave-one-run-out k-NN (k={KNN_K}) accuracy {_f(run_s['knn_accuracy'])} "
        f"[{_f(run_s['knn_ci_low'])}, {_f(run_s['knn_ci_high'])}], balanced {_f(run_s['knn_balanced_accuracy'])}; "
        f"shuffled-among-runs baseline {_f(run_s['shuffled_mean'])} [{_f(run_s['shuffled_lo'])}, "
        f"{_f(run_s['shuffled_hi'])}]; majority-class rate {_f(run_s['majority_rate'])}; "
        f"silhouette by architecture {_f(run_s['silhouette'])} in feature space (shuffled "
        f"{_f(run_s['silhouette_shuffled_mean'])}), {_f(emb.get('silhouette', math.nan))} in the UMAP plane "
        f"(shuffled {_f(emb.get('silhouette_shuffled_mean', math.nan))}); size alone "
        f"{_f(size_s['knn_accuracy'])} vs {_f(size_s['shuffled_mean'])}, activation alone "
        f"{_f(act_s['knn_accuracy'])} vs {_f(act_s['shuffled_mean'])}; {ds_text}. The paper (001 §5.6) saw "
        "clusters in UMAP but reports that classifiers trained on these patterns 'did not show good results': "
        "compare the accuracy with the baseline and the majority rate, and the data-set-grouped accuracy.")
    out = [Verdict(
        claim_id="umap.architecture_clusters", source="001 §5.6 / Figure 2",
        claim="Snapshots of weights, gradients and Hessians cluster by architecture",
        test=(f"k-NN (k={KNN_K}) predicting the architecture of each snapshot from other runs' snapshots "
              f"(leave-one-run-out), against labels permuted among runs ({N_PERMUTATIONS}x); paired bootstrap "
              "over runs"),
        effect_name="k-NN accuracy minus shuffled-label accuracy", predicted="positive",
        effect=run_s["effect"], ci_low=run_s["effect_ci_low"], ci_high=run_s["effect_ci_high"],
        n=run_s["n_groups"], n_unit="runs", p_value=run_s["knn_p"], detail=detail)]
    out.append(Verdict(
        claim_id="umap.architecture_transfer", source="001 §5.6",
        claim="The architecture patterns of snapshots carry over to unseen data sets",
        test=(f"k-NN (k={KNN_K}) predicting architecture with every run of the snapshot's data set held out "
              f"(leave-one-data-set-out), against labels permuted among runs ({N_PERMUTATIONS}x); paired "
              "bootstrap over runs"),
        effect_name="k-NN accuracy minus shuffled-label accuracy", predicted="positive",
        effect=ds["effect"] if ds else None, ci_low=ds["effect_ci_low"] if ds else None,
        ci_high=ds["effect_ci_high"] if ds else None, n=ds["n_groups"] if ds else n_datasets,
        n_unit="runs" if ds else "data sets", p_value=ds["knn_p"] if ds else None,
        detail=(f"{ds_text}; majority-class rate {_f(ds['majority_rate'])}" if ds else ds_text)))
    return out


# --- report and figure ------------------------------------------------------------------------------

def _score(con, what: str, target: str = "architecture", cv: str | None = None) -> tuple:
    q = "SELECT value, ci_low, ci_high, n, n_runs FROM analysis_umap_scores WHERE what = ? AND target = ?"
    args = [what, target]
    if cv:
        q += " AND cv_groups = ?"
        args.append(cv)
    rows = con.execute(q, args).fetchall()
    return rows[0] if rows else (None, None, None, None, None)


def snapshots_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """The paper's Figure 2: the UMAP plane coloured by architecture (marker by task), and by progress."""
    df = con.sql("SELECT * FROM analysis_umap WHERE x IS NOT NULL ORDER BY run_id, step").pl()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    ax, ax2 = axes
    n_runs = df["run_id"].n_unique() if df.height else 0
    if df.height == 0:
        for a in axes:
            a.text(0.5, 0.5, "no embedding: too few snapshots", ha="center", va="center", transform=a.transAxes)
    else:
        archs = sorted(df["architecture"].unique().to_list())
        cmap = plt.get_cmap("tab10" if len(archs) <= 10 else "tab20")
        markers = {"classification": "o", "regression": "^"}
        colour = {arch: cmap(i % cmap.N) for i, arch in enumerate(archs)}
        for (arch, task), sub in df.group_by(["architecture", "task"], maintain_order=True):
            ax.scatter(sub["x"], sub["y"], s=22, marker=markers.get(task, "s"), color=colour[arch], alpha=0.8,
                       edgecolors="none")
        handles = [plt.Line2D([], [], ls="", marker="o", color=colour[a], label=a) for a in archs]
        handles += [plt.Line2D([], [], ls="", marker=m, color="black", markerfacecolor="none", label=f"({t})")
                    for t, m in markers.items() if t in set(df["task"].to_list())]
        ax.legend(handles=handles, title="architecture (marker: task)", fontsize=8, loc="best")
        for _, run in df.group_by("run_id", maintain_order=True):
            ax2.plot(run["x"], run["y"], color="lightgray", lw=0.6, zorder=1)
        sc = ax2.scatter(df["x"], df["y"], c=df["progress"], cmap="viridis", s=18, zorder=2, vmin=0, vmax=1)
        fig.colorbar(sc, ax=ax2, label="training progress (step / total steps)")
    ax.set_title("coloured by architecture")
    ax2.set_title("coloured by training progress (lines join a run's snapshots)")
    for a in axes:
        a.set_xlabel("UMAP 1")
        a.set_ylabel("UMAP 2")
    sil_f = _score(con, "silhouette_features")[0]
    sil_e = _score(con, "silhouette_embedding")[0]
    acc = _score(con, "knn_accuracy", cv="run")
    base = _score(con, "knn_shuffled", cv="run")
    fig.suptitle(
        f"UMAP of {df.height} snapshots from {n_runs} runs (001 Figure 2)\nsilhouette by architecture "
        f"{_f(sil_f)} (features), {_f(sil_e)} (plane); leave-one-run-out k-NN accuracy {_f(acc[0])} vs "
        f"shuffled {_f(base[0])} [{_f(base[1])}, {_f(base[2])}]")
    fig.tight_layout()
    return fig


def report(con: duckdb.DuckDBPyConnection) -> dict:
    acc = _score(con, "knn_accuracy", cv="run")
    base = _score(con, "knn_shuffled", cv="run")
    p = _score(con, "knn_permutation_p", cv="run")[0]
    maj = _score(con, "majority_rate")[0]
    sil = _score(con, "silhouette_features")
    sil0 = _score(con, "silhouette_features_shuffled")
    sil_e = _score(con, "silhouette_embedding")[0]
    ds = _score(con, "knn_accuracy", cv="dataset")
    ds0 = _score(con, "knn_shuffled", cv="dataset")
    vec = con.execute("SELECT detail FROM analysis_umap_scores WHERE what = 'snapshot_vector'").fetchall()
    paragraphs = []
    if vec:
        paragraphs.append(f"Snapshot vector: {vec[0][0]}.")
    if acc[0] is not None:
        paragraphs.append(
            f"Predicting the architecture of a snapshot from the snapshots of other runs (k-NN, k = {KNN_K}) is "
            f"right for {100 * acc[0]:.1f}% of {acc[3]} snapshots from {acc[4]} runs (95% CI "
            f"{_f(acc[1])} to {_f(acc[2])}), against {100 * base[0]:.1f}% (95% of shuffles within "
            f"{_f(base[1])} to {_f(base[2])}) when the labels are shuffled among runs (permutation p = "
            f"{_f(p)}); always guessing the most common architecture scores {100 * maj:.1f}%.")
    if sil[0] is not None:
        paragraphs.append(
            f"The silhouette by architecture is {_f(sil[0])} in the standardized feature space (shuffled "
            f"labels: {_f(sil0[0])}) and {_f(sil_e)} in the UMAP plane.")
    if ds[0] is not None:
        paragraphs.append(
            f"With every run of the snapshot's data set held out, the accuracy is {100 * ds[0]:.1f}% against "
            f"{100 * ds0[0]:.1f}% for shuffled labels.")
    return {"paragraphs": paragraphs, "tables": [{
        "caption": "Clustering scores (value with its interval; n snapshots, n_runs runs)",
        "sql": "SELECT what, target, cv_groups, round(value, 3) AS value, round(ci_low, 3) AS ci_low, "
               "round(ci_high, 3) AS ci_high, n, n_runs, detail FROM analysis_umap_scores "
               "ORDER BY target = 'architecture' DESC, target, cv_groups, what"}]}


FIGURES = {"umap_snapshots": snapshots_figure}
CAPTIONS = {"umap_snapshots": (
    "The paper's Figure 2: each point is one spectral snapshot, its weight, gradient and Hessian-spectrum "
    "features (layer means and the output layer, median-imputed, standardized) embedded by UMAP. Left: colour = "
    "architecture (size, activation, normalization), marker = task. Right: colour = training progress, grey "
    "lines join the snapshots of one run. The title gives the silhouette by architecture and the "
    "leave-one-run-out k-NN accuracy against labels shuffled among runs.")}
