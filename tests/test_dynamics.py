"""Dynamics stage: spectral distance, exact change points, phase naming, verdicts, and the stage on
small synthetic databases with planted phases and planted concentration (and its reverse)."""

from __future__ import annotations

import itertools
import math

import duckdb
import matplotlib
import numpy as np
import polars as pl
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import dynamics, features  # noqa: E402
from analyses.dynamics import (  # noqa: E402
    PHASES,
    SINGLE_PHASE,
    change_points,
    change_rates,
    name_segments,
    noise_sigma,
    optimal_partitions,
    segment_rates,
    spectral_distance,
)
from snapshot_loader.schema import ddl  # noqa: E402

# --- pure functions -----------------------------------------------------------------------------


def test_spectral_distance_is_scale_free_and_uses_common_top_part():
    rng = np.random.default_rng(0)
    lam = rng.exponential(size=30)
    assert spectral_distance(lam, lam) == 0.0
    for c in (0.5, 2.0, 7.0):
        assert spectral_distance(lam, c * lam) == pytest.approx(abs(c - 1) / (c + 1))
        # scale-free: the same relative change at any scale
        assert spectral_distance(10 * lam, 10 * c * lam) == pytest.approx(spectral_distance(lam, c * lam))
    assert spectral_distance(np.zeros(5), np.zeros(5)) == 0.0
    # incomplete spectra compare the common sorted top part (order of input irrelevant)
    top = np.array([5.0, 4.0, 3.0])
    longer = np.array([-1.0, 3.0, 5.0, 4.0, -2.0])
    assert spectral_distance(top, longer, complete=False) == 0.0
    assert math.isnan(spectral_distance(np.array([np.nan, 1.0]), np.array([1.0, 2.0])))


def test_change_rates_per_efold_of_steps():
    steps = np.array([0, 1, 3, 7])
    d = np.array([0.2, 0.1, 0.3])
    expected = d / np.diff(np.log(steps + 1.0))
    np.testing.assert_allclose(change_rates(steps, d), expected)


def _brute_force_sse(x: np.ndarray, k: int, min_seg: int) -> float:
    n, best = len(x), math.inf
    for taus in itertools.combinations(range(1, n), k):
        bounds = [0, *taus, n]
        if min(b - a for a, b in itertools.pairwise(bounds)) < min_seg:
            continue
        best = min(best, sum(float(((x[a:b] - x[a:b].mean()) ** 2).sum()) for a, b in itertools.pairwise(bounds)))
    return best


def test_optimal_partitions_is_exact():
    rng = np.random.default_rng(3)
    for n in (4, 7, 11):
        x = rng.normal(size=n)
        parts = optimal_partitions(x, max_changes=3, min_segment=2)
        for k in range(4):
            ref = _brute_force_sse(x, k, 2)
            if math.isinf(ref):
                assert k not in parts
            else:
                assert parts[k][0] == pytest.approx(ref, abs=1e-9)
                bounds = [0, *parts[k][1], n]
                got = sum(float(((x[a:b] - x[a:b].mean()) ** 2).sum()) for a, b in itertools.pairwise(bounds))
                assert got == pytest.approx(ref, abs=1e-9)


def _planted(rng: np.random.Generator, n: int, taus: list[int], shift: float = 5.0) -> np.ndarray:
    level, x = 0.0, np.zeros(n)
    for t in taus:
        level += rng.choice([-1.0, 1.0]) * shift
        x[t:] = level
    return x + rng.normal(size=n)


PLANTED = [(10, [5]), (12, [4, 8]), (9, [3, 6]), (20, [5, 10, 15]), (16, [4, 8, 12]), (40, [10, 25, 33]),
           (60, [15, 30, 45]), (30, [12])]


def test_change_points_recover_planted_shifts_within_one_index():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        series = [_planted(rng, n, taus) for n, taus in PLANTED]
        sigma = noise_sigma(series)  # pooled over the batch, as run() pools over runs
        for x, (_, taus) in zip(series, PLANTED, strict=True):
            found = change_points(x, sigma=sigma)
            assert len(found) == len(taus), (seed, taus, found)
            assert all(abs(a - b) <= 1 for a, b in zip(found, taus, strict=True)), (seed, taus, found)


def test_change_points_find_none_in_stationary_series():
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        series = [rng.normal(size=n) * 0.7 + 3.0 for n in (9, 12, 20, 40, 60)]
        sigma = noise_sigma(series)
        for x in series:
            assert change_points(x, sigma=sigma) == [], (seed, len(x))
        # long series also with their own noise estimate
        assert change_points(series[-1]) == []


