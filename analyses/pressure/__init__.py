"""Gradient pressure (000): where along the network the curvature in the gradient's direction
concentrates over training, and a test of the paper's idea that high-pressure layers are
"bottlenecks": do the layers under the highest pressure early in training improve slowest, or
saturate later?

Definitions
-----------
Gradient pressure of layer i at a spectral snapshot: ``p_i = g_iᵀ H_ii g_i / ||g_i||²`` (the
loss-Hessian block's curvature along the layer's gradient, ``layer_stats.gradient_pressure``).
"High pressure" means a large signed value (negative values, rare, rank lowest).

- ``pressure_rank_in_snapshot``: rank of p_i among the snapshot's layers, 1 = highest.
- ``pressure_share``: ``p_i / Σ_j |p_j|`` over the snapshot's layers.
- early / late: checkpoints with ``progress = step / total_steps <= 0.5`` / above it.
- early pressure of a layer: the mean of p_i over its early spectral snapshots; its rank within the
  run (1 = highest) is the layer's *early pressure rank*, and the rank-1 layer is the run's
  *top-pressure layer*.
- improvement (a): ``grad_log_decrease = mean_early ln ||G_i|| - mean_late ln ||G_i||`` over every
  metric checkpoint (``layer_stats.grad_norm``, stored at all checkpoints; norms floored at 1e-30):
  the log-ratio of the geometric-mean gradient norms, scale-free so layers of different size compare.
  The *slowest-improving* layer has the smallest value (its gradient fell least).
- weight movement (descriptive): ``||W_T - W_0||_F / ||W_0||_F`` between the first and last stored
  spectral snapshot (``weights``, tensor ``linear.weight``).
- later saturation (b): ``saturation_rise = mean_late s_i - mean_early s_i`` of the saturation
  fraction over spectral snapshots, for hidden layers of saturating activations (sigmoid, tanh).
  ReLU layers are excluded from the test: their "saturation fraction" counts inactive (u <= 0)
  pairs, a sparsity that is not the flat-tail saturation the claim is about, and dead units
  (``dead_fraction``) are nearly absent; their rise is still tabulated. Output layers have no
  activation and no saturation.

Tests (per run, across its layers)
----------------------------------
Spearman's ρ between early pressure and (a) over all layers (predicted negative: high pressure,
little improvement), (a) over hidden layers only (the output layer is almost always the top-pressure
layer, so the all-layer test partly compares output against hidden), and (b) (predicted positive).
A run counts when it has at least 2 usable layers; with 2 layers ρ is ±1, the sign of the one pair's
concordance. The runs' ρ are pooled by their unweighted mean, not by Fisher z: with 2-4 layers per
run ρ takes a few discrete values including ±1 (z infinite) and the usual weights n - 3 are <= 1.
Interval: percentile bootstrap over runs (:data:`analyses.stats.N_BOOTSTRAP` resamples); p-value:
two-sided, from 2000 permutations of the outcome among each run's layers (seed 0). The mean ρ over
runs with >= 3 usable layers is given in the detail. Coincidence: the share of runs whose
top-pressure layer is also the slowest-improving one, minus the chance rate 1/(usable layers)
averaged over runs; interval by bootstrap over runs of the per-run difference.

Caveat: the verdicts mostly contrast the output layer (the top-pressure layer in most runs; the
count is in the verdicts' detail) with hidden layers, and within hidden layers rest on pairs of
layers (ρ = ±1 per run).

Tables
------
- ``analysis_pressure``: one row per (run_id, step, layer_index) spectral snapshot layer: its context,
  gradient pressure, rank and share within the snapshot, saturation and dead fractions, gradient and
  weight norms.
- ``analysis_pressure_layers``: one row per (run_id, layer_index): early/late pressure, early pressure
  rank and share, grad_log_decrease, weight_movement, saturation early/late/rise, dead_rise, and the
  numbers of early, late and gradient checkpoints they average.
- ``analysis_pressure_bottlenecks``: one row per run: the top-pressure layer with its share,
  improvement and saturation rise, the slowest-improving layer, whether they coincide, the chance rate
  and the run's ρ of each test.
- ``analysis_pressure_verdicts``: the bottleneck claims.

Results
-------
On the default corpus (``make report``, 2026-11-24), every claim not supported:
``pressure.slowest_improving`` mean ρ 0.458 [0.351, 0.553] (172 runs);
``pressure.slowest_improving_hidden`` 0.767 [0.682, 0.847] (118 runs); ``pressure.later_saturation``
-0.292 [-0.494, -0.0823] (47 runs; inconclusive before the propagation study's 32 deep sigmoid
networks joined the corpus); ``pressure.top_is_slowest`` coincidence rate minus chance -0.169
[-0.222, -0.111] (172 runs).
"""

from analyses.pressure.figures import FIGURES
from analyses.pressure.report import report
from analyses.pressure.schema import TABLES
from analyses.pressure.stage import run
from analyses.stage import Stage

STAGE = Stage(
    name="pressure", title="Gradient pressure and bottlenecks (000)", doc=__doc__,
    reads=("analysis_features_layer", "layer_stats", "runs", "weights"), tables=TABLES, run=run,
    figures=FIGURES, report=report, verdicts=True,
)
