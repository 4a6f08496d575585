"""Dynamics stage on small synthetic databases with planted phases and planted concentration (and its
reverse), and on a tiny one; figures and report render from the tables."""

from __future__ import annotations

import math

import duckdb
import matplotlib
import numpy as np
import polars as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import features  # noqa: E402
from analyses.dynamics import STAGE  # noqa: E402
from analyses.dynamics.phases import PHASES, SINGLE_PHASE  # noqa: E402
from snapshot_loader.schema import ddl  # noqa: E402

STEPS = [int(s) for s in np.unique(np.round(np.geomspace(1, 2000, 17)) - 1)]
N_PARAMS = 12


def _spectra(rng: np.random.Generator, rates: np.ndarray, steps: list[int]) -> list[np.ndarray]:
    """Spectra whose consecutive scale-free (shape) distances give exactly ``rates`` per e-fold of steps:
    a top eigenvalue 1 and m - 1 = N_PARAMS - 1 equal others at p_k in [-1, 1], moved by
    |Δp| = 2 d sqrt(m / (m - 1)) (then d = |Δp| sqrt(m - 1) / (2 sqrt(m))), each snapshot multiplied by a
    random positive scale, which the distance ignores."""
    m = N_PARAMS
    p, out = -0.5, []
    for k in range(len(rates) + 1):
        out.append(np.exp(rng.normal()) * np.array([1.0] + [p] * (m - 1)))
        if k == len(rates):
            break
        d = rates[k] * (math.log1p(steps[k + 1]) - math.log1p(steps[k]))
        step = 2 * d * math.sqrt(m / (m - 1))
        p = p + step if p <= 0 else p - step  # towards the farther end of [-1, 1]
        assert -1 <= p <= 1
    return out


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
    features.STAGE.execute(con)
    return con


def _verdicts(con) -> dict[str, str]:
    return dict(con.execute("SELECT claim_id, verdict FROM analysis_dynamics_verdicts").fetchall())


def test_stage_on_planted_database():
    con = _build_db(planted=True)
    STAGE.execute(con)
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
    assert v["dynamics.rise_then_fall"] == "supported"
    assert con.execute("SELECT count(*) FROM analysis_dynamics_rise_fall").fetchall()[0][0] == 8
    assert v["dynamics.concentration_loss"] == "supported"
    assert v["dynamics.concentration_local"] == "supported"
    # figures and report render from the tables
    for fig in STAGE.figures:
        f = fig.draw(con)
        assert f._suptitle is not None and fig.caption
        plt.close(f)
    rep = STAGE.report(con)
    assert any("8 show the paper's four phases" in p for p in rep["paragraphs"])
    for t in rep["tables"]:
        assert con.execute(t["sql"]).fetchall()


def test_stage_on_reversed_database():
    con = _build_db(planted=False)
    STAGE.execute(con)
    seqs = con.execute("""SELECT list(phase ORDER BY phase_index) FROM analysis_dynamics_phases
                          WHERE run_id LIKE 'run%' GROUP BY run_id""").fetchall()
    assert all(s == [SINGLE_PHASE] for (s,) in seqs)
    v = _verdicts(con)
    assert v["dynamics.four_phases"] == "not supported"
    assert v["dynamics.rise_then_fall"] in ("not supported", "inconclusive")
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
    features.STAGE.execute(con)
    STAGE.execute(con)
    assert con.execute("SELECT count(DISTINCT phase), min(phase) FROM analysis_dynamics_phases").fetchall() == [
        (1, SINGLE_PHASE)]
    v = _verdicts(con)
    assert v["dynamics.four_phases"] == "inconclusive"
    assert v["dynamics.concentration_loss"] == "inconclusive"
    for fig in STAGE.figures:
        plt.close(fig.draw(con))
    assert STAGE.report(con)["paragraphs"]
