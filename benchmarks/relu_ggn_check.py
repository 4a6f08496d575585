"""Check: the matrix-free loss rows of a ReLU MLP against its exact Gauss-Newton rows, at any size.

In a piecewise-linear network the output is piecewise linear in one block's weights, so the block's
loss Hessian equals its Gauss-Newton block, H_ii = G_ii (almost everywhere). Above the exact limit
the engine estimates H_ii by Lanczos (standard errors, residuals) and computes G_ii exactly from its
Gram matrix, so every (loss, ggn) pair of a ReLU MLP run is an exact check of the estimator, at the
block sizes of ``configs/scale.toml`` (up to 4.2M parameters). Prints, per model size: the largest
relative gap of the top eigenvalues, and the z-scores (estimate - exact) / stored standard error of
the trace and the std over the rows that carry a standard error.

    .venv/bin/python benchmarks/relu_ggn_check.py [--db build/scale.duckdb]
"""

from __future__ import annotations

import argparse

import duckdb
import numpy as np

PAIRS = """
SELECT r.n_params AS model_params, l.step, l.layer_index, l.n_params,
       abs(l.top_eigenvalue - g.top_eigenvalue) / g.top_eigenvalue AS top_rel,
       (l.trace - g.trace) / nullif(l.trace_stderr, 0) AS z_trace,
       (l.std - g.std) / nullif(l.std_stderr, 0) AS z_std, l.converged
FROM hessian_spectra l
JOIN hessian_spectra g USING (run_id, step, layer_index)
JOIN runs r USING (run_id)
WHERE l.kind = 'loss' AND l.method = 'lanczos' AND g.kind = 'ggn' AND g.method = 'gram'
  AND r.family = 'mlp' AND r.activation = 'relu'
ORDER BY 1, 2, 3
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="build/scale.duckdb")
    args = parser.parse_args()
    with duckdb.connect(args.db, read_only=True) as con:
        rows = con.execute(PAIRS).fetchall()
    if not rows:
        raise SystemExit(f"{args.db}: no Lanczos loss row of a ReLU MLP beside an exact Gauss-Newton row")
    print("| model parameters | pairs | max top rel. gap | rows with SE | median / max abs z, trace | "
          "median / max abs z, std | all converged |")
    print("|---:|---:|---:|---:|---|---|---|")
    sizes = sorted({r[0] for r in rows})
    for size in [*sizes, None]:
        sel = [r for r in rows if size is None or r[0] == size]
        zt = np.abs([r[5] for r in sel if r[5] is not None])
        zs = np.abs([r[6] for r in sel if r[6] is not None])
        label = f"{size:,}" if size is not None else "all"
        print(f"| {label} | {len(sel)} | {max(r[4] for r in sel):.1e} | {zt.size} | "
              f"{np.median(zt):.2f} / {zt.max():.2f} | {np.median(zs):.2f} / {zs.max():.2f} | "
              f"{all(r[7] for r in sel)} |")


if __name__ == "__main__":
    main()
