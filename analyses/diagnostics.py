"""The paper's practical guide (001 §5.2, §5.5 items 1-7 and its "generalized practical guide") as
explicit rules with named thresholds, applied to every layer snapshot of the corpus. Each rule that
fires writes a finding that names the run, step and layer, a severity, and the values the rule looked
at beside its thresholds. Normalized runs are compared with their unnormalized twins (§5.2), and six
verdicts test the claims the rules rest on.

Tables
------
``findings``
    (run_id, step, layer_index, rule, severity, message, evidence MAP(VARCHAR, DOUBLE)). ``layer_index``
    is NULL for a run-level finding (``normalization_effect``, whose ``step`` is NULL too); ``evidence``
    holds every value the rule looked at and its thresholds (``<quantity>_threshold`` for the warning
    level, ``<quantity>_critical_threshold`` for the critical one).
``analysis_diagnostics_summary``
    (rule, severity, n_findings, n_runs, n_snapshots, threshold): one row per rule and severity the
    rule can give, zero counts included, so a rule that never fired is visible.
``analysis_diagnostics_normalization``
    (dataset, norm, metric, value_with_norm, value_without, difference, run_id, twin_run_id): for each
    run with a normalization layer and its unnormalized twin (the run whose configuration is identical
    but for ``norm``, ignoring only measurement settings: :data:`TWIN_IGNORED_FIELDS`), the run-level
    value of each metric of :data:`NORMALIZATION_METRICS` (mean over hidden-layer rows of every spectral
    snapshot) with and without, and difference = with - without.
``analysis_diagnostics_verdicts``
    the verdict rows (see ``analyses.verdicts``).

Derived quantities (:func:`derive_columns`)
-------------------------------------------
- ``local_eligible``: a hidden layer whose activation has A'' != 0 (not ReLU or identity) and whose
  local Hessian is not identically zero. Elsewhere the local Hessian with phi = sum is exactly zero by
  construction (DESIGN 1): structural, not saturation, so no local-Hessian rule looks at it.
- ``local_structural_zero_fraction`` s = max(0, 1 - N / (d + 1)) (each block has rank <= min(N, d + 1),
  N probe points, d inputs) and ``local_excess_near_zero`` = (near_zero_fraction - s) / (1 - s): the
  near-zero share among eigenvalues that are not forced to zero (= the raw fraction when N > d).
- ``relative_grad_norm`` = ||grad W|| at the snapshot / ||grad W|| of the same layer at the run's first
  spectral snapshot (NULL when that is 0): how far the gradient has fallen since initialization.
- ``loss_effective_rank`` = loss_effective_rank_ratio x q (d + 1): sum|lambda| / max|lambda| itself.
- ``adjacent_chance`` = E|cos angle| between two independent uniformly random directions in R^n,
  Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)) ~ sqrt(2 / (pi n)), n = the layer's output width (the space
  the two layers share): what ``adjacent_similarity`` would be for unrelated layers with k = 1 (larger k
  give larger chance values, so the rule is conservative).

Rules
-----
One pure function per rule (frame in, finding rows out); the docstrings state each condition. A rule
with several conditions fires when every condition reaches its warning threshold.

Severity: each condition has a warning and a critical threshold (:class:`Threshold`, the critical one
further from healthy values). A finding is ``critical`` when every condition reaches its critical
threshold, ``warning`` otherwise; ``info`` marks a comparison, not a fault (``normalization_effect``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from scipy.special import gammaln

from analyses.verdicts import Verdict, cluster_bootstrap, mean_ci, pearson_ci, write_verdicts
from pipeline.curvature.activations import has_zero_second_derivative

READS = ("analysis_features_layer", "analysis_features", "runs")
WRITES = ("findings", "analysis_diagnostics_summary", "analysis_diagnostics_normalization",
          "analysis_diagnostics_verdicts")
TITLE = "Diagnostics: the practical guide as rules"

INFO, WARNING, CRITICAL = "info", "warning", "critical"
_LEVELS = {1: WARNING, 2: CRITICAL}


@dataclass(frozen=True)
class Threshold:
    """A condition on one column: it holds at ``warning`` and is critical at ``critical``.

    ``above``: holds when value >= threshold; otherwise when value < threshold. NULL/NaN never holds.
    """

    quantity: str
    warning: float
    critical: float
    above: bool

    def level(self, value: float | None) -> int:
        """0 (does not hold), 1 (warning) or 2 (critical)."""
        if value is None or not math.isfinite(value):
            return 0
        if self.above:
            return 2 if value >= self.critical else 1 if value >= self.warning else 0
        return 2 if value < self.critical else 1 if value < self.warning else 0

    def text(self) -> str:
        op = ">=" if self.above else "<"
        return f"{self.quantity} {op} {self.warning:g} (critical {op} {self.critical:g})"

    def evidence(self) -> dict[str, float]:
        return {f"{self.quantity}_threshold": self.warning, f"{self.quantity}_critical_threshold": self.critical}


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

#: Run-level metrics compared between normalized runs and their twins (mean over hidden-layer rows).
NORMALIZATION_METRICS = ("saturation_fraction", "local_near_zero_fraction", "local_effective_rank_ratio",
                         "loss_near_zero_fraction", "loss_effective_rank_ratio", "loss_negative_mass",
                         "loss_symmetry")
#: RunSpec fields that change what is measured but not the trained network: ignored when matching twins.
TWIN_IGNORED_FIELDS = ("norm", "metric_checkpoints", "spectral_snapshots", "hessian_exact_limit", "hvp_budget")

#: Verdict §5.5.5: the band around the null ratio 1 inside which a precisely measured bias share
#: counts as "no more than its baseline" (10% of the baseline).
NEGLIGIBLE_BIAS_RATIO = 0.1

FINDING_SCHEMA = {
    "run_id": pl.Utf8, "step": pl.Int32, "layer_index": pl.Int32, "rule": pl.Utf8, "severity": pl.Utf8,
    "message": pl.Utf8, "evidence": pl.List(pl.Struct({"key": pl.Utf8, "value": pl.Float64})),
}


# --- derived columns ------------------------------------------------------------------------------

def expected_abs_cosine(n: np.ndarray) -> np.ndarray:
    """E|cos| of the angle between two independent uniform directions in R^n:
    Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)); n: (m,) positive -> (m,)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(n >= 1, np.exp(gammaln(n / 2) - gammaln((n + 1) / 2)) / math.sqrt(math.pi), np.nan)


