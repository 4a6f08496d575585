"""Snapshots in two dimensions (001 §5.6, Figure 2): every spectral snapshot's weights, gradients and
Hessian spectra summarized into one standardized vector and embedded with UMAP, coloured by
architecture; and numbers that say how real the clustering is, not just how it looks: silhouette by
architecture, and a k-NN classifier that predicts the architecture of a snapshot from runs it has
never seen, against labels shuffled among runs.

Snapshot vector
---------------
For each (run_id, step) spectral snapshot: every feature of the groups weights, gradients,
local_hessian, loss_hessian and ggn (see ``analysis_features_catalog``) as its layer mean of the
transformed feature (the row of ``analysis_features``), followed by the same features of the output
layer alone (``out_<feature>``, transformed the same way, from ``analysis_features_layer``): every
network has an output layer, so this adds depth-independent, layer-resolved information.
Non-finite values count as missing. Columns missing on every snapshot are dropped; the remaining
missing entries are imputed by the column median (the share imputed is stated in the scores
table); columns that are then constant (``std <= 1e-12``) are dropped; every column is standardized
to mean 0, standard deviation 1 over the snapshots.

Embedding
---------
umap-learn ``UMAP(n_components=2, n_neighbors=k, min_dist=0.1, random_state=0)``, Euclidean, with
``k = clip(round(sqrt(n_snapshots)), 5, 50)`` capped at n - 1: 34 on the default corpus (1,180
snapshots of 172 runs, 3 to 10 per run), several times the snapshots of one run, so a snapshot's
neighbour graph reaches beyond its own run's trajectory and the layout shows how runs relate rather
than only tracing each run. A fixed ``random_state`` makes umap-learn single-threaded and
deterministic. Fewer than 10 snapshots: no embedding (x, y NULL).

Scores
------
- silhouette by architecture (Euclidean) in the standardized feature space and in the embedding;
  beside it the silhouette with architecture labels permuted among runs (a run keeps one label): the
  value that the run structure alone gives (many unequal classes make it negative).
- k-NN accuracy (k = 5, uniform vote, ties to the class of the nearest tied neighbour) predicting
  the architecture of every snapshot from the snapshots of *other runs only* (exactly
  leave-one-run-out cross-validation: the neighbours of a snapshot never include a checkpoint of its
  own run); the same with all runs of its data set excluded (leave-one-data-set-out, when there are
  at least 3 data sets): can the pattern be recognized on unseen data?
- shuffled-label baseline: the architecture labels permuted among runs 200 times (constant within a
  run), the same k-NN re-scored: its mean and 2.5-97.5% quantiles; permutation p-value
  ``(1 + #{shuffled >= observed}) / (1 + 200)``.
- interval of the accuracy and of the effect (accuracy minus the baseline mean): a bootstrap over runs
  (:data:`analyses.stats.N_BOOTSTRAP` resamples) of the cross-validated predictions, the baseline
  recomputed on the same resampled runs (paired), so the interval reflects the number of runs, not
  of snapshots. The permutation distribution is the null's spread, not the estimate's, so it is
  reported beside the effect but not used as its interval. Permutations and bootstraps are seeded 0.
- majority-class rate (always predicting the most common architecture) and balanced accuracy (mean
  per-class recall).

The same k-NN scores for the size preset and the activation alone (``target`` = size, activation)
show which part of the architecture the snapshots carry.

Tables
------
- ``analysis_umap``: one row per snapshot, its run context and its place (x, y) in the UMAP plane.
- ``analysis_umap_scores``: one row per score (``what``) of one ``target`` (architecture, size,
  activation) under one cross-validation grouping ``cv_groups`` (run, dataset, or "-" where none
  applies), with its interval, n snapshots and n_runs runs; the row ``snapshot_vector`` says how many
  feature columns were kept and how much was imputed.
- ``analysis_umap_verdicts``: the claim that snapshots cluster by architecture (leave-one-run-out) and
  that the pattern transfers to unseen data sets (leave-one-data-set-out).

Results
-------
On the default corpus (``make report``, 2026-11-24; 172 runs): ``umap.architecture_clusters``
k-NN accuracy minus shuffled-label accuracy 0.625 [0.573, 0.672], supported;
``umap.architecture_transfer`` 0.51 [0.451, 0.565], supported.
"""

from analyses.stage import Stage
from analyses.umap.figures import FIGURES
from analyses.umap.report import report
from analyses.umap.schema import TABLES
from analyses.umap.stage import run

STAGE = Stage(
    name="umap", title="UMAP of snapshots: do snapshots cluster by architecture? (001 §5.6, Figure 2)", doc=__doc__,
    reads=("analysis_features", "analysis_features_layer", "analysis_features_catalog"), tables=TABLES, run=run,
    figures=FIGURES, report=report, verdicts=True,
)
