"""The pressure stage's verdicts on the bottleneck claims (000): high-pressure layers improve slowest
(all layers; hidden layers only), saturate later, and the top-pressure layer is the slowest-improving one;
and the Riemannian metric's reading of the same.

Paper 000 states no testable claim (:data:`analyses.stats.verdict.EXPLORATORY_FAMILIES`): these rows
test this project's reading of it and are exploratory. Each improvement claim has two rows: as read
(the mean over runs of the within-run Spearman ρ, per data set, pooled across data sets) and sharpened
against the optimizer's own mechanism (the partial rank correlation with run fixed effects, given the
layer's initial gradient size; for the Riemannian ratio, given pressure too, whose near-reciprocal it is).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from analyses.kit.presentation import fmt_number as _f
from analyses.pressure.coincidence import Coincidence
from analyses.pressure.layers import EARLY_PROGRESS, SATURATING
from analyses.pressure.rank_correlation import RankCorrelation
from analyses.stats import ClaimData, Concordance, Estimate, Jackknifed, Mean, Verdict, partial_r, within_run_ranks

#: What the gradient-size control holds fixed (the stage docstring, "Mechanism").
MECHANISM = ("the optimizer's own mechanism (gradient descent shrinks the gradient fastest along high curvature, "
             "and layers with large early gradients fall most: the initial gradient size, within each run)")
#: What the Riemannian row's control holds fixed.
PRESSURE_AND_SIZE = ("gradient pressure and initial gradient size (the metric ratio is close to the reciprocal of "
                     "pressure), within each run")
#: Band of every ρ and partial rank r here, and of the concordance share around one half.
NEGLIGIBLE_RHO, NEGLIGIBLE_SHARE = 0.1, 0.05

_RHO = "mean within-run Spearman ρ"


def _rho_detail(s: RankCorrelation, what: str) -> str:
    return (f"{_RHO}(early pressure, {what}) over {s.effect.n} runs; over the "
            f"{s.n_3plus} runs with >= 3 usable layers {_f(s.mean_rho_3plus)}")


def run_rows(values: Mapping[str, float], datasets: Mapping[str, str]) -> pl.DataFrame:
    """One claim row per run of ``values`` ({run: per-run value}): run_id, dataset, value."""
    runs = list(values)
    return pl.DataFrame({"run_id": runs, "dataset": [datasets.get(r, "") for r in runs],
                         "value": [float(values[r]) for r in runs]},
                        schema={"run_id": pl.Utf8, "dataset": pl.Utf8, "value": pl.Float64})


def rho_claim_data(claim: RankCorrelation, datasets: Mapping[str, str], concordance: bool | None = None
                   ) -> ClaimData | None:
    """The per-run ρ of ``claim`` as claim rows: their mean per data set, or with ``concordance`` the share
    of runs whose ρ is positive. ρ over two layers is +-1, so where most runs have two usable layers
    (``concordance`` None: decided by the layer counts, not by the ρ) the runs are signs, and a mean of
    signs that agree has no spread to make an interval from."""
    if not claim.rho:
        return None
    rows = run_rows(claim.rho, datasets)
    rho = rows["value"].to_numpy()
    if concordance is None:
        concordance = claim.n_3plus < len(claim.rho) / 2
    return ClaimData(rows, Concordance(rho, +1) if concordance else Mean(rho, bounds=(-1.0, 1.0)))


def fixed_effects_claim_data(layers: pl.DataFrame, x: str, y: str, controls: tuple[str, ...], confound: str
                             ) -> ClaimData | None:
    """Layer rows (run_id, dataset, x, y, controls; several per run) with all values finite, in runs of
    at least two such layers: the partial correlation of the within-run ranks of y and x given the
    controls' within-run ranks, pooled over the runs of a data set (a rank regression with run fixed
    effects), its variance from leaving whole runs out."""
    cols = [x, y, *controls]
    f = layers.select("run_id", "dataset", *[pl.col(c).cast(pl.Float64) for c in cols]).drop_nulls().filter(
        pl.all_horizontal(pl.col(c).is_finite() for c in cols))
    f = f.filter(pl.len().over("run_id") >= 2)
    if f.height < 4:
        return None
    ranks = within_run_ranks(f.select(cols).to_numpy(), f["run_id"].to_numpy())
    rx, ry, rc = ranks[:, 0], ranks[:, 1], ranks[:, 2:]
    return ClaimData(f.select("run_id", "dataset"),
                     Jackknifed(lambda i: partial_r(rx[i], ry[i], rc[i]), "fisher_z",
                                "partial rank correlation with run fixed effects"),
                     confound=confound)


def fixed_effects_estimate(data: ClaimData | None) -> Estimate:
    """The stage's own estimate beside a fixed-effects row: the partial rank correlation over every run."""
    if data is None:
        return Estimate.missing(0, "runs")
    n = data.rows["run_id"].n_unique()
    return Estimate.missing(n, "runs", data.estimand.value(np.arange(data.rows.height)))


