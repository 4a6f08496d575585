"""The pressure stage's verdicts on the bottleneck claims (000): high-pressure layers improve slowest
(all layers; hidden layers only), saturate later, and the top-pressure layer is the slowest-improving one."""

from __future__ import annotations

from analyses.presentation import fmt_number as _f
from analyses.pressure.coincidence import Coincidence
from analyses.pressure.layers import EARLY_PROGRESS, SATURATING
from analyses.pressure.rank_correlation import RankCorrelation
from analyses.stats import Verdict

_RHO = "mean within-run Spearman ρ"


def _rho_detail(s: RankCorrelation, what: str) -> str:
    return (f"{_RHO}(early pressure, {what}) over {s.effect.n} runs; over the "
            f"{s.n_3plus} runs with >= 3 usable layers {_f(s.mean_rho_3plus)}")


def pressure_verdicts(t: dict[str, RankCorrelation | Coincidence], n_top_out: tuple[int, int]) -> list[Verdict]:
    """The four verdicts from :func:`analyses.pressure.stage.run_tests`; ``n_top_out``: (runs whose
    top-pressure layer is the output layer, runs with a top-pressure layer)."""
    imp, hid, sat, mov, co = (t[k] for k in ("improvement", "improvement_hidden", "saturation", "movement",
                                             "coincidence"))
    top_text = f"the top-pressure layer is the output layer in {n_top_out[0]} of {n_top_out[1]} runs"
    test_imp = (f"per run, Spearman ρ across layers between early mean gradient pressure (progress <= "
                f"{EARLY_PROGRESS}) and the gradient-norm log-decrease from the early to the late half; mean over "
                f"runs, bootstrap over runs, within-run permutation p")
    m = mov.effect
    return [
        Verdict.of(imp.effect, "pressure.slowest_improving", "000",
                   "000 bottleneck: high-pressure layers improve slowest", test_imp + " (all layers)", _RHO,
                   "negative",
                   detail=(f"{_rho_detail(imp, 'gradient log-decrease')}; {top_text}; weight movement "
                           f"||W_T - W_0||/||W_0|| instead: mean ρ {_f(m.value)} [{_f(m.low)}, {_f(m.high)}] "
                           f"over {m.n} runs")),
        Verdict.of(hid.effect, "pressure.slowest_improving_hidden", "000",
                   "000 bottleneck: high-pressure hidden layers improve slowest (output layer left out)",
                   test_imp + " (hidden layers only)", _RHO, "negative",
                   detail=_rho_detail(hid, "gradient log-decrease") + "; removes the output-versus-hidden contrast"),
        Verdict.of(sat.effect, "pressure.later_saturation", "000",
                   "000 bottleneck: high-pressure layers saturate later",
                   f"per run, Spearman ρ across hidden {'/'.join(SATURATING)} layers between early mean gradient "
                   f"pressure and the rise of the saturation fraction from the early to the late half; mean over "
                   f"runs, bootstrap over runs, within-run permutation p",
                   _RHO, "positive",
                   detail=_rho_detail(sat, "saturation rise") + "; ReLU layers excluded (see the section text)"),
        Verdict.of(co.effect, "pressure.top_is_slowest", "000",
                   "000 bottleneck: the top-pressure layer is the slowest-improving layer",
                   "share of runs whose layer of highest early pressure has the smallest gradient-norm "
                   "log-decrease, minus the chance rate 1/(layers); bootstrap over runs",
                   "coincidence rate minus chance", "positive", with_p=False,
                   detail=f"coincidence in {_f(co.rate)} of runs against chance {_f(co.chance)}; {top_text}"),
    ]
