"""Check: how the exact Gauss-Newton rows of a database move under an older zero-floor count.

Shard version 7 changed the count of the floor tau = n_floor eps max|lambda| on the p x p route of
the exact Gauss-Newton block (p <= N m') from p + N to the terms actually summed into an entry
(``floor_count()``: p + N + m' through the MLP's Kronecker form, p + N m' from an explicit Jacobian).
For every such row stored in the database this recomputes n_zero, the condition number and
log|det| from its stored eigenvalues with the old count p + N, and counts by family the rows whose
values are the same, turn NULL or back (the clear-gap rule), or change value.

    .venv/bin/python benchmarks/zero_floor_counts.py [--db build/corpus.duckdb]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.curvature.spectral_summary import spectral_summary  # noqa: E402


def _same(a: float | None, b: float | None) -> bool:
    return (a is None) == (b is None) and (a is None or math.isclose(a, b, rel_tol=1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="build/corpus.duckdb")
    args = parser.parse_args()
    with duckdb.connect(args.db, read_only=True) as con:
        rows = con.execute("""
            SELECT r.family, h.n_params, h.n_probe, h.eigenvalues, h.n_zero, h.condition_number, h.log_abs_det
            FROM hessian_spectra h JOIN runs r USING (run_id)
            WHERE h.kind = 'ggn' AND h.method = 'gram' AND len(h.eigenvalues) = h.n_params""").fetchall()
    counts: Counter = Counter()
    for family, p, n, eigenvalues, n_zero, condition, log_det in rows:
        old = spectral_summary(np.asarray(eigenvalues), n_floor=p + n)
        if old.n_zero == n_zero and _same(old.condition_number, condition) and _same(old.log_abs_det, log_det):
            counts[family, "same"] += 1
        elif (old.n_zero is None) != (n_zero is None):
            counts[family, "NULL or back"] += 1
        else:
            counts[family, "value changed"] += 1
    print(f"{args.db}: {len(rows)} exact p x p Gauss-Newton rows, old count p + N against the stored floor")
    print("| family | same | NULL or back | value changed |\n|---|---:|---:|---:|")
    for family in sorted({f for f, _ in counts}):
        print(f"| {family} | {counts[family, 'same']} | {counts[family, 'NULL or back']} | "
              f"{counts[family, 'value changed']} |")


if __name__ == "__main__":
    main()
