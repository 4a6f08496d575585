"""The nine per-snapshot rules of the practical guide (001 §5.2, §5.5), each a pure function from the
derived layer frame (:func:`analyses.diagnostics.derived.derive_columns`) to finding rows, and their
named thresholds. The tenth rule, ``normalization_effect``, compares runs (:mod:`.normalization`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import polars as pl

from analyses.diagnostics.findings import Threshold, finding_row, findings_frame, percent, threshold_rule

# --- thresholds -----------------------------------------------------------------------------------

#: saturated_layer: §5.2 item 1 speaks of layers "with a predominance of saturated neurons", so at
#: least half of the (unit, probe point) pairs saturated; critical at 80%, when almost no gradient
#: passes the layer.
SATURATION_MIN = Threshold("saturation_fraction", 0.5, 0.8, above=True)
#: saturated_layer: "a sharp peak near zero" (§5.2 item 1): at least half of the non-structural
#: local-Hessian eigenvalues within NEAR_ZERO_RTOL of zero (a healthy layer is spread out: the
#: default corpus' median non-ReLU layer has about a quarter); critical at 80%.
SATURATED_NEAR_ZERO_MIN = Threshold("local_excess_near_zero", 0.5, 0.8, above=True)
#: saddle: W1(lambda, -lambda) / mean|lambda| is 0 for a spectrum symmetric about zero and 2 for a
#: one-signed one; below 0.25 the mirrored spectrum moves by at most a quarter of the typical
#: eigenvalue ("practically symmetric", §5.5.6); critical below 0.1.
SADDLE_SYMMETRY_MAX = Threshold("loss_symmetry", 0.25, 0.1, above=False)
#: saddle: enough negative curvature for a saddle: at least 30% of sum|lambda| on negative eigenvalues
#: (a symmetric spectrum has 50%; symmetry < 0.25 already forces more than 43.75%, so this guards
#: spectra that are almost zero); critical at 40%.
SADDLE_NEGATIVE_MASS_MIN = Threshold("loss_negative_mass", 0.3, 0.4, above=True)
#: saddle: "small gradient norms" (§5.5.6): the layer's gradient has fallen to a tenth of its size at
#: the first snapshot (an order of magnitude); critical at a hundredth.
SADDLE_RELATIVE_GRAD_MAX = Threshold("relative_grad_norm", 0.1, 0.01, above=False)
#: low_rank_weights (§5.5.1): numerical rank below half of min(d, q): most of the directions the layer
#: could use are unused; critical below a quarter.
LOW_RANK_WEIGHTS_MAX = Threshold("weight_rank_ratio", 0.5, 0.25, above=False)
#: low_rank_hessian (§5.5.1): effective rank sum|lambda| / max|lambda| of the loss-Hessian block below 2:
#: the largest eigenvalue carries more than half of the spectral mass, the curvature is essentially one
#: direction; critical below 1.25 (it carries 80%). An absolute count, not the ratio to the dimension p:
#: the corpus' effective ranks are O(1-30) whatever p is, so a ratio threshold would flag wide layers
#: rather than low-rank ones (the ratio is in the evidence).
LOW_RANK_HESSIAN_MAX = Threshold("loss_effective_rank", 2.0, 1.25, above=False)
#: small_spectral_std (§5.5.4): relative std (std of the eigenvalues over mean |lambda| = |trace| / p)
#: below 1: eigenvalues spread less than their own mean size, a nearly isotropic spectrum with no
#: dominant and weak directions told apart. Critical, as an absolute criterion.
SMALL_STD_ABSOLUTE = 1.0
#: small_spectral_std: below this percentile of the corpus' loss_relative_std for the same layer
#: position (hidden / output) is unusually small for this corpus: a warning.
SMALL_STD_PERCENTILE = 5.0
#: small_spectral_std: the percentile criterion needs this many reference rows of that position.
SMALL_STD_MIN_REFERENCE = 20
#: small_eigenvalues_last_layers (§5.5.2): the last hidden layer's local-Hessian excess near-zero
#: fraction exceeds the first layer's by 0.2 (a fifth of all its eigenvalues); critical by 0.4.
LAST_LAYER_MARGIN = Threshold("near_zero_last_minus_first", 0.2, 0.4, above=True)
#: bias_dominated (§5.5.5, the guide's "share of biases"): bias coordinates carry four times their
#: no-structure share 1/(d+1) of sum|lambda| in the local or loss Hessian; critical at eight times.
BIAS_SHARE_RATIO_MIN = Threshold("bias_share_ratio", 4.0, 8.0, above=True)
#: rigid_direction (§5.5.3): alignment 1 means the gradient lies along W's own singular directions in
#: proportion to them (G ~ W); at 0.5 half of the maximal alignment; critical at 0.75.
RIGID_ALIGNMENT_MIN = Threshold("alignment", 0.5, 0.75, above=True)
#: adjacent_dissimilarity (§5.5.7): similarity below the chance value of unrelated layers
#: (``adjacent_chance``); critical below half of it.
ADJACENT_CHANCE_RATIO_MAX = Threshold("adjacent_similarity_over_chance", 1.0, 0.5, above=False)


def rule_saturated_layer(frame: pl.DataFrame) -> pl.DataFrame:
    """saturated_layer (001 §5.2, Claim 2): on a ``local_eligible`` layer (non-ReLU hidden layer with a
    local Hessian that is not identically zero), fires when local_excess_near_zero >=
    SATURATED_NEAR_ZERO_MIN and saturation_fraction >= SATURATION_MIN. A ReLU or output layer's local
    Hessian is exactly zero by construction, so it never fires there."""
    return threshold_rule(
        frame, "saturated_layer", [SATURATED_NEAR_ZERO_MIN, SATURATION_MIN], pl.col("local_eligible"),
        lambda r: (f"layer {r['layer_index']} ({r['activation']}): {percent(r['saturation_fraction'])} of (unit, probe "
                   f"point) pairs saturated and {percent(r['local_excess_near_zero'])} of its non-structural "
                   "local-Hessian eigenvalues near zero"),
        ("local_near_zero_fraction", "local_structural_zero_fraction"))


def rule_saddle(frame: pl.DataFrame) -> pl.DataFrame:
    """saddle (001 §5.5.6): fires when the loss-Hessian block is nearly symmetric about zero
    (loss_symmetry < SADDLE_SYMMETRY_MAX), has negative mass >= SADDLE_NEGATIVE_MASS_MIN, and the layer's
    gradient has fallen below SADDLE_RELATIVE_GRAD_MAX of its first-snapshot norm (relative_grad_norm).
    The first snapshot never fires (its relative gradient is 1 by definition)."""
    return threshold_rule(
        frame, "saddle", [SADDLE_SYMMETRY_MAX, SADDLE_NEGATIVE_MASS_MIN, SADDLE_RELATIVE_GRAD_MAX], None,
        lambda r: (f"layer {r['layer_index']}: loss-Hessian spectrum nearly symmetric (symmetry "
                   f"{r['loss_symmetry']:.3g}, negative mass {percent(r['loss_negative_mass'])}) with the gradient at "
                   f"{r['relative_grad_norm']:.2g} of its initial norm: a likely saddle"),
        ("grad_norm",))


def rule_low_rank_weights(frame: pl.DataFrame) -> pl.DataFrame:
    """low_rank_weights (001 §5.5.1): fires when weight_rank_ratio (numerical rank of W over
    min(d, q)) < LOW_RANK_WEIGHTS_MAX."""
    return threshold_rule(
        frame, "low_rank_weights", [LOW_RANK_WEIGHTS_MAX], None,
        lambda r: (f"layer {r['layer_index']}: weight matrix of numerical rank {percent(r['weight_rank_ratio'])} "
                   "of min(d, q)"),
        ("weight_stable_rank",))


def rule_low_rank_hessian(frame: pl.DataFrame) -> pl.DataFrame:
    """low_rank_hessian (001 §5.5.1): fires when loss_effective_rank (effective rank
    sum|lambda| / max|lambda| of the loss-Hessian block, = loss_effective_rank_ratio x q (d + 1))
    < LOW_RANK_HESSIAN_MAX."""
    return threshold_rule(
        frame, "low_rank_hessian", [LOW_RANK_HESSIAN_MAX], None,
        lambda r: (f"layer {r['layer_index']}: loss-Hessian effective rank {r['loss_effective_rank']:.3g}: one "
                   "direction carries most of its curvature"),
        ("loss_effective_rank_ratio",))


def rule_small_spectral_std(frame: pl.DataFrame) -> pl.DataFrame:
    """small_spectral_std (001 §5.5.4): fires when loss_relative_std is below the SMALL_STD_PERCENTILE-th
    percentile of this frame's loss_relative_std at the same ``position`` (hidden / output; only when
    that position has >= SMALL_STD_MIN_REFERENCE finite rows): ``warning``; or below SMALL_STD_ABSOLUTE:
    ``critical``."""
    ok = frame.filter(pl.col("loss_relative_std").is_finite())
    ref = ok.group_by("position").agg(
        reference=pl.col("loss_relative_std").quantile(SMALL_STD_PERCENTILE / 100, interpolation="linear"),
        n_reference=pl.len())
    rows = []
    for r in ok.join(ref, on="position", how="left").iter_rows(named=True):
        value = r["loss_relative_std"]
        pct = r["reference"] if (r["n_reference"] or 0) >= SMALL_STD_MIN_REFERENCE else None
        if value < SMALL_STD_ABSOLUTE:
            level = 2
        elif pct is not None and value < pct:
            level = 1
        else:
            continue
        rows.append(finding_row(
            r, "small_spectral_std", level,
            f"layer {r['layer_index']}: loss-Hessian relative std {value:.3g} "
            + (f"below the corpus' {SMALL_STD_PERCENTILE:g}th percentile {pct:.3g} for {r['position']} layers"
               if pct is not None and value < pct else f"below {SMALL_STD_ABSOLUTE:g}"),
            {"loss_relative_std": value, "loss_relative_std_threshold": pct,
             "loss_relative_std_critical_threshold": SMALL_STD_ABSOLUTE, "n_reference": r["n_reference"]}))
    return findings_frame(rows)


def last_minus_first_near_zero(frame: pl.DataFrame) -> pl.DataFrame:
    """Per snapshot of a network with >= 2 hidden layers, both ``local_eligible``: (run_id, step,
    first_layer = 0, last_layer = n_layers - 2 (the last hidden layer), first_near_zero, last_near_zero
    (local_excess_near_zero of each), difference = last - first)."""
    ok = frame.filter(pl.col("local_eligible").fill_null(False) & pl.col("local_excess_near_zero").is_finite()
                      & (pl.col("n_layers") >= 3))
    first = ok.filter(pl.col("layer_index") == 0).select(
        "run_id", "step", first_layer="layer_index", first_near_zero="local_excess_near_zero")
    last = ok.filter(pl.col("layer_index") == pl.col("n_layers") - 2).select(
        "run_id", "step", last_layer="layer_index", last_near_zero="local_excess_near_zero")
    out = first.join(last, on=["run_id", "step"], how="inner")
    return out.with_columns(difference=pl.col("last_near_zero") - pl.col("first_near_zero")).sort("run_id", "step")


def rule_small_eigenvalues_last_layers(frame: pl.DataFrame) -> pl.DataFrame:
    """small_eigenvalues_last_layers (001 §5.5.2): per snapshot (see :func:`last_minus_first_near_zero`),
    fires when the last hidden layer's local-Hessian excess near-zero fraction exceeds the first
    layer's by LAST_LAYER_MARGIN; the finding carries the last hidden layer's index. Output layers are
    not compared (their local Hessian is identically zero), nor ReLU networks."""
    pairs = last_minus_first_near_zero(frame).rename({"last_layer": "layer_index"})
    pairs = pairs.with_columns(near_zero_last_minus_first=pl.col("difference"))
    return threshold_rule(
        pairs, "small_eigenvalues_last_layers", [LAST_LAYER_MARGIN], None,
        lambda r: (f"{percent(r['last_near_zero'])} of layer {r['layer_index']}'s local-Hessian eigenvalues near zero "
                   f"against {percent(r['first_near_zero'])} in layer {r['first_layer']}"),
        ("first_near_zero", "last_near_zero", "first_layer"))


def rule_bias_dominated(frame: pl.DataFrame) -> pl.DataFrame:
    """bias_dominated (001 §5.5.5): fires when the bias share over its baseline 1/(d+1)
    (local_bias_share_ratio on ``local_eligible`` layers, loss_bias_share_ratio on every layer) reaches
    BIAS_SHARE_RATIO_MIN in either Hessian; severity from the larger of the two."""
    rows = []
    t = BIAS_SHARE_RATIO_MIN
    for r in frame.iter_rows(named=True):
        local = r.get("local_bias_share_ratio") if r.get("local_eligible") else None
        loss = r.get("loss_bias_share_ratio")
        levels = {"local": t.level(local), "loss": t.level(loss)}
        level = max(levels.values())
        if level == 0:
            continue
        kinds = " and ".join(k for k, v in levels.items() if v > 0)
        value = max(v for v in (local, loss) if v is not None and math.isfinite(v))
        d1 = (r.get("in_features") or 0) + 1
        rows.append(finding_row(
            r, "bias_dominated", level,
            f"layer {r['layer_index']}: biases carry {value:.3g}x their no-structure share 1/{d1} of the {kinds} "
            "Hessian spectrum",
            {"local_bias_share_ratio": local, "loss_bias_share_ratio": loss, "baseline": 1 / d1, **t.evidence()}))
    return findings_frame(rows)


def rule_rigid_direction(frame: pl.DataFrame) -> pl.DataFrame:
    """rigid_direction (001 §5.5.3): fires when the weight-gradient alignment
    sum_k sigma_k(W) |u_k^T G v_k| / (||W||_F ||G||_F) >= RIGID_ALIGNMENT_MIN."""
    return threshold_rule(
        frame, "rigid_direction", [RIGID_ALIGNMENT_MIN], None,
        lambda r: (f"layer {r['layer_index']}: gradient aligned with the weights' singular directions "
                   f"(alignment {r['alignment']:.2f}): a rigid direction"),
        ("grad_norm",))


def rule_adjacent_dissimilarity(frame: pl.DataFrame) -> pl.DataFrame:
    """adjacent_dissimilarity (001 §5.5.7): fires when adjacent_similarity (layer l with l + 1) over
    ``adjacent_chance`` < ADJACENT_CHANCE_RATIO_MAX: the two layers' singular subspaces agree less than
    two random directions would."""
    return threshold_rule(
        frame, "adjacent_dissimilarity", [ADJACENT_CHANCE_RATIO_MAX], None,
        lambda r: (f"layers {r['layer_index']} and {r['layer_index'] + 1}: singular-subspace similarity "
                   f"{r['adjacent_similarity']:.3f}, below the {r['adjacent_chance']:.3f} of unrelated layers"),
        ("adjacent_similarity", "adjacent_chance"))


#: Every per-snapshot rule: name -> (function, threshold text for the summary).
RULES: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame], str]] = {
    "saturated_layer": (rule_saturated_layer, f"{SATURATED_NEAR_ZERO_MIN.text()} and {SATURATION_MIN.text()}; "
                                              "non-ReLU hidden layers"),
    "saddle": (rule_saddle, f"{SADDLE_SYMMETRY_MAX.text()}, {SADDLE_NEGATIVE_MASS_MIN.text()} and "
                            f"{SADDLE_RELATIVE_GRAD_MAX.text()}"),
    "low_rank_weights": (rule_low_rank_weights, LOW_RANK_WEIGHTS_MAX.text()),
    "low_rank_hessian": (rule_low_rank_hessian, LOW_RANK_HESSIAN_MAX.text()),
    "small_spectral_std": (rule_small_spectral_std,
                           f"loss_relative_std < corpus P{SMALL_STD_PERCENTILE:g} of its layer position "
                           f"(critical < {SMALL_STD_ABSOLUTE:g})"),
    "small_eigenvalues_last_layers": (rule_small_eigenvalues_last_layers,
                                      f"{LAST_LAYER_MARGIN.text()} (local-Hessian excess near-zero fraction, "
                                      "last hidden layer minus layer 0)"),
    "bias_dominated": (rule_bias_dominated, f"{BIAS_SHARE_RATIO_MIN.text()} (local or loss Hessian)"),
    "rigid_direction": (rule_rigid_direction, RIGID_ALIGNMENT_MIN.text()),
    "adjacent_dissimilarity": (rule_adjacent_dissimilarity,
                               f"{ADJACENT_CHANCE_RATIO_MAX.text()} (chance = E|cos| of random directions)"),
}
