"""Benchmark: extraction throughput by executor, peak memory, and DuckDB latency at paper scale.

1. Runs per minute of ``pipeline extract`` on one plan (:data:`PLAN`, 48 runs), each executor in a
   fresh shard folder, in one invocation: the process pool with 1 worker (the baseline), with 2
   workers, and a 2-worker Dask ``LocalCluster``. Wall time includes start-up (imports, spawning
   workers), as a user sees it; the extraction seconds the command itself reports (after the
   coordinator's own imports) are shown beside it. Peak resident memory of the whole process tree
   (coordinator, workers, Dask nannies and scheduler) is sampled every 50 ms. Medians over ``--repeats``.
2. DuckDB latency of the report's heaviest queries on a corpus grown to paper scale and beyond with
   synthetic rows: every run of ``--source-db`` copied under new run ids until the corpus holds
   ``--snapshots`` spectral snapshots (the copies are real rows, renamed, so the value distributions
   are real; the corpus is synthetic in that runs repeat). Queries: building the feature tables
   (``analyses.features.run``, the widest join), loading one run's weights (what topology does per
   run), the report's overview summary, and a GROUP BY over every Hessian spectrum.

    .venv/bin/python benchmarks/scale.py [--repeats 2] [--source-db build/corpus.duckdb]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import median_time, tree_rss  # noqa: E402
from snapshot_loader.schema import SHARD_TABLES  # noqa: E402

PLAN = """
[corpus]
name = "scale"
[run]
epochs = 30
lr = 0.01
metric_checkpoints = 20
spectral_snapshots = 4
probe_size = 128
widths = [48, 48]
[[study]]
name = "s"
[study.grid]
dataset = ["iris", "wine", "breast_cancer", "diabetes", "penguins", "kyphosis", "pima", "titanic"]
seed = [0, 1, 2, 3, 4, 5]
"""

EXECUTORS = [("process, 1 worker", ["--workers", "1"]), ("process, 2 workers", ["--workers", "2"]),
             ("dask-local, 2 workers", ["--executor", "dask-local", "--workers", "2"])]



def extract_once(config: Path, args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, the command's own extraction seconds, peak tree RSS bytes) of one extraction
    into a fresh shard folder."""
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "extract", "--config", str(config),
                                 "--shards", str(Path(tmp) / "shards"), "--quiet", *args], cwd=ROOT, env=env,
                                stderr=subprocess.PIPE, text=True)
        peak, root = [0], psutil.Process(proc.pid)

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss(root))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        seconds = time.perf_counter() - t0
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"extract {' '.join(args)} failed:\n{err}")
        own = float(re.search(r"failed in ([0-9.]+) s", err).group(1))
        return seconds, own, peak[0]


def grow(source: Path, target: Path, snapshots: int) -> tuple[int, int]:
    """Copy ``source`` to ``target`` and repeat its runs under new ids until ``snapshots`` spectral
    snapshots are stored. Returns (runs, spectral snapshots)."""
    shutil.copy(source, target)
    con = duckdb.connect(str(target))
    try:
        base = con.execute("SELECT count(*) FROM checkpoints WHERE is_spectral").fetchall()[0][0]
        copies = max(1, -(-snapshots // base))
        for k in range(1, copies):
            con.execute("BEGIN TRANSACTION")
            for table in SHARD_TABLES:
                if table == "datasets":
                    continue
                con.execute(f"INSERT INTO {table} SELECT * REPLACE (run_id || '-copy{k}' AS run_id) FROM {table} "
                            "WHERE run_id NOT LIKE '%-copy%'")
            con.execute("COMMIT")
        con.execute("CHECKPOINT")
        return con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM checkpoints "
                           "WHERE is_spectral)").fetchall()[0]
    finally:
        con.close()


def query_latencies(db: Path, repeats: int) -> dict[str, float]:
    from analyses import features

    con = duckdb.connect(str(db))
    try:
        run_id = con.execute("SELECT run_id FROM runs ORDER BY run_id LIMIT 1").fetchall()[0][0]
        queries = {
            "features tables (analyses.features.run)": lambda: features.STAGE.execute(con),
            "one run's weights (topology, per run)": lambda: con.execute(
                'SELECT step, layer_index, tensor, shape, "values" FROM weights WHERE run_id = ? '
                "ORDER BY step, layer_index", [run_id]).fetchall(),
            "overview summary (report)": lambda: con.execute(
                "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM checkpoints WHERE is_spectral), "
                "(SELECT count(*) FROM layer_stats), (SELECT sum(wall_seconds) FROM runs)").fetchall(),
            "Hessian spectra by kind and activation": lambda: con.execute(
                "SELECT kind, activation, count(*), avg(effective_rank), median(negative_mass) "
                "FROM hessian_spectra JOIN runs USING (run_id) GROUP BY ALL").fetchall(),
        }
        return {name: median_time(fn, repeats) for name, fn in queries.items()}
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--source-db", type=Path, default=ROOT / "build" / "corpus.duckdb")
    parser.add_argument("--snapshots", type=int, nargs="+", default=[1_500, 15_000],
                        help="corpus sizes (spectral snapshots) for the query latencies")
    parser.add_argument("--skip-extract", action="store_true")
    args = parser.parse_args()
    (ROOT / "build").mkdir(exist_ok=True)
    print(f"scale benchmark: {os.cpu_count()} cores, {args.repeats} repeats, medians")

    if not args.skip_extract:
        with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
            config = Path(tmp) / "scale.toml"
            config.write_text(PLAN)
            from pipeline.config import load_config

            n_runs = len(load_config(config).runs())
            results = {}
            for _ in range(args.repeats):  # interleaved, so drifting load hits every executor alike
                for name, extra in EXECUTORS:
                    results.setdefault(name, []).append(extract_once(config, extra))
            base_wall = statistics.median(r[0] for r in results[EXECUTORS[0][0]])
            base_own = statistics.median(r[1] for r in results[EXECUTORS[0][0]])
            print(f"\n{n_runs} runs per extraction")
            print("\n| executor | wall s | runs / min | vs 1 worker | extraction s (after start-up) | runs / min "
                  "| vs 1 worker | peak RSS, process tree |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for name, rows in results.items():
                wall = statistics.median(r[0] for r in rows)
                own = statistics.median(r[1] for r in rows)
                peak = max(r[2] for r in rows)
                print(f"| {name} | {wall:.1f} | {60 * n_runs / wall:.1f} | {base_wall / wall:.2f}x | {own:.1f} | "
                      f"{60 * n_runs / own:.1f} | {base_own / own:.2f}x | {peak / 2**20:.0f} MiB |")

    if not args.source_db.is_file():
        raise SystemExit(f"{args.source_db}: no corpus to grow (run `make report` first)")
    print(f"\nDuckDB latency, corpus grown from {args.source_db.name} with synthetic copies of its runs")
    print("\n| spectral snapshots | runs | file MB | query | median s |")
    print("|---:|---:|---:|---|---:|")
    for n in args.snapshots:
        with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
            db = Path(tmp) / "grown.duckdb"
            runs, snaps = grow(args.source_db, db, n)
            size = db.stat().st_size / 2**20
            for name, seconds in query_latencies(db, args.repeats).items():
                print(f"| {snaps:,} | {runs:,} | {size:.0f} | {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
