"""Benchmarks of the topology stage; every ratio is to a baseline timed in the same run.

1. h0:    H0 deaths of a layer's neuron cloud (q neurons x d inputs, Gaussian weights) by ripser (the
          reference) and by Prim's minimum spanning tree (the stage's path), q up to 1,024; the whole
          per-layer computation (cloud, deaths, summary) of the stage's path for the 1,024-neuron layer
          against the issue's 1 s bound.
2. stage: the whole topology stage (forced) on a copy of each database, against that corpus's
          extraction time: the sum of its runs' worker seconds (serial time) and that sum over the
          number of workers (wall time with ``--workers``), against the issue's 10% bound.

Threads are pinned (``--threads``, default 2); times are medians of ``--repeats``.

    .venv/bin/python benchmarks/topology.py [--db build/corpus.duckdb --db build/topology.duckdb]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_time  # noqa: E402


def bench_h0(repeats: int) -> list[str]:
    import numpy as np

    from analyses.topology import homology as ph

    lines = ["| layer (q x d) | ripser (ms) | MST (ms) | ripser / MST | max rel. difference |",
             "|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for q, d in ((16, 4), (64, 64), (256, 256), (1024, 256), (1024, 1024)):
        w = rng.normal(size=(q, d)) / np.sqrt(d)
        t_r = median_time(lambda w=w: ph.h0_deaths(w, "ripser"), repeats)
        t_m = median_time(lambda w=w: ph.h0_deaths(w, "mst"), repeats)
        a, b = ph.h0_deaths(w, "ripser"), ph.h0_deaths(w, "mst")
        lines.append(f"| {q} x {d} | {t_r * 1e3:.2f} | {t_m * 1e3:.2f} | {t_r / t_m:.1f}x | "
                     f"{np.max(np.abs(a - b) / b):.1e} |")
    w = rng.normal(size=(1024, 1024)) / 32
    total = median_time(lambda: ph.layer_topology(w), repeats)
    lines.append("")
    lines.append(f"whole layer_topology of a 1,024 x 1,024 layer (stage path): {total:.3f} s "
                 f"({'within' if total <= 1 else 'OVER'} the 1 s bound)")
    return lines


def bench_stage(db_paths: list[Path], repeats: int, workers: int) -> list[str]:
    import duckdb

    from analyses.kit.runner import STAGES, run_stages

    topology = tuple(s for s in STAGES if s.name == "topology")
    lines = ["| database | runs | layer snapshots | topology stage, forced (s) | extraction, serial (s) | "
             f"ratio | extraction on {workers} workers (s) | ratio |", "|---|---|---|---|---|---|---|---|"]
    for db in db_paths:
        if not db.exists():
            lines.append(f"| {db} | missing: build it first | | | | | | |")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "copy.duckdb"
            shutil.copy(db, copy)
            con = duckdb.connect(str(copy), read_only=True)
            runs, serial = con.execute("SELECT count(*), sum(wall_seconds) FROM runs").fetchall()[0]
            n_layers = con.execute("SELECT count(*) FROM weights WHERE tensor = 'linear.weight'").fetchall()[0][0]
            con.close()
            seconds = median_time(lambda c=copy: run_stages(c, ["topology"], force=True, show_progress=False,
                                                            stages=topology), repeats)
        wall = serial / workers
        lines.append(f"| {db} | {runs} | {n_layers:,} | {seconds:.2f} | {serial:.0f} | {seconds / serial:.1%} | "
                     f"{wall:.0f} | {seconds / wall:.1%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, action="append",
                        help="corpus databases to time the stage on (default: build/corpus.duckdb and, when "
                             "built, build/topology.duckdb)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="workers the extraction ran with")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench_topology.txt")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    dbs = args.db or [p for p in (ROOT / "build" / "corpus.duckdb", ROOT / "build" / "topology.duckdb")
                      if p.exists() or p.name == "corpus.duckdb"]
    lines = [f"# Topology: {args.threads} threads, medians of {args.repeats}", "", *bench_h0(args.repeats), "",
             *bench_stage(dbs, args.repeats, args.workers)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