def rho_verdict(stat: RankCorrelation, claim_id: str, claim: str, test: str, predicted: str, detail: str,
                datasets: Mapping[str, str] | None) -> Verdict:
    """The paper-reading row of a per-run ρ claim. Where most runs have three or more usable layers, the mean
    ρ per data set pooled by random effects (null 0); where most have two (ρ = +-1, a sign), the share of
    runs with ρ > 0 with its Wilson interval (null one half; ``predicted`` "negative" is a share below it)."""
    signs = stat.n_3plus < len(stat.rho) / 2
    data = rho_claim_data(stat, datasets, signs) if datasets is not None else None
    if not signs:
        return Verdict.of(stat.effect, claim_id, "000", claim, f"{test}; mean over runs per data set, pooled across "
                          "data sets by random effects", _RHO, predicted, data=data, detail=detail,
                          negligible=NEGLIGIBLE_RHO, band_units="Spearman ρ")
    share = sum(v > 0 for v in stat.rho.values()) / len(stat.rho)
    return Verdict.of(Estimate.missing(len(stat.rho), "runs", share), claim_id, "000", claim,
                      f"{test}; most runs have two usable layers, so ρ is a sign: the share of runs with ρ > 0, Wilson "
                      "interval on the effective number of runs (the data sets' design effect), against one half",
                      "share of runs with ρ > 0", predicted, null_value=0.5, data=data, detail=detail,
                      negligible=NEGLIGIBLE_SHARE, band_units="share of runs")


