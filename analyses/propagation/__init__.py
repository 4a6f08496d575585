"""Curvature propagation (paper 002): coupling maps, geometric shadows, and the four-arm evaluation
of skip-connection synthesis.

The coupling map
----------------
Definition 9, computed in the extraction worker at every spectral snapshot of a run with
``coupling_probes`` = m > 0: kappa_ij = ||H_ij||_F / sqrt(||H_ii||_F ||H_jj||_F) over the coupling
blocks of the loss Hessian H (mean training loss on the probe batch, eval mode, float64). For each
block j, m Rademacher probes supported on block j each give, in one product, H v = H_{:,j} v_j, whose
block i is H_ij v_j for every i at once; E ||H_ij v_j||^2 = ||H_ij||_F^2, and the two directions of a
pair are averaged (||H_ij|| = ||H_ji||). So a whole map costs B x m products, exactly what the
Hutchinson traces of the B diagonal blocks cost at the same m, and those traces come out of the same
products (stored on the diagonal rows of ``curvature_coupling``). Standard errors are jackknife over
probes, leaving out the k-th probe of every block at once and recomputing the whole ratio. kappa is
not bounded by 1: the loss Hessian is indefinite. Blocks are parameter groups named by the model (an
MLP's ``blocks.i``; a CNN's convolutions and head; a Transformer's token embedding, each attention and
feed-forward sublayer, and head), and which block feeds which is read off the model's ``torch.fx``
graph, so ``path_length`` is the fewest block hops between two blocks in the model at that step. The
*global coherence* C of a map is the mean kappa over the pairs joined by a computational path.

Shadows
-------
Coupling decays with distance along any chain, so a pair is judged against its peers: its relative
coupling r_ij is kappa_ij over the median kappa of the pairs at the same path length in the same map,
and a shadow is a pair with a path whose relative coupling stays below SHADOW_RATIO (0.5) in each of
SHADOW_WINDOW (3) consecutive maps, each map judged in its own graph. A block whose every length-1 pair
is a shadow is *collapsed*.

Synthesis
---------
``augment = "synthesized"``, at the first metric checkpoint after ``augment_at`` (25 %) of training,
from the maps of the 3 metric checkpoints ending there: candidates are skip edges from the output of
block i into the input of block j for shadow pairs with j >= i + 2, and an adapter (a gated bottleneck
branch parallel to the block, rank max(4, width/4)) for a collapsed block; weakest first, at most 6.
Every edge enters as z_j <- z_j + g P(h_i) with the gate g = 0 (P the identity, or a Linear where
widths differ), so at insertion the function, the loss and the Hessian of the original blocks are
unchanged. A gentle trial copies the model and its optimizer, adds the candidate on top of the edges
already chosen, trains ``trial_steps`` (10) steps on a fixed list of batches and measures C with fixed
probes; the control is the same without the candidate. Greedy selection keeps the largest gain
C(candidate) - C(control) per round while it is positive, up to ``edge_budget`` (2) edges; the chosen
edges then enter the real run (gates at 0, the projections the trials used), which goes on as if the
trials never happened. Every trial is a row of ``augmentation_trials``, every kept edge of
``augmentations`` (with its final gate), and ``Corpus.model()`` rebuilds the augmented network.
``augment = "random"`` runs the same trials to learn what synthesis would add, then places as many
edges of the same kinds uniformly at random.

Arms and cells
--------------
Arms (MLP runs with a coupling map, ``coupling_probes > 0``): ``plain`` (no edges), ``template`` (a
residual edge at every hidden-to-hidden block), ``synthesized`` (gated edges chosen from the map, as
above) and ``random`` (as many gated edges placed at random). A *cell* is one configuration but for
the arm fields (``residual``, ``augment`` and the synthesis settings; in the study: data set,
architecture, seed, learning rate): the arms of a cell start from the same initialization and see the
same batches until synthesis. Two runs of one arm in a cell (a sweep of the synthesis settings) are
averaged.

Tables
------
``shadows``
    per run and window of SHADOW_WINDOW consecutive coupling maps, every pair whose coupling stays
    below SHADOW_RATIO of the median at its path length in each map; ``step_first``/``step_last``
    bound the window, ``max_relative``/``mean_relative`` summarize r_ij over it.
``analysis_propagation_runs``
    per MLP run with a coupling map (the arms are MLP options): arm, cell, final test metric
    (accuracy; R2 for regression), final train loss, steps to the data set's target loss (the median
    final train loss of its runs; NULL when never reached), edges added, global coherence of its
    first and last map (both over the pairs of the model as built), and the shadows over its last
    three spectral maps (the same checkpoints in every arm).
``analysis_propagation``
    per (data set, arm) and over all data sets (``dataset = 'all'``): means of the above; the fraction
    of runs reaching the target and the median steps to it (a run that never reaches it counts as its
    total steps); the loss variance across seeds (variance of the final train loss over seeds,
    averaged over learning rates); the learning-rate sensitivity (range over learning rates of the
    seed-averaged final test metric).
``analysis_propagation_verdicts``
    the paper's claims, tested on paired differences within cells (the twins share initialization
    and batches until synthesis, so the design holds the rest fixed): their mean per data set, pooled
    across data sets by random effects, beside the stage's t interval over units: synthesized vs plain
    and vs random (final test metric; units: (data set, lr), seeds averaged; negligible below 0.005),
    lower learning-rate sensitivity (units: (data set, seed); negligible below 0.005), restored
    coherence (final coherence, synthesized - plain; negligible below 0.01). The verdicts' numbers on
    each built corpus are in ``docs/verdicts/``.
"""

from analyses.kit.stage import Stage
from analyses.propagation.figures import FIGURES
from analyses.propagation.report import report
from analyses.propagation.schema import TABLES
from analyses.propagation.stage import run

STAGE = Stage(
    name="propagation", title="Curvature propagation and skip-connection synthesis", doc=__doc__,
    reads=("runs", "checkpoints", "curvature_coupling", "blocks", "augmentations", "augmentation_trials"),
    tables=TABLES, run=run, figures=FIGURES, report=report, verdicts=True,
)