def test_change_points_short_or_bad_input():
    assert change_points(np.array([])) == []
    assert change_points(np.array([1.0, 5.0, 1.0])) == []
    assert change_points(np.array([1.0, np.nan, 1.0, 2.0, 3.0])) == []


def test_name_segments_rule():
    assert name_segments([0.3]) == [SINGLE_PHASE]
    assert name_segments([1.0, 3.0]) == ["initial", "fast learning"]
    assert name_segments([3.0, 1.0]) == ["fast learning", "fine-tuning"]
    assert name_segments([3.0, 0.5]) == ["fast learning", "saturation"]
    assert name_segments([0.2, 0.5, 3.0, 1.0, 0.1]) == ["initial", "initial", "fast learning", "fine-tuning",
                                                         "saturation"]


def test_planted_four_phase_series_is_named_in_order():
    rng = np.random.default_rng(7)
    levels, length = [0.1, 1.0, 0.4, 0.03], 6
    rates = np.repeat(levels, length) * np.exp(rng.normal(scale=0.15, size=length * 4))
    seg = segment_rates(rates, sigma=0.15)
    assert [p[0] for p in seg.phases] == list(PHASES)
    starts = [a for _, a, _ in seg.phases]
    assert all(abs(s - t) <= 1 for s, t in zip(starts, [0, 6, 12, 18], strict=True))
    # the two-level rise is merged into one "initial" phase, not two
    seg2 = segment_rates(np.repeat([0.01, 0.1, 1.0], 5) * np.exp(rng.normal(scale=0.1, size=15)), sigma=0.1)
    assert [p[0] for p in seg2.phases] == ["initial", "fast learning"]
    assert seg2.segment.max() == 2 and seg2.phase.max() == 1


def test_segment_rates_with_few_intervals():
    for n in range(4):
        seg = segment_rates(np.full(n, 0.3))
        assert [p[0] for p in seg.phases] == [SINGLE_PHASE]


def test_verdicts_planted_and_reversed():
    four = dynamics.four_phase_verdict([list(PHASES)] * 12)
    assert four.verdict == "supported"
    two = dynamics.four_phase_verdict([["initial", "fast learning"]] * 12)
    assert two.verdict == "not supported" and two.effect == 0.0
    # runs too short to resolve four phases are no evidence either way
    short = dynamics.four_phase_verdict([["initial", "fast learning"]] * 12, [9] * 12)
    assert short.verdict == "inconclusive" and "too few to resolve" in short.detail
    rng = np.random.default_rng(0)
    runs = np.repeat([f"r{i}" for i in range(10)], 3)
    delta = -0.4 + 0.1 * rng.normal(size=30)
    planted = dynamics.concentration_verdict(pl.DataFrame({"run_id": runs, "delta": delta}), "loss")
    assert planted.verdict == "supported" and planted.effect < 0 and planted.n == 10
    reversed_ = dynamics.concentration_verdict(pl.DataFrame({"run_id": runs, "delta": -delta}), "loss")
    assert reversed_.verdict == "not supported"
    empty = dynamics.concentration_verdict(pl.DataFrame({"run_id": [], "delta": []},
                                                        schema={"run_id": pl.Utf8, "delta": pl.Float64}), "local")
    assert empty.verdict == "inconclusive"


# --- the stage on synthetic databases -----------------------------------------------------------

STEPS = [int(s) for s in np.unique(np.round(np.geomspace(1, 2000, 17)) - 1)]
N_PARAMS = 12


def _spectra(rng: np.random.Generator, rates: np.ndarray, steps: list[int]) -> list[np.ndarray]:
    """Spectra whose consecutive distances give exactly ``rates`` per e-fold of steps."""
    lam = [np.sort(rng.exponential(size=N_PARAMS))]
    for k, r in enumerate(rates):
        d = r * (math.log1p(steps[k + 1]) - math.log1p(steps[k]))
        eps = 2 * d / (1 - d)
        lam.append(lam[-1] * ((1 + eps) if k % 2 == 0 else 1 / (1 + eps)))
    return lam


