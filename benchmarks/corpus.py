"""Benchmark: the whole `make report` pipeline on a config, with 1 and with 2 workers.

For each worker count, in a fresh temporary build folder: wall time of extract, ingest, analyze
and report (run as `python -m pipeline all`), the peak resident memory of the whole process tree
(sampled every 50 ms: coordinator + workers + manager), the database and shard sizes, and the
median extraction seconds per run and per spectral snapshot from the tables the extractor stores.
The 2-worker time is reported as a ratio against the 1-worker baseline measured in the same run.

    .venv/bin/python benchmarks/corpus.py [--config configs/default.toml] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
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

from benchmarks.timing import tree_rss  # noqa: E402


def measure(config: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        tmp = Path(tmp)
        db = tmp / "corpus.duckdb"
        cmd = [sys.executable, "-m", "pipeline", "all", "--config", str(config), "--db", str(db),
               "--shards", str(tmp / "shards"), "--out", str(tmp / "report"), "--workers", str(workers), "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        peak = 0
        ps = psutil.Process(proc.pid)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                try:
                    peak = max(peak, tree_rss(ps))
                except psutil.Error:
                    pass
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"pipeline failed ({proc.returncode}): {err.strip().splitlines()[-1]}")
        con = duckdb.connect(str(db), read_only=True)
        runs = con.execute("SELECT count(*), median(wall_seconds), sum(wall_seconds) FROM runs").fetchall()[0]
        spectral = con.execute("SELECT median(seconds), count(*) FROM timings WHERE what = 'spectral'").fetchall()[0]
        con.close()
        shard_bytes = sum(f.stat().st_size for f in (tmp / "shards").rglob("*") if f.is_file())
        return {"workers": workers, "wall_s": wall, "peak_rss_mb": peak / 2**20, "db_mb": db.stat().st_size / 2**20,
                "shards_mb": shard_bytes / 2**20, "runs": runs[0], "median_run_s": runs[1],
                "median_spectral_snapshot_s": spectral[0], "spectral_snapshots": spectral[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    results = [measure(args.config, w) for w in args.workers]
    base = results[0]["wall_s"]
    print(f"config: {args.config.name}, {results[0]['runs']} runs, {os.cpu_count()} cores")
    print("| workers | wall (s) | speed-up vs 1st | peak RSS, tree (MB) | DB (MB) | shards (MB) "
          "| median run (s) | median spectral snapshot (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {base / r['wall_s']:.2f}x | {r['peak_rss_mb']:.0f} "
              f"| {r['db_mb']:.1f} | {r['shards_mb']:.1f} | {r['median_run_s']:.2f} "
              f"| {r['median_spectral_snapshot_s']:.4f} |")
    print(f"spectral snapshots: {results[0]['spectral_snapshots']}; "
          f"median of {statistics.median(r['wall_s'] for r in results):.1f} s over worker counts")


if __name__ == "__main__":
    main()