def derive_columns(layer: pl.DataFrame, runs: pl.DataFrame) -> pl.DataFrame:
    """``analysis_features_layer`` rows plus the derived columns of the module docstring.

    layer: needs run_id, step, layer_index, activation, is_output, local_exactly_zero, in_features,
    out_features, local_near_zero_fraction, grad_norm (and the columns the rules read);
    runs: run_id, n_probe.
    """
    frame = layer.join(runs.select("run_id", "n_probe"), on="run_id", how="left")
    zero_act = [a for a in frame["activation"].unique().to_list() if a is None or has_zero_second_derivative(a)]
    structural = (1 - pl.col("n_probe") / (pl.col("in_features") + 1)).clip(lower_bound=0.0)
    first_grad = pl.col("grad_norm").sort_by("step").first().over(["run_id", "layer_index"])
    frame = frame.with_columns(
        hidden=~pl.col("is_output").fill_null(False),
        local_eligible=(~pl.col("is_output").fill_null(False) & ~pl.col("activation").is_in(zero_act)
                        & ~pl.col("local_exactly_zero").fill_null(False)),
        local_structural_zero_fraction=structural.fill_null(0.0),
        relative_grad_norm=pl.when(first_grad > 0).then(pl.col("grad_norm") / first_grad),
        is_first_snapshot=pl.col("step") == pl.col("step").min().over("run_id"),
        adjacent_chance=pl.Series(expected_abs_cosine(frame["out_features"].to_numpy())),
    )
    s = pl.col("local_structural_zero_fraction")
    return frame.with_columns(
        local_excess_near_zero=pl.when(s < 1).then((pl.col("local_near_zero_fraction") - s) / (1 - s)),
        adjacent_similarity_over_chance=pl.col("adjacent_similarity") / pl.col("adjacent_chance"),
        position=pl.when(pl.col("hidden")).then(pl.lit("hidden")).otherwise(pl.lit("output")),
        loss_effective_rank=pl.col("loss_effective_rank_ratio") * pl.col("out_features") * (pl.col("in_features") + 1),
    )


# --- finding rows ---------------------------------------------------------------------------------

def _finding(r: dict, rule: str, level: int | str, message: str, evidence: dict[str, float | None],
             layer: bool = True) -> dict:
    def clean(v):
        return None if v is None or not math.isfinite(float(v)) else float(v)
    return {"run_id": r["run_id"], "step": r.get("step"), "layer_index": r.get("layer_index") if layer else None,
            "rule": rule, "severity": _LEVELS.get(level, level) if isinstance(level, int) else level,
            "message": message, "evidence": [{"key": k, "value": clean(v)} for k, v in evidence.items()]}


def findings_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=FINDING_SCHEMA)


