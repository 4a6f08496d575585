"""The pressure stage's verdicts on the bottleneck claims (000): high-pressure layers improve slowest
(all layers; hidden layers only), saturate later, and the top-pressure layer is the slowest-improving one."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import polars as pl

from analyses.presentation import fmt_number as _f
from analyses.pressure.coincidence import Coincidence
from analyses.pressure.layers import EARLY_PROGRESS, SATURATING
from analyses.pressure.rank_correlation import RankCorrelation
from analyses.stats import ClaimData, Verdict

#: What the gradient-size baseline controls (the stage docstring, "Mechanism").
MECHANISM = ("gradient descent itself: along high-curvature directions it shrinks the gradient fastest, and "
             "layers with large early gradients fall most")

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


def rho_claim_data(claim: RankCorrelation, datasets: Mapping[str, str],
                   baseline: RankCorrelation | None = None) -> ClaimData | None:
    """The per-run ρ of ``claim`` as claim rows, their mean as the statistic; with ``baseline``, the mean
    per-run ρ of the mechanism's predictor (the initial log gradient norm) over the same runs as the baseline,
    so the decisive quantity is how much more negative pressure's ρ is than gradient size's."""
    if not claim.rho:
        return None
    rows = run_rows(claim.rho, datasets)
    rho = rows["value"].to_numpy()
    if baseline is None:
        return ClaimData(rows, lambda idx: float(rho[idx].mean()))
    base = np.array([baseline.rho.get(r, math.nan) for r in rows["run_id"]], float)

    def base_mean(idx: np.ndarray) -> float:
        b = base[idx]
        return float(np.nanmean(b)) if np.isfinite(b).any() else math.nan

    return ClaimData(rows, lambda idx: float(rho[idx].mean()), confound=MECHANISM, baseline=base_mean,
                     baseline_name="mean within-run ρ(initial log gradient norm, gradient log-decrease)")


def pressure_verdicts(t: dict[str, RankCorrelation | Coincidence], n_top_out: tuple[int, int],
                      datasets: Mapping[str, str] | None = None) -> list[Verdict]:
    """The five verdicts from :func:`analyses.pressure.stage.run_tests`; ``n_top_out``: (runs whose
    top-pressure layer is the output layer, runs with a top-pressure layer); ``datasets``: {run: data set}
    for the claim rows (without it, no rows are handed over)."""
    imp, hid, sat, mov, co = (t[k] for k in ("improvement", "improvement_hidden", "saturation", "movement",
                                             "coincidence"))
    g_all, g_hid = t.get("gradient_size"), t.get("gradient_size_hidden")
    ds = datasets or {}

    def data(claim, baseline=None):
        return rho_claim_data(claim, ds, baseline) if datasets is not None else None

    hits = None
    if datasets is not None and co.hits:
        values = {r: h - co.chances[r] for r, h in co.hits.items()}
        rows = run_rows(values, ds)
        v = rows["value"].to_numpy()
        hits = ClaimData(rows, lambda idx: float(v[idx].mean()))
    top_text = f"the top-pressure layer is the output layer in {n_top_out[0]} of {n_top_out[1]} runs"
    test_imp = (f"per run, Spearman ρ across layers between early mean gradient pressure (progress <= "
                f"{EARLY_PROGRESS}) and the gradient-norm log-decrease from the early to the late half; mean over "
                f"runs, bootstrap over runs, within-run permutation p")
    m = mov.effect
    return [
        Verdict.of(imp.effect, "pressure.slowest_improving", "000",
                   "000 bottleneck: high-pressure layers improve slowest", test_imp + " (all layers)", _RHO,
                   "negative", data=data(imp, g_all),
                   detail=(f"{_rho_detail(imp, 'gradient log-decrease')}; {top_text}; weight movement "
                           f"||W_T - W_0||/||W_0|| instead: mean ρ {_f(m.value)} [{_f(m.low)}, {_f(m.high)}] "
                           f"over {m.n} runs")),
        Verdict.of(hid.effect, "pressure.slowest_improving_hidden", "000",
                   "000 bottleneck: high-pressure hidden layers improve slowest (output layer left out)",
                   test_imp + " (hidden layers only)", _RHO, "negative", data=data(hid, g_hid),
                   detail=_rho_detail(hid, "gradient log-decrease") + "; removes the output-versus-hidden contrast"),
        Verdict.of(sat.effect, "pressure.later_saturation", "000",
                   "000 bottleneck: high-pressure layers saturate later",
                   f"per run, Spearman ρ across hidden {'/'.join(SATURATING)} layers between early mean gradient "
                   f"pressure and the rise of the saturation fraction from the early to the late half; mean over "
                   f"runs, bootstrap over runs, within-run permutation p",
                   _RHO, "positive", data=data(sat),
                   detail=_rho_detail(sat, "saturation rise") + "; ReLU layers excluded (see the section text)"),
        Verdict.of(co.effect, "pressure.top_is_slowest", "000",
                   "000 bottleneck: the top-pressure layer is the slowest-improving layer",
                   "share of runs whose layer of highest early pressure has the smallest gradient-norm "
                   "log-decrease, minus the chance rate 1/(layers); bootstrap over runs",
                   "coincidence rate minus chance", "positive", with_p=False, data=hits,
                   detail=f"coincidence in {_f(co.rate)} of runs against chance {_f(co.chance)}; {top_text}"),
        *([Verdict.of(t["metric"].effect, "pressure.riemannian_slowest", "000",
                      "000 Riemannian metric: layers whose gradient is long in the Fisher/GGN metric relative to its "
                      "Euclidean length (a flat metric along the gradient) improve slowest",
                      "per run, Spearman ρ across layers between the early mean of g^T (G + λI)^-1 g / ||g||^2 (the "
                      "damped natural-gradient norm over the squared gradient norm) and the gradient-norm "
                      "log-decrease; mean over runs, bootstrap over runs, within-run permutation p; against the "
                      "initial gradient size's ρ", _RHO, "negative", data=data(t["metric"], g_all),
                      detail=_rho_detail(t["metric"], "gradient log-decrease"))] if "metric" in t else []),
        Verdict.of(m, "pressure.least_movement", "000",
                   "000 bottleneck: high-pressure layers move least from their initial weights",
                   "per run, Spearman ρ across layers between early mean gradient pressure and the weight movement "
                   "||W_T - W_0||/||W_0||; mean over runs, bootstrap over runs, within-run permutation p (an outcome "
                   "whose sign gradient descent does not fix: see the stage docstring, Mechanism)",
                   _RHO, "negative", data=data(mov), detail=_rho_detail(mov, "weight movement")),
    ]
