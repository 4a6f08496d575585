"""Ingest of a shard store into a new DuckDB file: batched transactions against one per run.

``snapshot_loader.ingest`` inserts up to ``BATCH_RUNS`` runs per transaction (one INSERT per table
over the batch's shards concatenated). The baseline is the same code with ``BATCH_RUNS = 1``: one
transaction, one INSERT per table and one commit per run, as ingest did before batching. Both load
the same shards into a fresh database, timed in the same process; the two databases are then
compared table by table (row counts and an order-free sum of row hashes, every database of every
repeat), so the speed-up is shown not to change what is stored; it does not compare with ingest as
it was before batching, only with this code at one run per transaction.

Run after ``make report`` (which writes ``build/shards``):

    .venv/bin/python benchmarks/ingest.py [--shards build/shards] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from snapshot_loader import ingest  # noqa: E402
from snapshot_loader.schema import SHARD_TABLES  # noqa: E402


def timed_ingest(shards: Path, db: Path, batch_runs: int) -> tuple[float, int]:
    """Seconds to ingest every shard of ``shards`` into the new file ``db``, and the runs ingested."""
    saved = ingest.BATCH_RUNS
    ingest.BATCH_RUNS = batch_runs
    try:
        t = time.perf_counter()
        report = ingest.ingest_shards(db, shards)
        seconds = time.perf_counter() - t
    finally:
        ingest.BATCH_RUNS = saved
    if report.errors or report.refused:
        raise SystemExit(f"{shards}: {len(report.errors)} corrupt and {len(report.refused)} refused shards")
    return seconds, len(report.ingested)


def table_digests(db: Path) -> dict[str, tuple[int, int]]:
    """(rows, order-free sum of the hashes of all rows) of every shard table in ``db``."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*), coalesce(sum(hash(x)::HUGEINT), 0) FROM {t} AS x").fetchone()
                for t in SHARD_TABLES}
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=ROOT / "build" / "shards")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.shards.is_dir():
        raise SystemExit(f"{args.shards}: no shard store (run `make report` first)")
    if args.repeats < 1:
        raise SystemExit(f"--repeats: must be at least 1, got {args.repeats}")
    if ingest.BATCH_RUNS == 1:
        raise SystemExit("snapshot_loader.ingest.BATCH_RUNS is 1: there is no batching to compare")

    times: dict[int, list[float]] = {1: [], ingest.BATCH_RUNS: []}
    digests: set[tuple] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for batch_runs in times:  # alternate, so contention falls on both alike
                db = Path(tmp) / f"b{batch_runs}-{r}.duckdb"
                seconds, runs = timed_ingest(args.shards, db, batch_runs)
                times[batch_runs].append(seconds)
                digests.add(tuple(sorted(table_digests(db).items())))  # every database, every repeat
                db.unlink()
    same = len(digests) == 1
    base, batched = (statistics.median(times[b]) for b in times)
    print(f"{runs} runs from {args.shards}, medians of {args.repeats}")
    print("| transaction per | ingest (s) | ratio to one per run |")
    print("|---|---|---|")
    print(f"| run (BATCH_RUNS = 1, baseline) | {base:.1f} | 1.0x |")
    print(f"| batch (BATCH_RUNS = {ingest.BATCH_RUNS}) | {batched:.1f} | {base / batched:.1f}x faster |")
    print(f"tables identical in all {2 * args.repeats} databases (rows and row hashes, {len(SHARD_TABLES)} tables): "
          f"{'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