def _threshold_rule(frame: pl.DataFrame, rule: str, conditions: list[Threshold], eligible: pl.Expr | None,
                    message: Callable[[dict], str], extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """Rows where every condition holds; severity = the weakest condition's level."""
    sub = frame if eligible is None else frame.filter(eligible.fill_null(False))
    rows = []
    for r in sub.iter_rows(named=True):
        level = min(c.level(r.get(c.quantity)) for c in conditions)
        if level == 0:
            continue
        evidence = {c.quantity: r.get(c.quantity) for c in conditions} | {k: r.get(k) for k in extra}
        for c in conditions:
            evidence |= c.evidence()
        rows.append(_finding(r, rule, level, message(r), evidence))
    return findings_frame(rows)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def rule_saturated_layer(frame: pl.DataFrame) -> pl.DataFrame:
    """saturated_layer (001 §5.2, Claim 2): on a ``local_eligible`` layer (non-ReLU hidden layer with a
    local Hessian that is not identically zero), fires when local_excess_near_zero >=
    SATURATED_NEAR_ZERO_MIN and saturation_fraction >= SATURATION_MIN. A ReLU or output layer's local
    Hessian is exactly zero by construction, so it never fires there."""
    return _threshold_rule(
        frame, "saturated_layer", [SATURATED_NEAR_ZERO_MIN, SATURATION_MIN], pl.col("local_eligible"),
        lambda r: (f"layer {r['layer_index']} ({r['activation']}): {_pct(r['saturation_fraction'])} of (unit, probe "
                   f"point) pairs saturated and {_pct(r['local_excess_near_zero'])} of its non-structural "
                   "local-Hessian eigenvalues near zero"),
        ("local_near_zero_fraction", "local_structural_zero_fraction"))


def rule_saddle(frame: pl.DataFrame) -> pl.DataFrame:
    """saddle (001 §5.5.6): fires when the loss-Hessian block is nearly symmetric about zero
    (loss_symmetry < SADDLE_SYMMETRY_MAX), has negative mass >= SADDLE_NEGATIVE_MASS_MIN, and the layer's
    gradient has fallen below SADDLE_RELATIVE_GRAD_MAX of its first-snapshot norm (relative_grad_norm).
    The first snapshot never fires (its relative gradient is 1 by definition)."""
    return _threshold_rule(
        frame, "saddle", [SADDLE_SYMMETRY_MAX, SADDLE_NEGATIVE_MASS_MIN, SADDLE_RELATIVE_GRAD_MAX], None,
        lambda r: (f"layer {r['layer_index']}: loss-Hessian spectrum nearly symmetric (symmetry "
                   f"{r['loss_symmetry']:.3g}, negative mass {_pct(r['loss_negative_mass'])}) with the gradient at "
                   f"{r['relative_grad_norm']:.2g} of its initial norm: a likely saddle"),
        ("grad_norm",))


def rule_low_rank_weights(frame: pl.DataFrame) -> pl.DataFrame:
    """low_rank_weights (001 §5.5.1): fires when weight_rank_ratio (numerical rank of W over
    min(d, q)) < LOW_RANK_WEIGHTS_MAX."""
    return _threshold_rule(
        frame, "low_rank_weights", [LOW_RANK_WEIGHTS_MAX], None,
        lambda r: (f"layer {r['layer_index']}: weight matrix of numerical rank {_pct(r['weight_rank_ratio'])} "
                   "of min(d, q)"),
        ("weight_stable_rank",))


def rule_low_rank_hessian(frame: pl.DataFrame) -> pl.DataFrame:
    """low_rank_hessian (001 §5.5.1): fires when loss_effective_rank (effective rank
    sum|lambda| / max|lambda| of the loss-Hessian block, = loss_effective_rank_ratio x q (d + 1))
    < LOW_RANK_HESSIAN_MAX."""
    return _threshold_rule(
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
        rows.append(_finding(
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
    return _threshold_rule(
        pairs, "small_eigenvalues_last_layers", [LAST_LAYER_MARGIN], None,
        lambda r: (f"{_pct(r['last_near_zero'])} of layer {r['layer_index']}'s local-Hessian eigenvalues near zero "
                   f"against {_pct(r['first_near_zero'])} in layer {r['first_layer']}"),
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
        rows.append(_finding(
            r, "bias_dominated", level,
            f"layer {r['layer_index']}: biases carry {value:.3g}x their no-structure share 1/{d1} of the {kinds} "
            "Hessian spectrum",
            {"local_bias_share_ratio": local, "loss_bias_share_ratio": loss, "baseline": 1 / d1, **t.evidence()}))
    return findings_frame(rows)


def rule_rigid_direction(frame: pl.DataFrame) -> pl.DataFrame:
    """rigid_direction (001 §5.5.3): fires when the weight-gradient alignment
    sum_k sigma_k(W) |u_k^T G v_k| / (||W||_F ||G||_F) >= RIGID_ALIGNMENT_MIN."""
    return _threshold_rule(
        frame, "rigid_direction", [RIGID_ALIGNMENT_MIN], None,
        lambda r: (f"layer {r['layer_index']}: gradient aligned with the weights' singular directions "
                   f"(alignment {r['alignment']:.2f}): a rigid direction"),
        ("grad_norm",))


def rule_adjacent_dissimilarity(frame: pl.DataFrame) -> pl.DataFrame:
    """adjacent_dissimilarity (001 §5.5.7): fires when adjacent_similarity (layer l with l + 1) over
    ``adjacent_chance`` < ADJACENT_CHANCE_RATIO_MAX: the two layers' singular subspaces agree less than
    two random directions would."""
    return _threshold_rule(
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
NORMALIZATION_RULE = "normalization_effect"


# --- normalization (§5.2) -------------------------------------------------------------------------

def normalization_twins(runs: pl.DataFrame) -> pl.DataFrame:
    """(run_id, twin_run_id): each run with norm != 'none' and the run with norm = 'none' whose
    configuration (``config_json``) is identical but for TWIN_IGNORED_FIELDS. runs: run_id, norm,
    config_json."""
    def key(config: str) -> str:
        d = json.loads(config)
        return json.dumps({k: v for k, v in d.items() if k not in TWIN_IGNORED_FIELDS}, sort_keys=True)

    keyed = runs.select("run_id", "norm", pl.col("config_json").map_elements(key, return_dtype=pl.Utf8).alias("k"))
    plain = keyed.filter(pl.col("norm") == "none").select("k", twin_run_id="run_id").unique("k", keep="first")
    normed = keyed.filter(pl.col("norm") != "none")
    return normed.join(plain, on="k", how="inner").select("run_id", "twin_run_id").sort("run_id")


def normalization_comparison(frame: pl.DataFrame, twins: pl.DataFrame) -> pl.DataFrame:
    """Long table (dataset, norm, metric, value_with_norm, value_without, difference, run_id, twin_run_id):
    run-level means over hidden-layer rows of each NORMALIZATION_METRICS column. frame: derived layer
    rows with run_id, dataset, norm, hidden and the metrics; twins: :func:`normalization_twins`."""
    schema = {"dataset": pl.Utf8, "norm": pl.Utf8, "metric": pl.Utf8, "value_with_norm": pl.Float64,
              "value_without": pl.Float64, "difference": pl.Float64, "run_id": pl.Utf8, "twin_run_id": pl.Utf8}
    metrics = [m for m in NORMALIZATION_METRICS if m in frame.columns]
    if twins.is_empty() or not metrics:
        return pl.DataFrame(schema=schema)
    per_run = (frame.filter(pl.col("hidden"))
               .group_by("run_id").agg(pl.col("dataset").first(), pl.col("norm").first(),
                                       *[pl.col(m).fill_nan(None).mean() for m in metrics]))
    long = per_run.unpivot(index=["run_id", "dataset", "norm"], on=metrics, variable_name="metric",
                           value_name="value")
    out = (twins.join(long, on="run_id", how="inner")
           .join(long.select(twin_run_id="run_id", metric="metric", value_without="value"),
                 on=["twin_run_id", "metric"], how="inner")
           .rename({"value": "value_with_norm"})
           .with_columns(difference=pl.col("value_with_norm") - pl.col("value_without")))
    return out.select(list(schema)).cast(schema).sort("dataset", "norm", "metric", "run_id")


def rule_normalization_effect(comparison: pl.DataFrame) -> pl.DataFrame:
    """normalization_effect (001 §5.2, severity ``info``, run-level): for each normalized run whose
    mean saturation_fraction is not lower than its unnormalized twin's (difference >= 0)."""
    rows = []
    sat = comparison.filter((pl.col("metric") == "saturation_fraction") & pl.col("difference").is_not_null())
    for r in sat.iter_rows(named=True):
        if r["difference"] < 0:
            continue
        rows.append(_finding(
            {"run_id": r["run_id"], "step": None}, NORMALIZATION_RULE, INFO,
            f"{r['norm']} on {r['dataset']}: mean saturation {r['value_with_norm']:.3g} against "
            f"{r['value_without']:.3g} without normalization (run {r['twin_run_id']}): not lower",
            {"saturation_with_norm": r["value_with_norm"], "saturation_without": r["value_without"],
             "difference": r["difference"]}, layer=False))
    return findings_frame(rows)


# --- verdicts -------------------------------------------------------------------------------------

def _r(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def clustered_correlation(data: pl.DataFrame, x: str, y: str, cluster: str = "run_id",
                          seed: int = 0) -> tuple[float, float, float, int, int]:
    """Pearson r(x, y) over the rows with a percentile interval from a cluster bootstrap over
    ``cluster``: (r, lo, hi, n_clusters, n_rows)."""
    data = data.select(cluster, x, y).filter(pl.col(x).is_finite() & pl.col(y).is_finite())
    if data.height < 4:
        return math.nan, math.nan, math.nan, data.select(pl.col(cluster).n_unique()).item(), data.height
    r, lo, hi, k = cluster_bootstrap(data, cluster, lambda f: _r(f[x].to_numpy(), f[y].to_numpy()), seed=seed)
    return r, lo, hi, k, data.height


def verdict_saturation(frame: pl.DataFrame) -> Verdict:
    """001 Claim 2 / §5.2: r(saturation_fraction, local_excess_near_zero) over ``local_eligible``
    layer snapshots, cluster bootstrap by run; predicted positive."""
    data = frame.filter(pl.col("local_eligible").fill_null(False))
    r, lo, hi, k, n_rows = clustered_correlation(data, "saturation_fraction", "local_excess_near_zero")
    return Verdict(
        "diagnostics.saturation_near_zero", "001 Claim 2 / §5.2",
        "Saturated layers show local-Hessian eigenvalues piled near zero",
        "Pearson r between saturation fraction and the local Hessian's non-structural near-zero eigenvalue "
        "fraction over non-ReLU hidden-layer snapshots; 95% CI by cluster bootstrap over runs",
        "r(saturation, near-zero fraction)", "positive", r, lo, hi, k, "runs", detail=f"{n_rows} layer snapshots")


def verdict_normalization(comparison: pl.DataFrame) -> Verdict:
    """001 §5.2 normalization: (saturation with norm - without) per matched pair, averaged per unnormalized
    twin first (pairs sharing a twin are not independent), then a t interval over twins; predicted negative."""
    pairs = comparison.filter((pl.col("metric") == "saturation_fraction") & pl.col("difference").is_finite())
    per_twin = pairs.group_by("twin_run_id").agg(pl.col("difference").mean()) if pairs.height else pairs
    m, lo, hi, n = mean_ci(per_twin["difference"].to_numpy() if pairs.height else np.array([]))
    datasets = sorted(set(comparison["dataset"].to_list()))
    return Verdict(
        "diagnostics.normalization_saturation", "001 §5.2",
        "Normalization layers keep activations out of saturation",
        "difference in run-mean hidden-layer saturation fraction between a normalized run and the identical run "
        "without normalization, averaged per unnormalized twin; t interval over twins",
        "mean saturation difference (with - without)", "negative", m, lo, hi, n, "unnormalized twins",
        detail=f"{pairs.height} matched pairs; data sets: {', '.join(datasets) or 'none'}")


def run_means(frame: pl.DataFrame, column: str, rows: pl.Expr) -> np.ndarray:
    """Per run, the mean of ``column`` over the rows selected by ``rows`` (finite values)."""
    return (frame.filter(rows.fill_null(False) & pl.col(column).is_finite())
            .group_by("run_id").agg(pl.col(column).mean()).sort("run_id")[column].to_numpy())


def verdict_bias(frame: pl.DataFrame, kind: str) -> Verdict:
    """001 §5.5.5 for ``kind`` in (local, loss): mean over runs of the run-mean bias_share_ratio
    (local: ``local_eligible`` layers; loss: every layer) against the null 1, the share bias
    coordinates would carry with no structure; predicted positive (more than the baseline), t interval
    over runs, negligible band NEGLIGIBLE_BIAS_RATIO."""
    rows = pl.col("local_eligible") if kind == "local" else pl.lit(True)
    m, lo, hi, n = mean_ci(run_means(frame, f"{kind}_bias_share_ratio", rows))
    what = "non-ReLU hidden layers" if kind == "local" else "all layers"
    return Verdict(
        f"diagnostics.bias_share_{kind}", "001 §5.5.5",
        "Bias parameters carry a real share of the Hessian spectrum (more than their coordinate count)",
        f"mean over runs of the run-mean {kind}-Hessian bias share over its no-structure baseline 1/(d+1) "
        f"({what}); t interval over runs",
        f"mean {kind} bias share ratio", "positive", m, lo, hi, n, "runs", null_value=1.0,
        negligible=NEGLIGIBLE_BIAS_RATIO)


def verdict_saddle(frame: pl.DataFrame) -> Verdict:
    """001 §5.5.6: r(loss_symmetry, log10 relative_grad_norm) over hidden layers with an indefinite
    loss-Hessian block (``local_eligible``; ReLU blocks are PSD, symmetry identically 2), first snapshot
    excluded; cluster bootstrap by run; predicted positive."""
    data = frame.filter(pl.col("local_eligible").fill_null(False) & ~pl.col("is_first_snapshot")
                        & (pl.col("relative_grad_norm") > 0)).with_columns(
        log_relative_grad=pl.col("relative_grad_norm").log10())
    r, lo, hi, k, n_rows = clustered_correlation(data, "loss_symmetry", "log_relative_grad")
    return Verdict(
        "diagnostics.symmetry_gradient", "001 §5.5.6",
        "A spectrum symmetric about zero marks a saddle with small gradients",
        "Pearson r between loss-Hessian symmetry W1(λ,-λ)/mean|λ| (0 = symmetric) and log10 of the layer's "
        "gradient norm over its first-snapshot norm, non-ReLU hidden layers after the first snapshot; "
        "cluster bootstrap over runs",
        "r(symmetry, log relative gradient)", "positive", r, lo, hi, k, "runs", detail=f"{n_rows} layer snapshots")


def verdict_last_layers(pairs: pl.DataFrame, snapshots: pl.DataFrame) -> Verdict:
    """001 §5.5.2: at each run's last snapshot, r(last minus first hidden layer local-Hessian excess
    near-zero fraction, gap_loss), Fisher-z interval over runs; predicted positive.
    pairs: :func:`last_minus_first_near_zero`; snapshots: run_id, step, gap_loss."""
    last = pairs.sort("step").group_by("run_id").agg(pl.col("step").last(), pl.col("difference").last())
    data = last.join(snapshots.select("run_id", "step", "gap_loss"), on=["run_id", "step"], how="inner")
    r, lo, hi, p, n = pearson_ci(data["difference"].to_numpy(), data["gap_loss"].to_numpy())
    return Verdict(
        "diagnostics.last_layer_near_zero_gap", "001 §5.5.2",
        "Small local-Hessian eigenvalues concentrated in the last layers go with worse generalization",
        "Pearson r between (last hidden layer minus layer 0) local-Hessian excess near-zero fraction and the "
        "test-train loss gap, at each run's last snapshot (networks with >= 2 non-ReLU hidden layers)",
        "r(near-zero difference, gap_loss)", "positive", r, lo, hi, n, "runs", p_value=p)


def loss_decrease_pairs(snapshots: pl.DataFrame) -> pl.DataFrame:
    """Consecutive snapshot pairs per run: (run_id, step, interval, alignment at k, decrease_rate =
    (L_k - L_{k+1}) / L_k / (ln(s_{k+1} + 1) - ln(s_k + 1)), the relative train-loss decrease per e-fold
    of steps, so intervals of the log-spaced schedule compare), and both z-scored across runs within the
    interval index k (``alignment_z``, ``decrease_z``): alignment and loss decrease both drift over
    training, and comparing runs at the same point of training keeps that drift out of the correlation.
    snapshots: run_id, step, alignment, train_loss."""
    s = snapshots.sort("run_id", "step").with_columns(
        next_loss=pl.col("train_loss").shift(-1).over("run_id"),
        next_step=pl.col("step").shift(-1).over("run_id"),
        interval=pl.col("step").rank("ordinal").over("run_id"))
    s = (s.filter(pl.col("next_loss").is_not_null() & (pl.col("train_loss") > 0))
         .with_columns(decrease_rate=(pl.col("train_loss") - pl.col("next_loss")) / pl.col("train_loss")
                       / ((pl.col("next_step") + 1).log() - (pl.col("step") + 1).log())))

    def z(c: str) -> pl.Expr:
        return ((pl.col(c) - pl.col(c).mean().over("interval")) / pl.col(c).std().over("interval")).alias(f"{c}_z")

    return (s.filter(pl.col("alignment").is_finite() & pl.col("decrease_rate").is_finite())
            .with_columns(z("alignment"), z("decrease_rate").alias("decrease_z"))
            .select("run_id", "step", "interval", "alignment", "decrease_rate", "alignment_z", "decrease_z"))


def verdict_rigid(snapshots: pl.DataFrame) -> Verdict:
    """001 §5.5.3: r(layer-mean alignment at snapshot k, train-loss decrease per e-fold of steps from k to
    k+1), both z-scored within the interval index across runs; cluster bootstrap by run; predicted negative."""
    data = loss_decrease_pairs(snapshots)
    r, lo, hi, k, n_rows = clustered_correlation(data, "alignment_z", "decrease_z")
    return Verdict(
        "diagnostics.alignment_progress", "001 §5.5.3",
        "High weight-gradient alignment marks a rigid direction where the optimizer stalls",
        "Pearson r between the snapshot's layer-mean weight-gradient alignment and the relative train-loss "
        "decrease per e-fold of steps to the next spectral snapshot, both z-scored across runs at the same "
        "snapshot index (keeps the common drift over training out); cluster bootstrap over runs",
        "r(alignment, loss decrease rate | snapshot index)", "negative", r, lo, hi, k, "runs",
        detail=f"{n_rows} snapshot intervals")


# --- the stage ------------------------------------------------------------------------------------

def all_findings(frame: pl.DataFrame, comparison: pl.DataFrame) -> pl.DataFrame:
    parts = [fn(frame) for fn, _ in RULES.values()] + [rule_normalization_effect(comparison)]
    return pl.concat(parts, how="vertical") if parts else findings_frame([])


def summary_frame(findings: pl.DataFrame) -> pl.DataFrame:
    """(rule, severity, n_findings, n_runs, n_snapshots, threshold) for every rule x possible severity."""
    spec = [(rule, sev, text) for rule, (_, text) in RULES.items() for sev in (WARNING, CRITICAL)]
    spec.append((NORMALIZATION_RULE, INFO, "mean hidden-layer saturation with normalization >= without (twin run)"))
    base = pl.DataFrame(spec, schema={"rule": pl.Utf8, "severity": pl.Utf8, "threshold": pl.Utf8}, orient="row")
    counts = findings.group_by("rule", "severity").agg(
        n_findings=pl.len(), n_runs=pl.col("run_id").n_unique(),
        n_snapshots=pl.struct("run_id", "step").filter(pl.col("step").is_not_null()).n_unique())
    out = base.join(counts, on=["rule", "severity"], how="left").with_columns(
        pl.col("n_findings", "n_runs", "n_snapshots").fill_null(0).cast(pl.Int64))
    return out.select("rule", "severity", "n_findings", "n_runs", "n_snapshots", "threshold")


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``findings``, the summary, the normalization comparison and the verdicts."""
    layer = con.sql("SELECT * FROM analysis_features_layer ORDER BY run_id, step, layer_index").pl()
    runs = con.sql("SELECT run_id, norm, n_probe, config_json FROM runs ORDER BY run_id").pl()
    snapshots = con.sql("SELECT run_id, step, train_loss, gap_loss, alignment FROM analysis_features "
                        "ORDER BY run_id, step").pl()
    frame = derive_columns(layer, runs)
    twins = normalization_twins(runs.filter(pl.col("run_id").is_in(frame["run_id"].unique().implode())))
    comparison = normalization_comparison(frame, twins)
    findings = all_findings(frame, comparison)
    con.execute("""CREATE OR REPLACE TABLE findings (run_id VARCHAR, step INTEGER, layer_index INTEGER,
        rule VARCHAR, severity VARCHAR, message VARCHAR, evidence MAP(VARCHAR, DOUBLE))""")
    if findings.height:
        con.register("_diag_findings", findings)
        con.execute("""INSERT INTO findings SELECT run_id, step, layer_index, rule, severity, message,
                           map_from_entries(evidence) FROM _diag_findings
                       ORDER BY run_id, step NULLS FIRST, layer_index NULLS FIRST, rule""")
        con.unregister("_diag_findings")
    summary = summary_frame(findings)  # noqa: F841
    con.execute("CREATE OR REPLACE TABLE analysis_diagnostics_summary AS SELECT * FROM summary")
    con.execute("""CREATE OR REPLACE TABLE analysis_diagnostics_normalization (dataset VARCHAR, norm VARCHAR,
        metric VARCHAR, value_with_norm DOUBLE, value_without DOUBLE, difference DOUBLE, run_id VARCHAR,
        twin_run_id VARCHAR)""")
    if comparison.height:
        con.execute("INSERT INTO analysis_diagnostics_normalization SELECT * FROM comparison")
    verdicts = [
        verdict_saturation(frame),
        verdict_normalization(comparison),
        verdict_bias(frame, "local"),
        verdict_bias(frame, "loss"),
        verdict_saddle(frame),
        verdict_last_layers(last_minus_first_near_zero(frame), snapshots),
        verdict_rigid(snapshots),
    ]
    write_verdicts(con, "diagnostics", verdicts)


# --- figures and report ---------------------------------------------------------------------------

_SEVERITY_COLORS = {INFO: "#4c72b0", WARNING: "#dd8452", CRITICAL: "#c44e52"}


def findings_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Horizontal stacked bars: findings per rule, split by severity."""
    df = con.sql("SELECT rule, severity, n_findings FROM analysis_diagnostics_summary").pl()
    rules = list(dict.fromkeys(df["rule"].to_list()))
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * max(len(rules), 4) + 1.5))
    left = np.zeros(len(rules))
    for sev in (INFO, WARNING, CRITICAL):
        counts = np.array([df.filter((pl.col("rule") == r) & (pl.col("severity") == sev))["n_findings"].sum()
                           for r in rules], dtype=float)
        ax.barh(rules, counts, left=left, color=_SEVERITY_COLORS[sev], label=sev)
        left += counts
    for i, total in enumerate(left):
        ax.text(total, i, f" {int(total)}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("number of findings (layer snapshots; run-level for normalization_effect)")
    ax.set_ylabel("rule")
    ax.legend(title="severity", loc="lower right")
    ax.set_xlim(0, max(float(left.max()) if len(left) else 0.0, 1.0) * 1.15)
    fig.suptitle("Diagnostics: findings per rule and severity")
    fig.tight_layout()
    return fig


def normalization_figure(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Per data set, run-mean hidden-layer saturation and local near-zero fraction without
    normalization and with each normalization."""
    metrics = ("saturation_fraction", "local_near_zero_fraction")
    df = con.sql("SELECT * FROM analysis_diagnostics_normalization ORDER BY dataset, norm").pl()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    norms = sorted(df["norm"].unique().to_list())
    palette = dict(zip(["none", *norms], plt.get_cmap("tab10").colors, strict=False))
    for ax, metric in zip(axes.flat, metrics, strict=True):
        sub = df.filter(pl.col("metric") == metric)
        datasets = sorted(sub["dataset"].unique().to_list())
        if not datasets:
            ax.text(0.5, 0.5, "no normalized run with an unnormalized twin", ha="center", va="center",
                    transform=ax.transAxes)
        width = 0.8 / (len(norms) + 1)
        for i, ds in enumerate(datasets):
            rows = sub.filter(pl.col("dataset") == ds)
            base = float(np.nanmean(rows["value_without"].cast(pl.Float64).fill_null(np.nan).to_numpy()))
            ax.bar(i, base, width, color=palette["none"], label="none" if i == 0 else None)
            for j, nm in enumerate(norms):
                v = rows.filter(pl.col("norm") == nm)["value_with_norm"].to_list()
                if v and v[0] is not None:
                    ax.bar(i + (j + 1) * width, v[0], width, color=palette[nm], label=nm if i == 0 else None)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(datasets))], datasets)
        ax.set_xlabel("data set")
        ax.set_ylabel(f"run mean of {metric} (hidden layers)")
        ax.set_title(metric.replace("_", " "))
        if datasets:
            ax.legend(title="normalization")
    fig.suptitle("Normalization and saturation (001 §5.2): matched runs with and without normalization")
    fig.tight_layout()
    return fig


FIGURES = {
    "diagnostics_findings": findings_figure,
    "diagnostics_normalization": normalization_figure,
}
CAPTIONS = {
    "diagnostics_findings": "Number of findings of each diagnostic rule, stacked by severity (warning: every "
                            "condition past its warning threshold; critical: past its critical threshold; info: "
                            "a comparison). Thresholds are in the summary table.",
    "diagnostics_normalization": "Run-mean saturation fraction and local-Hessian near-zero fraction of hidden "
                                 "layers over all spectral snapshots, for each normalized run and its twin "
                                 "without normalization (identical configuration otherwise).",
}


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Sentences from the findings and normalization tables, and the tables the report shows."""
    n_runs, n_snap = con.execute("SELECT count(DISTINCT run_id), count(DISTINCT (run_id, step)) "
                                 "FROM analysis_features_layer").fetchall()[0]
    total, runs_hit = con.execute("SELECT count(*), count(DISTINCT run_id) FROM findings").fetchall()[0]
    by_rule = con.execute("""SELECT rule, sum(n_findings)::BIGINT, sum(n_findings) FILTER (WHERE severity = 'critical')
                             FROM analysis_diagnostics_summary GROUP BY rule ORDER BY 2 DESC, rule""").fetchall()
    fired = [f"{rule} {n} ({crit or 0} critical)" for rule, n, crit in by_rule if n]
    silent = [rule for rule, n, _ in by_rule if not n]
    paragraphs = [f"The rules produced {total} findings on {runs_hit} of {n_runs} runs ({n_snap} spectral "
                  f"snapshots): " + (", ".join(fired) if fired else "none") + "."]
    if silent:
        paragraphs.append("Rules that never fired on this corpus: " + ", ".join(silent) + ".")
    norm = con.execute("""SELECT count(*), count(*) FILTER (WHERE difference < 0), avg(difference)
                          FROM analysis_diagnostics_normalization WHERE metric = 'saturation_fraction'""").fetchall()[0]
    if norm[0]:
        paragraphs.append(f"Of {norm[0]} normalized runs with an unnormalized twin, {norm[1]} have a lower mean "
                          f"hidden-layer saturation than their twin (mean difference {norm[2]:.3g}).")
    else:
        paragraphs.append("No run with a normalization layer has an unnormalized twin in this corpus, so the "
                          "normalization comparison is empty.")
    return {
        "paragraphs": paragraphs,
        "tables": [
            {"caption": "Findings per rule and severity, with the thresholds",
             "sql": "SELECT * FROM analysis_diagnostics_summary ORDER BY rule, severity"},
            {"caption": "Normalization against the unnormalized twin (run means over hidden layers)",
             "sql": """SELECT dataset, norm, metric, round(value_with_norm, 4) AS with_norm,
                              round(value_without, 4) AS without, round(difference, 4) AS difference
                       FROM analysis_diagnostics_normalization ORDER BY dataset, norm, metric LIMIT 60"""},
            {"caption": "Critical findings (first 40)",
             "sql": """SELECT f.run_id, r.dataset, r.size, r.activation, f.step, f.layer_index, f.rule, f.message
                       FROM findings f JOIN runs r USING (run_id) WHERE f.severity = 'critical'
                       ORDER BY f.rule, f.run_id, f.step, f.layer_index LIMIT 40"""},
        ],
    }
