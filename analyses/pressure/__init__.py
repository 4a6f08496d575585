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

Mechanism (the confound)
------------------------
Gradient descent fixes the sign of the improvement tests by itself. Near a minimum the loss is
locally quadratic and the gradient evolves as g_{t+1} = (I - η H) g_t: its component along an
eigenvalue λ shrinks by |1 - ηλ| per step, so a layer whose gradient points along high curvature (high
pressure) loses its gradient fastest, and a layer that starts with a large gradient has the most to
lose (regression towards the common late level). Both make "high pressure, large log-decrease"
(ρ > 0, against the claim) the expected outcome with no bottleneck at all. Each improvement claim
therefore has a sharpened row (``.beyond_gradient_size``): a rank regression with run fixed effects,
the partial correlation of the layers' within-run ranks of the log-decrease and of early pressure given
the within-run rank of the initial log gradient norm (first checkpoint;
``analysis_pressure_layers.initial_log_grad``), pooled over the runs of a data set (variance by leaving
runs out) and across data sets by random effects: the claim holds only where pressure ranks the slow
layers beyond what the gradient's size already does. It is a nested estimand, not the difference of two
correlations computed apart (which a pure-noise pressure would have "passed" by minus the gradient
size's own ρ). ``pressure.least_movement`` tests an outcome whose sign gradient descent does not fix:
the relative weight movement ||W_T - W_0||/||W_0|| (a bottleneck layer learns little), predicted
negative. The saturation and coincidence verdicts have no sharpened row.

Where most runs have two usable layers, a run's ρ is ±1, a sign: the row is then the share of runs with
ρ > 0 against one half, with a Wilson interval on the effective number of runs (the data sets' design
effect), since a mean of signs that agree has no spread to make an interval from. Otherwise the row is
the mean ρ per data set, pooled across data sets by random effects.

Paper 000's Riemannian metric gets one testable statement, ``pressure.riemannian_slowest``: layers
whose gradient is long in the Fisher/GGN metric relative to its Euclidean length, the early mean of
``m_i = g_iᵀ (G_ii + λI)⁻¹ g_i / ||g_i||²`` (``early_metric_ratio``; large when the metric is flat along
the gradient), improve slowest: per-run Spearman ρ(m_i, gradient log-decrease), predicted negative.
m_i is close to the reciprocal of the pressure (Cauchy-Schwarz: the metric's inverse along g against
the curvature along g), so its sharpened row (``.beyond_pressure``) asks what it adds to pressure and
the initial gradient size in the same fixed-effects rank regression. The quadratic mechanism above
predicts the raw relation too (descent is slow along flat directions), so a supported raw row says the
metric finds the slow layers, not that they are bottlenecks in any further sense.

Paper 000 is a short abstract with no testable claim as written: every row here tests this project's
reading of it and is exploratory (outside the Holm families; :mod:`analyses.stats.verdict`).

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
"""

from analyses.kit.stage import Stage
from analyses.pressure.figures import FIGURES
from analyses.pressure.report import report
from analyses.pressure.schema import TABLES
from analyses.pressure.stage import run

STAGE = Stage(
    name="pressure", title="Gradient pressure and bottlenecks (000)", doc=__doc__,
    reads=("analysis_features_layer", "layer_stats", "runs", "weights"), tables=TABLES, run=run,
    figures=FIGURES, report=report, verdicts=True,
)