def pressure_verdicts(t: dict[str, RankCorrelation | Coincidence], n_top_out: tuple[int, int],
                      datasets: Mapping[str, str] | None = None,
                      subsets: Mapping[str, pl.DataFrame] | None = None) -> list[Verdict]:
    """The verdicts from :func:`analyses.pressure.stage.run_tests`; ``n_top_out``: (runs whose
    top-pressure layer is the output layer, runs with a top-pressure layer); ``datasets``: {run: data set}
    for the claim rows; ``subsets``: the layer rows (:func:`analyses.pressure.layers.layer_subsets`) for
    the fixed-effects rows. Without them no rows are handed over and the stage's estimates decide."""
    imp, hid, sat, mov, co = (t[k] for k in ("improvement", "improvement_hidden", "saturation", "movement",
                                             "coincidence"))
    ds = datasets or {}
    subsets = subsets or {}

    def fe(subset, x, controls, confound):
        frame = subsets.get(subset)
        return fixed_effects_claim_data(frame, x, "grad_log_decrease", controls, confound) \
            if frame is not None and datasets is not None else None

    hits = None
    if datasets is not None and co.hits:
        values = {r: h - co.chances[r] for r, h in co.hits.items()}
        rows = run_rows(values, ds)
        hits = ClaimData(rows, Mean(rows["value"].to_numpy(), bounds=(-1.0, 1.0)))
    top_text = f"the top-pressure layer is the output layer in {n_top_out[0]} of {n_top_out[1]} runs"
    test_imp = (f"per run, Spearman ρ across layers between early mean gradient pressure (progress <= "
                f"{EARLY_PROGRESS}) and the gradient-norm log-decrease from the early to the late half")
    test_fe = ("partial correlation of the within-run ranks of the gradient-norm log-decrease and early pressure "
               "given the within-run rank of the initial log gradient norm (a rank regression with run fixed "
               "effects), per data set with its variance from leaving runs out, pooled by random effects")
    m = mov.effect
    rho = {"negligible": NEGLIGIBLE_RHO, "band_units": "Spearman ρ"}
    out = []
    for claim_id, claim, what, stat, subset in (
            ("pressure.slowest_improving", "000 bottleneck: high-pressure layers improve slowest", "all layers",
             imp, "all"),
            ("pressure.slowest_improving_hidden",
             "000 bottleneck: high-pressure hidden layers improve slowest (output layer left out)",
             "hidden layers only", hid, "hidden")):
        detail = _rho_detail(stat, "gradient log-decrease")
        if subset == "all":
            detail += (f"; {top_text}; weight movement ||W_T - W_0||/||W_0|| instead: mean ρ {_f(m.value)} "
                       f"[{_f(m.low)}, {_f(m.high)}] over {m.n} runs")
        sharp = fe(subset, "early_pressure", ("initial_log_grad",), MECHANISM)
        out += [
            rho_verdict(stat, claim_id, claim, f"{test_imp} ({what})", "negative", detail, datasets),
            Verdict.of(fixed_effects_estimate(sharp), f"{claim_id}.beyond_gradient_size", "000",
                       claim + " (beyond the initial gradient size)", f"{test_fe} ({what})",
                       "partial rank r(pressure, log-decrease | initial gradient)", "negative", data=sharp,
                       role="sharpened", pair=claim_id, detail=detail, **rho),
        ]
    out.append(rho_verdict(
        sat, "pressure.later_saturation", "000 bottleneck: high-pressure layers saturate later",
        f"per run, Spearman ρ across hidden {'/'.join(SATURATING)} layers between early mean gradient pressure and "
        "the rise of the saturation fraction from the early to the late half", "positive",
        _rho_detail(sat, "saturation rise") + "; ReLU layers excluded (see the section text)", datasets))
    out.append(Verdict.of(
        co.effect, "pressure.top_is_slowest", "000", "000 bottleneck: the top-pressure layer is the slowest-improving "
        "layer", "share of runs whose layer of highest early pressure has the smallest gradient-norm log-decrease, "
        "minus the chance rate 1/(layers); mean per data set, pooled by random effects",
        "coincidence rate minus chance", "positive", with_p=False, data=hits, negligible=NEGLIGIBLE_SHARE,
        band_units="share of runs", detail=f"coincidence in {_f(co.rate)} of runs against chance {_f(co.chance)}; "
        f"{top_text}"))
    if "metric" in t:
        metric = t["metric"]
        claim = ("000 Riemannian metric: layers whose gradient is long in the Fisher/GGN metric relative to its "
                 "Euclidean length (a flat metric along the gradient) improve slowest")
        sharp = fe("all", "early_metric_ratio", ("early_pressure", "initial_log_grad"), PRESSURE_AND_SIZE)
        detail = _rho_detail(metric, "gradient log-decrease")
        out += [
            rho_verdict(metric, "pressure.riemannian_slowest", claim,
                        "per run, Spearman ρ across layers between the early mean of g^T (G + λI)^-1 g / ||g||^2 (the "
                        "damped natural-gradient norm over the squared gradient norm) and the gradient-norm "
                        "log-decrease", "negative", detail, datasets),
            Verdict.of(fixed_effects_estimate(sharp), "pressure.riemannian_slowest.beyond_pressure", "000",
                       claim + " (beyond pressure and gradient size)",
                       "partial correlation of the within-run ranks of the gradient-norm log-decrease and the "
                       "metric ratio given the within-run ranks of early pressure and the initial log gradient norm "
                       "(run fixed effects), per data set, pooled by random effects",
                       "partial rank r(metric ratio, log-decrease | pressure, initial gradient)", "negative",
                       data=sharp, role="sharpened", pair="pressure.riemannian_slowest", detail=detail, **rho),
        ]
    out.append(rho_verdict(
        mov, "pressure.least_movement", "000 bottleneck: high-pressure layers move least from their initial weights",
        "per run, Spearman ρ across layers between early mean gradient pressure and the weight movement "
        "||W_T - W_0||/||W_0|| (an outcome whose sign gradient descent does not fix: see the stage docstring, "
        "Mechanism)", "negative", _rho_detail(mov, "weight movement"), datasets))
    return out