def _build_db(planted: bool) -> duckdb.DuckDBPyConnection:
    """8 healthy runs (planted: four-phase rates and falling effective rank; else: constant rate and
    rising effective rank), one diverged run (NaN from its 3rd snapshot), one run with 2 snapshots."""
    con = duckdb.connect()
    for stmt in ddl():
        con.execute(stmt)
    rng = np.random.default_rng(1 if planted else 2)
    runs, ckpts, layers, lstats, hs = [], [], [], [], []
    specs = [(f"run{i}", "complete", STEPS) for i in range(8)]
    specs += [("diverged", "diverged", STEPS), ("short", "complete", [0, 5])]
    n_int = len(STEPS) - 1
    for run_id, status, steps in specs:
        total = steps[-1]
        runs.append({"run_id": run_id, "dataset": "iris", "task": "classification", "family": "mlp",
                     "train_fraction": 1.0, "size": "small", "activation": "tanh", "norm": "none", "optimizer": "adam",
                     "init": "default", "seed": 0, "total_steps": total, "final_step": total, "status": status,
                     "n_params": 2 * N_PARAMS})
        extra = sorted(set(steps) | {total // 3, total // 2})
        for s in extra:
            bad = status == "diverged" and s >= steps[2]
            loss = math.nan if bad else 1.0 / (1 + s)
            ckpts.append({"run_id": run_id, "step": s, "epoch": s / 10, "is_spectral": s in steps,
                          "train_loss": loss, "test_loss": loss * 1.1, "gap_loss": loss * 0.1,
                          "test_accuracy": 0.9, "weight_norm": 1.0 + s / 1000, "grad_norm": 0.1})
        if planted:
            levels = np.repeat([0.05, 0.8, 0.3, 0.01], [4, 4, 4, n_int - 12])
        else:
            levels = np.full(n_int, 0.3)
        for layer in range(2):
            layers.append({"run_id": run_id, "layer_index": layer, "name": f"l{layer}", "in_features": 3,
                           "out_features": 3, "n_params": N_PARAMS, "is_output": layer == 1})
            rates = (levels * np.exp(rng.normal(scale=0.1, size=n_int)))[:len(steps) - 1]
            spectra = _spectra(rng, rates, steps)
            er0 = 0.6 * N_PARAMS
            for k, s in enumerate(steps):
                bad = status == "diverged" and k >= 2
                lstats.append({"run_id": run_id, "step": s, "layer_index": layer, "weight_norm": 1.0,
                               "grad_norm": 0.1, "saturation_fraction": 0.2})
                frac = k / max(len(steps) - 1, 1)
                er = er0 * math.exp((-0.6 if planted else 0.6) * frac + 0.05 * rng.normal())
                for kind in ("loss", "local"):
                    lam = np.full(N_PARAMS, np.nan) if bad else spectra[k] * (1.0 if kind == "loss" else 0.5)
                    hs.append({"run_id": run_id, "step": s, "layer_index": layer, "kind": kind, "method": "exact",
                               "n_params": N_PARAMS, "eigenvalues": lam.tolist(), "trace": float(lam.sum()),
                               "top_eigenvalue": float(lam.max()), "effective_rank": math.nan if bad else er,
                               "std": float(lam.std()), "near_zero_fraction": 0.0, "negative_mass": 0.0,
                               "exactly_zero": False})
    for table, rows in (("runs", runs), ("checkpoints", ckpts), ("layers", layers), ("layer_stats", lstats),
                        ("hessian_spectra", hs)):
        frame = pl.DataFrame(rows)  # noqa: F841
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")
    features.run(con)
    return con


def _verdicts(con) -> dict[str, str]:
    return dict(con.execute("SELECT claim_id, verdict FROM analysis_dynamics_verdicts").fetchall())


def test_stage_on_planted_database():
    con = _build_db(planted=True)
    dynamics.run(con)
    cols = con.execute("DESCRIBE analysis_dynamics_phases").fetchall()
    assert [(c[0], c[1]) for c in cols] == [
        ("run_id", "VARCHAR"), ("phase_index", "INTEGER"), ("phase", "VARCHAR"), ("start_step", "INTEGER"),
        ("end_step", "INTEGER"), ("n_snapshots", "INTEGER"), ("mean_rate", "DOUBLE")]
    seqs = dict(con.execute("""SELECT run_id, list(phase ORDER BY phase_index) FROM analysis_dynamics_phases
                               GROUP BY run_id""").fetchall())
    for i in range(8):
        assert seqs[f"run{i}"] == list(PHASES)
    assert seqs["short"] == [SINGLE_PHASE]
    assert "diverged" in seqs  # its two finite snapshots still give one phase
    # boundaries within one snapshot of the planted ones (intervals 4, 8, 12 start at snapshots 4, 8, 12)
    starts = con.execute("""SELECT list(start_step ORDER BY phase_index) FROM analysis_dynamics_phases
                            WHERE run_id LIKE 'run%' GROUP BY run_id""").fetchall()
    for (s,) in starts:
        for got, k in zip(s[1:], (4, 8, 12), strict=True):
            assert STEPS[k - 1] <= got <= STEPS[k + 1]
    # phases tile each run's steps; every snapshot lies in exactly one phase
    gaps = con.execute("""SELECT count(*) FROM (SELECT start_step, lag(end_step) OVER (PARTITION BY run_id
                          ORDER BY phase_index) AS prev FROM analysis_dynamics_phases) WHERE prev + 1 <> start_step
                       """).fetchall()[0][0]
    assert gaps == 0
    n_snap = con.execute("""SELECT sum(n_snapshots) FROM analysis_dynamics_phases WHERE run_id = 'run0'""").fetchall()
    assert n_snap[0][0] == len(STEPS)
    assert con.execute("SELECT count(*) FROM analysis_dynamics_rates WHERE run_id = 'run0'").fetchall()[0][0] == 16
    # trajectories: run-level metrics, layer-means and per-layer rows, no non-finite values
    q = dict(con.execute("""SELECT quantity || CASE WHEN layer_index IS NULL THEN '' ELSE '@layer' END, count(*)
                            FROM analysis_dynamics WHERE run_id = 'run0' GROUP BY 1""").fetchall())
    assert q["test_loss"] == len(set(STEPS) | {STEPS[-1] // 3, STEPS[-1] // 2})
    assert q["mean_loss_trace"] == len(STEPS) and q["loss_trace@layer"] == 2 * len(STEPS)
    assert con.execute("SELECT count(*) FROM analysis_dynamics WHERE NOT isfinite(value)").fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM analysis_dynamics WHERE run_id = 'diverged' AND quantity = "
                       "'train_loss'").fetchall()[0][0] == 2
    v = _verdicts(con)
    assert v["dynamics.four_phases"] == "supported"
    assert v["dynamics.concentration_loss"] == "supported"
    assert v["dynamics.concentration_local"] == "supported"
    # figures and report render from the tables
    for name, make in dynamics.FIGURES.items():
        fig = make(con)
        assert fig._suptitle is not None and name in dynamics.CAPTIONS
        plt.close(fig)
    rep = dynamics.report(con)
    assert any("8 show the paper's four phases" in p for p in rep["paragraphs"])
    for t in rep["tables"]:
        assert con.execute(t["sql"]).fetchall()


def test_stage_on_reversed_database():
    con = _build_db(planted=False)
    dynamics.run(con)
    seqs = con.execute("""SELECT list(phase ORDER BY phase_index) FROM analysis_dynamics_phases
                          WHERE run_id LIKE 'run%' GROUP BY run_id""").fetchall()
    assert all(s == [SINGLE_PHASE] for (s,) in seqs)
    v = _verdicts(con)
    assert v["dynamics.four_phases"] == "not supported"
    assert v["dynamics.concentration_loss"] == "not supported"


def test_stage_on_tiny_database_is_inconclusive_not_an_error():
    """Three runs with 3 snapshots each: one phase per run, verdicts inconclusive, figures render."""
    con = duckdb.connect()
    for stmt in ddl():
        con.execute(stmt)
    big = _build_db(planted=True)
    for table in ("runs", "checkpoints", "layers", "layer_stats", "hessian_spectra"):
        frame = big.sql(f"SELECT * FROM {table} WHERE run_id IN ('run0', 'run1', 'short')").pl()
        frame = frame.filter(~pl.col("step").is_in(STEPS[3:])) if "step" in frame.columns else frame  # noqa: F841
        con.execute(f"INSERT INTO {table} SELECT * FROM frame")
    features.run(con)
    dynamics.run(con)
    assert con.execute("SELECT count(DISTINCT phase), min(phase) FROM analysis_dynamics_phases").fetchall() == [
        (1, SINGLE_PHASE)]
    v = _verdicts(con)
    assert v["dynamics.four_phases"] == "inconclusive"
    assert v["dynamics.concentration_loss"] == "inconclusive"
    for make in dynamics.FIGURES.values():
        plt.close(make(con))
    assert dynamics.report(con)["paragraphs"]
