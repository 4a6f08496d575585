"""Spectral summaries of a symmetric n x n matrix H seen only through products, each with its error.

n_v Lanczos runs (:func:`pipeline.curvature.lanczos.lanczos`) of ``steps`` steps start from independent
Rademacher vectors v_r (||v_r||^2 = n). Run r gives a Gauss rule (theta_rk, tau_rk^2) for the spectral
measure of v_r, so that for any f

    (1/n) tr f(H) = E[v^T f(H) v] / n  ~  est_r(f) = sum_k tau_rk^2 f(theta_rk),

unbiased over v up to the rule's quadrature error (nil for polynomials of degree <= 2 steps - 1, so
the moments m_1..m_3 below carry probe noise only). The summaries are smooth functions of the run
means of est_r(f) for f in {x, x^2, x^3, |x|, |x| 1[x < 0]}:

    trace            n m_1                                   (exact when the caller passes it)
    std              sqrt(m_2 - m_1^2)                       (exact when tr H and ||H||_F^2 are passed)
    skewness         (m_3 - 3 m_1 m_2 + 2 m_1^3) / std^3  (all three moments from the runs)
    negative_mass    mean est(|x| 1[x<0]) / mean est(|x|)
    effective_rank   n mean est(|x|) / max(|theta_top|, |theta_bottom|)

(with tr H exact, est(|x|) is taken as tr H / n + 2 est(|x| 1[x<0]): the kink of |x| at 0, where
quadrature errs most, then only enters through the negative part.)

Each carries a standard error (``*_stderr``) that combines the two sources of error: the probes
(a delete-one jackknife over the n_v runs) and the quadrature, estimated by how much the statistic
moves from the rules of steps // 2 nodes to those of all the steps of the same runs (the first k
steps of a Lanczos run are the k-step run, so this costs no products; for an error decaying like
1 / steps it is the error itself, faster decay makes it conservative). benchmarks/curvature.py
measures how often the exact value lies within 2 standard errors. ``near_zero_fraction``, the
condition number, log|det|, n_zero, symmetry and bias share are not estimable this way and stay NULL.

The extremes come from the same runs (each run sees both ends of the spectrum): the largest top Ritz
value and the smallest bottom one, each with its residual ||H y - theta y|| = beta_m |s_m|, which
bounds the distance from theta to an eigenvalue of H; ``converged`` and ``bottom_converged`` say
whether that residual is at most RITZ_RTOL x the spectral scale, for the top and the bottom value
separately. Only converged Ritz values are stored in ``eigenvalues``.

How many products a row spends (:func:`adaptive_summary`, :class:`LanczosBudget`) is set by its
targets, not by a fixed count. Runs are made one after another (one basis in memory), each
continued TOP_CHECK_EVERY steps at a time until it has *settled*, or has spent its share of the cap
(``max_products // runs`` steps):

- its top and bottom Ritz values are converged (residual <= RITZ_RTOL x its scale: the rule above);
- its Gauss rule has settled for the functionals that are not polynomials of degree <= 2 steps - 1
  (|x| and |x| 1[x<0]; with tr H passed only the latter; for a definite H neither): each moved by
  at most ``quadrature_rtol`` x est(|x|) from the rule of half its steps, the same difference that
  enters the summaries' standard errors.

After ``runs`` runs, more runs are made while a summary's standard error exceeds ``stderr_rtol`` of
its scale (trace: sum |lambda|; std, effective rank: the value; skewness: max(|value|, 1); negative
mass: max(value, 0.1)) and the cap leaves room for a run of the mean length so far. ``stop_reason``
says why the row ended: ``targets`` (every run settled and every standard error within its target)
or ``budget`` (the cap came first; the errors stored still state what was reached).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.curvature.lanczos import RITZ_RTOL, TOP_CHECK_EVERY, LanczosProcess, LanczosRun, lanczos

MatVec = Callable[[np.ndarray], np.ndarray]

#: Ritz values kept at each end of the spectrum.
TOP_K = 8
#: Why a matrix-free row stopped spending products (``hessian_spectra.stop_reason``).
STOP_REASONS = ("targets", "budget")


@dataclass(frozen=True)
class LanczosBudget:
    """The targets a matrix-free row spends products to reach, and its hard cap (module docstring).

    runs: Lanczos runs at least (the jackknife's sample), >= 2; max_products: the cap of the row;
    quadrature_rtol: a run's Gauss rule has settled when |x| and |x| 1[x<0] moved by at most this
    share of est(|x|) from the half-length rule; stderr_rtol: each summary's standard error target,
    relative to its scale; min_steps: steps a run takes before it may stop."""

    runs: int = 8
    max_products: int = 320
    quadrature_rtol: float = 3e-3
    stderr_rtol: float = 0.25
    min_steps: int = 8

    def __post_init__(self) -> None:
        if self.runs < 2 or self.max_products < 2 * self.runs:
            raise ValueError(f"a budget needs runs >= 2 and max_products >= 2 runs, not {self.runs}, "
                             f"{self.max_products}")

    @property
    def steps_per_run(self) -> int:
        """A run's share of the cap: the most steps one run takes."""
        return self.max_products // self.runs


Estimate = tuple[float | None, float | None]
Statistic = Callable[[np.ndarray], float | None]


def _jackknife(values: np.ndarray, statistic: Statistic) -> float | None:
    """Delete-one jackknife standard error of statistic(run means) over the runs (rows of values)."""
    r = values.shape[0]
    if r < 2:
        return None
    reps = [statistic(np.delete(values, i, 0).mean(0)) for i in range(r)]
    if any(x is None for x in reps):
        return None
    reps_a = np.asarray(reps, dtype=np.float64)
    return float(np.sqrt((r - 1) / r * ((reps_a - reps_a.mean()) ** 2).sum()))


def _estimate(full: np.ndarray, half: np.ndarray, statistic: Statistic) -> Estimate:
    """(statistic of the run means, its standard error): the jackknife over runs combined with the
    quadrature error, estimated by the change from the half-length rules of the same runs."""
    value = statistic(full.mean(0))
    if value is None:
        return None, None
    jack = _jackknife(full, statistic)
    coarse = statistic(half.mean(0))
    if jack is None or coarse is None:
        return value, None
    return value, float(np.hypot(jack, value - coarse))


def _run_sums(runs: list[LanczosRun], trace: float | None, frobenius_sq: float | None, n: int) -> np.ndarray:
    """Per run: est(x), est(x^2), est(x^3), est(|x|), est(|x| 1[x<0]) (see the module docstring)."""
    sums = np.array([[r.moment(1), r.moment(2), r.moment(3), r.quadrature(np.abs),
                      r.quadrature(lambda t: np.abs(t) * (t < 0))] for r in runs])
    if trace is not None:
        # sum|lambda| = tr H + 2 sum_{lambda<0} |lambda|: with tr H exact only the negative part is quadrature
        sums[:, 0] = trace / n
        sums[:, 3] = trace / n + 2 * sums[:, 4]
    if frobenius_sq is not None:
        sums[:, 1] = frobenius_sq / n
    return sums


def _density(runs: list[LanczosRun], grid_size: int = 200, sigma_rel: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed SLQ density: sum over runs and nodes of tau^2 N(t; theta, sigma^2) / n_v."""
    nodes = np.concatenate([r.ritz_values for r in runs])
    weights = np.concatenate([r.weights for r in runs]) / len(runs)
    lo, hi = float(nodes.min()), float(nodes.max())
    sigma = sigma_rel * max(hi - lo, abs(hi), abs(lo), 1e-300)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_size)
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return grid, kernel @ weights


def _rademacher(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=n)


def matrix_free_summary(matvec: MatVec, n: int, n_vectors: int, steps: int, rng: np.random.Generator,
                        definite: bool = False, trace: float | None = None,
                        frobenius_sq: float | None = None) -> dict:
    """A ``hessian_spectra`` row (the summary columns, their standard errors, the extremes and the
    density) from ``n_vectors`` Lanczos runs of exactly ``steps`` steps; see the module docstring.

    trace, frobenius_sq: exact tr H and ||H||_F^2 when the caller has them (their columns then have
    standard error 0); definite: H is positive semi-definite (negative mass 0; Ritz values below 0 are
    round-off and read as 0). ``effective_rank_stderr`` is NULL when the top has not converged."""
    runs = [lanczos(matvec, _rademacher(rng, n), steps) for _ in range(n_vectors)]
    row = _summary(runs, n, definite, trace, frobenius_sq)
    row.pop("_abs_mass"), row.pop("_n")
    return {**row, "stop_reason": "budget"}


def _settled(run: LanczosRun, definite: bool, trace_known: bool, rtol: float) -> bool:
    """Whether a run has met its own targets: both ends converged, its Gauss rule settled."""
    if run.breakdown:
        return True
    if not (run.converged[-1] and run.converged[0]):
        return False
    if definite:
        return True  # |x| = x: every functional used is a polynomial of degree <= 3, exact
    half = run.truncated(run.n_matvec // 2)
    mass = run.quadrature(np.abs)
    moved = [abs(run.quadrature(_negative_part) - half.quadrature(_negative_part))]
    if not trace_known:
        moved.append(abs(mass - half.quadrature(np.abs)))
    return max(moved) <= rtol * mass


def _negative_part(t: np.ndarray) -> np.ndarray:
    return np.abs(t) * (t < 0)


#: (column, its standard error's column, scale of the target: value, row) per estimated summary.
_TARGETS = (
    ("trace", "trace_stderr", lambda x, row: row["_abs_mass"]),
    ("std", "std_stderr", lambda x, row: abs(x)),
    ("skewness", "skewness_stderr", lambda x, row: max(abs(x), 1.0)),
    ("negative_mass", "negative_mass_stderr", lambda x, row: max(x, 0.1)),
    ("effective_rank", "effective_rank_stderr", lambda x, row: abs(x)),
)


def _error_excess(row: dict, rtol: float) -> float | None:
    """max over the summaries of (standard error / its target)^2: the factor by which the runs would
    have to grow for every error to meet its target (errors fall like 1 / sqrt(runs)); <= 1 when
    they all do; None when a summary with a value has no standard error (more runs cannot give one)."""
    worst = 0.0
    for column, se_column, scale in _TARGETS:
        value, se = row[column], row[se_column]
        if value is None:
            continue
        if se is None:
            return None
        # beside the relative target, float64 round-off at the spectrum's scale (a std of 0 has an error
        # of round-off, which no number of runs removes)
        target = rtol * scale(value, row) + 1e-12 * row["_abs_mass"] / row["_n"]
        worst = max(worst, (se / target) ** 2 if target > 0 else (0.0 if se == 0 else np.inf))
    return worst


def _run(matvec: MatVec, n: int, rng: np.random.Generator, budget: LanczosBudget, max_steps: int,
         definite: bool, trace_known: bool) -> tuple[LanczosRun, bool]:
    """One run, continued until it settles or takes max_steps; (run, whether it settled)."""
    process = LanczosProcess(matvec, _rademacher(rng, n), max_steps)
    while not process.done:
        process.advance(TOP_CHECK_EVERY if process.used >= budget.min_steps else budget.min_steps)
        run = process.run()
        if _settled(run, definite, trace_known, budget.quadrature_rtol):
            return run, True
    run = process.run()
    return run, run.breakdown


def adaptive_summary(matvec: MatVec, n: int, rng: np.random.Generator, budget: LanczosBudget,
                     definite: bool = False, trace: float | None = None,
                     frobenius_sq: float | None = None, product_rtol: float = 0.0) -> dict:
    """The row of :func:`matrix_free_summary`, its products spent until the targets of ``budget``
    are met or its cap is reached (module docstring); ``stop_reason`` says which, ``n_hvp`` how many
    products it took, ``lanczos_runs`` how many runs.

    After the first ``budget.runs`` runs, the runs are grown in one batch to the number the largest
    error's excess asks for (errors fall like 1 / sqrt(runs)), as far as the cap allows, and checked
    again. product_rtol: a bound on ||matvec(v) - H v|| / (||H|| ||v||) (the products' rounding,
    :func:`pipeline.curvature.precision.checked_products`): a Ritz value of the computed operator is
    within its residual of one of that operator, itself within this x ||H|| of H's, so the stored
    residuals add product_rtol x max|theta|."""
    runs: list[LanczosRun] = []
    settled: list[bool] = []
    spent = 0
    for k in range(budget.runs):  # the first runs: each may take its share of the cap
        owed = 2 * (budget.runs - k - 1)  # the runs after it need 2 steps each
        run, ok = _run(matvec, n, rng, budget, min(budget.steps_per_run, budget.max_products - spent - owed),
                       definite, trace is not None)
        runs.append(run)
        settled.append(ok)
        spent += run.n_matvec
    row = _summary(runs, n, definite, trace, frobenius_sq, product_rtol)
    while True:
        excess = _error_excess(row, budget.stderr_rtol)
        if excess is not None and excess <= 1:
            break
        mean_length = spent / len(runs)
        affordable = int((budget.max_products - spent) // max(mean_length, 2))
        wanted = len(runs) * (excess - 1) * 1.1 if excess is not None and np.isfinite(excess) else affordable
        batch = min(affordable, max(1, int(np.ceil(wanted))))
        if batch < 1:
            break
        for _ in range(batch):
            run, ok = _run(matvec, n, rng, budget, min(budget.steps_per_run, budget.max_products - spent),
                           definite, trace is not None)
            runs.append(run)
            settled.append(ok)
            spent += run.n_matvec
            if budget.max_products - spent < 2:
                break
        row = _summary(runs, n, definite, trace, frobenius_sq, product_rtol)
    excess = _error_excess(row, budget.stderr_rtol)
    met = all(settled) and excess is not None and excess <= 1
    row.pop("_abs_mass"), row.pop("_n")
    return {**row, "stop_reason": "targets" if met else "budget"}


def _summary(runs: list[LanczosRun], n: int, definite: bool, trace: float | None,
             frobenius_sq: float | None, product_rtol: float = 0.0) -> dict:
    """The row's columns from its runs (any number >= 1, any lengths); product_rtol: see
    :func:`adaptive_summary`."""
    halves = [r.truncated(r.n_matvec // 2) for r in runs]
    full, half = _run_sums(runs, trace, frobenius_sq, n), _run_sums(halves, trace, frobenius_sq, n)
    # skewness from the runs' own m_1, m_2, m_3: their probe errors cancel in it, which exact m_1, m_2
    # would undo (measured: median relative error 0.12 against 0.30 at 8 x 40 on the benchmark blocks)
    raw_full, raw_half = _run_sums(runs, None, None, n), _run_sums(halves, None, None, n)
    top_run = max(runs, key=lambda r: r.ritz_values[-1])
    bottom_run = min(runs, key=lambda r: r.ritz_values[0])
    top, top_res = float(top_run.ritz_values[-1]), float(top_run.residuals[-1])
    bottom, bottom_res = float(bottom_run.ritz_values[0]), float(bottom_run.residuals[0])
    if definite:
        bottom = max(bottom, 0.0)
    scale = max(abs(top), abs(bottom))

    def std(m):
        var = m[1] - m[0] ** 2  # below 1e-12 of m_2 it is the cancellation's round-off: a spectrum of one value
        return float(np.sqrt(var)) if var > 1e-12 * m[1] else 0.0

    def skewness(m):
        sd = std(m)
        return float((m[2] - 3 * m[0] * m[1] + 2 * m[0] ** 3) / sd**3) if sd > 0 else None

    trace_est, trace_se = _estimate(full, half, lambda m: float(n * m[0]))
    std_est, std_se = _estimate(full, half, std)
    skew_est, skew_se = _estimate(raw_full, raw_half, skewness)
    neg_est, neg_se = _estimate(full, half, lambda m: float(m[4] / m[3]) if m[3] > 0 else None)
    rank_est, rank_se = _estimate(full, half, lambda m: float(n * m[3] / scale) if scale > 0 else None)
    rounding = product_rtol * scale  # products that are H v only to this: every residual grows by it
    top_res, bottom_res = top_res + rounding, bottom_res + rounding
    tol = RITZ_RTOL * scale
    if top_res > tol:
        rank_se = None  # the scale, max|theta|, is then only a lower bound on ||H||: no stated error
    elif rank_se is not None and scale > 0:  # the scale is itself known to within the end's residual
        end_res = top_res if abs(top) >= abs(bottom) else bottom_res
        rank_se = float(np.hypot(rank_se, rank_est * end_res / scale))
    if definite:
        neg_est, neg_se = (0.0, 0.0) if scale > 0 else (None, None)
    kept_top = top_run.ritz_values[top_run.residuals + rounding <= tol][-TOP_K:]
    kept_bottom = bottom_run.ritz_values[bottom_run.residuals + rounding <= tol][:TOP_K]
    if definite:
        kept_bottom = np.maximum(kept_bottom, 0.0)
    grid, density = _density(runs)
    return {
        "eigenvalues": np.unique(np.concatenate([kept_bottom, kept_top])),
        "trace": trace if trace is not None else trace_est,
        "trace_stderr": 0.0 if trace is not None else trace_se,
        "top_eigenvalue": top, "top_residual": top_res, "converged": bool(top_res <= tol),
        "bottom_eigenvalue": bottom, "bottom_residual": bottom_res, "bottom_converged": bool(bottom_res <= tol),
        "std": std_est, "std_stderr": 0.0 if trace is not None and frobenius_sq is not None else std_se,
        "skewness": skew_est, "skewness_stderr": skew_se,
        "negative_mass": neg_est, "negative_mass_stderr": neg_se,
        "effective_rank": rank_est, "effective_rank_stderr": rank_se,
        "condition_number": None, "log_abs_det": None, "n_zero": None, "symmetry": None, "bias_share": None,
        "near_zero_fraction": None, "zero_floor": None,
        "density_grid": grid, "density": density, "n_hvp": sum(r.n_matvec for r in runs),
        "lanczos_runs": len(runs), "_abs_mass": float(n * full[:, 3].mean()), "_n": n,
    }
