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
    position every network has (first hidden, output), each the paper's test and, where a confound could
    produce it, a sharpened test (``role``, ``pair``; :mod:`analyses.stats.verdict`):

    - ``tracks_accuracy``: r of the final metric with final test accuracy across runs, within (data
      set, architecture) groups, per data set pooled by random effects; sharpened ``beyond_variance``:
      the partial r given ln weight variance and ln weight norm (the Girrbach et al. baseline: the
      weights' scale alone relates to accuracy), its own r with accuracy shown beside it;
    - ``over_training``: the mean within-run Spearman r of the metric and accuracy over training;
      sharpened ``over_training.beyond_time`` (the partial Spearman given the step: both move with
      training time) and ``over_training_beyond_variance`` (given the ranks of ln weight variance and
      norm);
    - ``train_fraction``: the mean within-sweep Spearman r between train fraction and the final metric
      over every sweep (runs identical but for the fraction); sharpened ``train_fraction.fixed_steps``:
      the same over the sweeps trained at fixed optimizer steps (run field ``fixed_steps``: a subsample
      trains for the steps of the whole split), on the scale-free metric (the mean lifetime over the
      mean neuron norm; the normalized entropy is scale-free already). At fixed epochs a smaller
      training set takes fewer steps and ends with smaller weights, and the raw lifetime follows the
      weights' scale: the paper's row cannot tell the data from the amount of training;
    - ``uneven_across_layers`` (per metric): the first hidden layer's change over training minus the
      output layer's, mean per data set pooled by random effects.

    Correlations within +-0.1 of 0 count as no relation; the uneven-change bands are 0.01 of normalized
    entropy and ln(1.05) of the mean lifetime's ln ratio. The verdicts read only layers whose cloud has
    at least ``MIN_CLOUD_POINTS`` = 8 distinct points at the run's last snapshot
    (:mod:`analyses.topology.claims`): H0 persistence of n points has n - 1 finite bars, and a
    classification output layer of 2 or 3 classes has an "entropy" that is a function of one distance
    ratio. Their correlation rows are recomputed on those layers (``analysis_topology_correlations``
    stays over every cloud) and are the stage's own estimate beside each row; each row's detail gives the
    estimate at the alternative minimum of 5 points.

Over training, the within-run Spearman r is dominated by time (both the weights' scale and accuracy
grow), hence its partial versions. The verdicts' numbers on each built corpus are in
``docs/verdicts/``.
"""

from analyses.kit.stage import Stage
from analyses.topology.figures import FIGURES
from analyses.topology.report import report
from analyses.topology.schema import TABLES
from analyses.topology.stage import run

STAGE = Stage(
    name="topology", title="Topology of the weights per layer (persistent homology)", doc=__doc__,
    reads=("runs", "weights", "analysis_features_layer"), tables=TABLES, run=run, figures=FIGURES,
    report=report, verdicts=True,
)
