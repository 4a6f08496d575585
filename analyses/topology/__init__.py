"""Topology of the weights per layer (paper 003): the H0 persistence of each layer's neuron weight point
cloud at every stored snapshot, its persistent entropy and mean bar lifetime, how they evolve over
training and over training-set size, whether they track test accuracy, and whether they say more
about accuracy than the layer's weight variance and norm do (Girrbach et al., TMLR 2023, found
topological summaries close to functions of weight variance).

Point clouds and their persistence
----------------------------------
The stage reads only stored weights, of every run (diverged runs included). A Linear layer's point
cloud is the rows of its weight W (q x d), one point per neuron, the bias not appended
(``INCLUDE_BIAS`` in :mod:`analyses.topology.layers`). All-zero rows (dead neurons: a constant, no
direction) are dropped and counted (``n_dead``), exact duplicates merged (``n_duplicates``), so every
H0 bar has positive length and ``n_points`` distinct points remain.

In the Vietoris-Rips filtration every point is born at 0 and a component dies when it merges with
another, at the length of the edge that joins them: the finite H0 deaths are the n - 1 edge lengths
of the Euclidean minimum spanning tree (one component lives forever and is left out). The stage
computes them by Prim's algorithm, exact in double precision; ripser's diagram (computed in single
precision) agrees to about 5e-8 relative on the benchmark's layers and is the tests' reference. With
m finite bars of lifetimes l_k > 0 and total L = sum_k l_k:

- ``entropy`` H = -sum_k (l_k / L) ln(l_k / L), in nats;
- ``normalized_entropy`` = H / ln m, in [0, 1], scale-free (the primary metric; NULL for m <= 1: the
  output layer of a binary task has one bar);
- ``normalized_entropy_log_total`` = H / ln L, paper 003's ITMO convention: it depends on the unit of
  the weights (L < 1 gives a negative value) and is NULL at L = 1, so it is kept for comparison with
  the paper's tables only;
- ``mean_lifetime`` = L / m, and ``mean_lifetime_scaled`` = ``mean_lifetime`` / the mean norm of the
  cloud's points (scale-free).

Pearson r reads the entropies as they are and the lifetimes and controls on a log scale (ln); Spearman
r is unchanged by it.

Tables
------
``layer_topology``
    one row per (run_id, step, layer_index, tensor, part): every weight matrix of every block, its rows
    the point cloud (an MLP's ``linear.weight``; a conv kernel as out_channels x (in_channels k...); each
    attention projection, a packed Q/K/V tensor both whole, part ``all``, and as its parts ``q``, ``k``,
    ``v``; ``principal`` marks the block's largest tensor, whole, the one later tables read): the
    cloud's size (``n_neurons``, ``n_dead``, ``n_duplicates``, ``n_points``), ``n_bars`` finite H0
    bars, the metrics above, ``total_lifetime`` L, ``mean_neuron_norm``, the baseline's controls ``weight_variance`` and
    ``weight_norm`` (Frobenius) of W, ``with_bias`` and the H0 ``method``.
``layer_topology_bars``
    the diagrams: one row per finite bar (birth 0, death), queryable with plain SQL.
``analysis_topology_snapshots``
    ``layer_topology``'s principal rows joined with the run's configuration, the layer's position (``first``,
    ``middle``, ``last`` hidden, ``output``) and the test metric at that step (non-diverged runs);
    ``sweep`` names the run's train-fraction sweep by its first run id.
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
    (:func:`analyses.stats.within_group_r`: accuracy and the weights' scale both differ by data set
    and by model size, so pooling them would correlate the groups, not the runs); the partial r after
    regressing both on the layer's ln weight variance and ln weight norm (the Girrbach et al.
    baseline); the baselines' own r with accuracy and the metric's r with ln variance; the mean
    within-run Spearman over training, raw and partial; and the mean over train-fraction *sweeps*
    (runs identical but for ``train_fraction``, at least 3 fractions) of the Spearman r between train
    fraction and the final metric. Intervals: 95% percentile bootstrap over runs for correlations
    across runs, redoing the z-scoring in every resample; t intervals over runs or sweeps for means of
    per-run or per-sweep values; ``p_adjusted`` is Benjamini-Hochberg over every row of the table.
``analysis_topology_train_fraction``
    the final metric and test metric averaged over seeds per (data set, size, position, train
    fraction), for the sweeps.
``analysis_topology_verdicts``
    the paper's claims, per metric of the paper (normalized entropy, mean lifetime) and per layer
    position every network has (first hidden, output): tracks test accuracy across runs, beyond
    weight variance and norm, moves with accuracy over training (raw and partial), changes with the
    training-set size, and (per metric) changes unevenly across layers: the first hidden layer's
    change over training minus the output layer's. Correlations within +-0.1 of 0 count as no
    relation; the uneven-change bands are 0.01 of normalized entropy and ln(1.05) of the mean
    lifetime's ln ratio.

    The verdicts read only layers whose cloud has at least ``MIN_CLOUD_POINTS`` = 8 distinct points
    at the run's last snapshot (:mod:`analyses.topology.claims`): H0 persistence of n points has
    n - 1 finite bars, and on the default corpus 147 of 162 classification output layers have 2 or 3
    points, whose "entropy" is a function of one distance ratio. Their correlation rows are
    recomputed on those layers (``analysis_topology_correlations`` stays over every cloud); each
    verdict's detail gives the estimate at the alternative minimum of 5 points. Each verdict hands
    its rows (runs; sweeps for the train fraction) to the two-level assessment, with these confounds:
    tracks accuracy, against the weight scale (baseline: ln weight variance's own within-group r with
    accuracy; decisive: the partial r given ln variance and ln norm); beyond variance, the partial r
    itself; over training, against training time (decisive: the mean within-run partial Spearman
    given the step, ``spearman_beyond_time``: both the metric and accuracy move with the step);
    train fraction, a twin design (sweeps identical but for the fraction).

Over training, the within-run Spearman r is dominated by time (both the weights' scale and accuracy
grow), hence its partial version. Train fraction is confounded with the number of optimizer steps
(epochs are fixed, so a smaller training set takes fewer steps), as in the paper's design.

Measured
--------
On ``configs/topology.toml`` (180 runs, 36 sweeps, 2026-11-24), effect [95% interval] for the first
hidden / output layer:

tracks test accuracy across runs (r)
    mean lifetime 0.275 [0.139, 0.393] / 0.498 [0.372, 0.59], supported; normalized entropy
    -0.122 [-0.257, 0.038] / 0.090 [-0.089, 0.29], inconclusive.
... beyond ln weight variance and norm (partial r)
    mean lifetime 0.052 [-0.111, 0.218] / 0.142 [-0.006, 0.287], inconclusive; normalized entropy
    -0.070 [-0.21, 0.099] / 0.141 [-0.039, 0.338], inconclusive.
moves with accuracy over training (mean within-run Spearman)
    mean lifetime 0.558 [0.491, 0.625] / 0.633 [0.576, 0.69], supported; normalized entropy
    0.183 [0.075, 0.292] / 0.207 [0.083, 0.331], supported.
... beyond variance and norm (mean partial Spearman)
    mean lifetime 0.090 [0.021, 0.16] / 0.076 [0.027, 0.124], supported; normalized entropy
    0.103 [0.011, 0.196] / 0.201 [0.096, 0.307], supported.
changes with train fraction (mean within-sweep Spearman)
    mean lifetime 0.811 [0.737, 0.885] / 0.875 [0.818, 0.932], supported; normalized entropy
    0.119 [-0.1, 0.339] / 0.175 [-0.074, 0.423], inconclusive.
changes unevenly across layers (first minus output change)
    mean lifetime -0.25 [-0.274, -0.225], supported; normalized entropy -0.0017 [-0.0035, 0.0002],
    not supported (inside the +-0.01 band).

So there mean H0 lifetime tracks accuracy across runs, but once the layer's weight variance and norm
are controlled for, nothing detectable is left across runs; within a run, what is left after
controlling for them is small (partial Spearman 0.08-0.20) but consistently positive for both
metrics. Mean lifetime grows with the training-set size (or the steps that come with it); normalized
entropy barely moves (it sits at 0.985-1.0 in 80 % of layer snapshots). The default corpus's 22
verdict rows point the same way with wider intervals.
"""

from analyses.stage import Stage
from analyses.topology.figures import FIGURES
from analyses.topology.report import report
from analyses.topology.schema import TABLES
from analyses.topology.stage import run

STAGE = Stage(
    name="topology", title="Topology of the weights per layer (persistent homology)", doc=__doc__,
    reads=("runs", "weights", "analysis_features_layer"), tables=TABLES, run=run, figures=FIGURES,
    report=report, verdicts=True,
)
