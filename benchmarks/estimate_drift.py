"""Compare the matrix-free rows of two builds of the same corpus: are the new numbers within their
stated errors of the old ones?

For every ``hessian_spectra`` row that is ``lanczos`` in both databases (same run, step, layer and
kind), each estimated summary's difference is compared with its combined standard error,
z = |new - old| / sqrt(se_new^2 + se_old^2) (summaries exact in both must agree to 1e-9 relative),
and each converged end's difference with the sum of the two residuals (both with a round-off allowance:
1e-9 of the value, 1e-12 of the top eigenvalue). Prints, per summary, the rows
compared, the share within 2 combined standard errors and the largest z (two builds of one corpus draw
their first probes from the same seeded streams, so their estimates are correlated and the differences
smaller than independent ones would be: the check finds a shift or a broken error, not a miscalibrated
one, which tests/test_adaptive_budgets.py tests against exact spectra); per end, the share within the
residuals; and the products spent (old and new, summed) with the new rows' stop reasons and dtypes.
Exit status 1 when an end lies outside its residuals or fewer than 90 % of a summary's rows lie
within 2 standard errors. Exact rows are compared as well: every column but wall time must agree.

    .venv/bin/python benchmarks/estimate_drift.py OLD.duckdb NEW.duckdb
"""

from __future__ import annotations

import argparse
import sys

import duckdb
import numpy as np

SUMMARIES = ("trace", "std", "skewness", "negative_mass", "effective_rank")
EXACT_COLUMNS = ("trace", "top_eigenvalue", "bottom_eigenvalue", "effective_rank", "std", "skewness",
                 "negative_mass", "n_zero", "condition_number")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    con = duckdb.connect()
    con.execute(f"ATTACH '{args.old}' AS old (READ_ONLY)")
    con.execute(f"ATTACH '{args.new}' AS new (READ_ONLY)")
    se = lambda c: "trace_stderr" if c == "trace" else f"{c}_stderr"  # noqa: E731
    cols = ", ".join(f"o.{c} AS o_{c}, n.{c} AS n_{c}, o.{se(c)} AS o_se_{c}, n.{se(c)} AS n_se_{c}" for c in SUMMARIES)
    rows = con.sql(f"""
        SELECT o.method AS o_method, n.method AS n_method, {cols},
               o.top_eigenvalue AS o_top, n.top_eigenvalue AS n_top, o.top_residual AS o_tr, n.top_residual AS n_tr,
               o.converged AS o_c, n.converged AS n_c, o.bottom_eigenvalue AS o_bot, n.bottom_eigenvalue AS n_bot,
               o.bottom_residual AS o_br, n.bottom_residual AS n_br, o.bottom_converged AS o_bc,
               n.bottom_converged AS n_bc, o.n_hvp AS o_hvp, n.n_hvp AS n_hvp, n.stop_reason, n.product_dtype,
               {", ".join(f"o.{c} AS oe_{c}, n.{c} AS ne_{c}" for c in EXACT_COLUMNS)}
        FROM old.hessian_spectra o JOIN new.hessian_spectra n USING (run_id, step, layer_index, kind)
    """).pl()
    failed = False
    lz = rows.filter((rows["o_method"] == "lanczos") & (rows["n_method"] == "lanczos"))
    print(f"{rows.height} rows in both; {lz.height} Lanczos in both")
    for c in SUMMARIES:
        o, n = lz[f"o_{c}"].to_numpy(), lz[f"n_{c}"].to_numpy()
        so, sn = lz[f"o_se_{c}"].to_numpy(), lz[f"n_se_{c}"].to_numpy()
        ok = ~(np.isnan(o.astype(float)) | np.isnan(n.astype(float)) | np.isnan(so.astype(float))
               | np.isnan(sn.astype(float)))
        o, n, so, sn = (x[ok].astype(float) for x in (o, n, so, sn))
        exact = (so == 0) & (sn == 0)
        bad_exact = int(np.sum(exact & (np.abs(n - o) > 1e-9 * np.maximum(np.abs(o), 1e-300))))
        # beside the combined error, float64 round-off of the value itself (1e-9 relative)
        z = np.abs(n - o)[~exact] / (np.hypot(so, sn) + 1e-9 * np.abs(o))[~exact]
        share = float(np.mean(z <= 2)) if z.size else 1.0
        print(f"  {c:15s} {ok.sum():5d} rows ({exact.sum()} exact in both, {bad_exact} of them differ): "
              f"{share:.1%} within 2 combined SE, largest z {z.max() if z.size else 0:.2f}")
        failed |= bad_exact > 0 or share < 0.9
    for end, (v, r, c) in {"top": ("top", "tr", "c"), "bottom": ("bot", "br", "bc")}.items():
        both = lz.filter(lz[f"o_{c}"] & lz[f"n_{c}"])
        gap = (both[f"n_{v}"] - both[f"o_{v}"]).abs().to_numpy()
        # beside the residuals, round-off at the spectral scale (a zero end of a breakdown is +-1e-16)
        bound = (both[f"n_{r}"] + both[f"o_{r}"]).to_numpy() + 1e-12 * both["o_top"].abs().to_numpy()
        within = float(np.mean(gap <= bound)) if both.height else 1.0
        print(f"  {end:6s} {both.height} rows converged in both: {within:.1%} within the two residuals")
        failed |= within < 1.0
    reasons = dict(lz.group_by("stop_reason").len().iter_rows())
    dtypes = dict(lz.group_by("product_dtype").len().iter_rows())
    print(f"products: old {int(lz['o_hvp'].sum())}, new {int(lz['n_hvp'].sum())}; new stop reasons {reasons}, "
          f"dtypes {dtypes}")
    ex = rows.filter(rows["o_method"] != "lanczos")
    differ = 0
    for c in EXACT_COLUMNS:
        o, n = ex[f"oe_{c}"].to_numpy().astype(float), ex[f"ne_{c}"].to_numpy().astype(float)
        both = ~(np.isnan(o) | np.isnan(n))
        differ += int(np.sum(np.abs(n - o)[both] > 1e-9 * np.maximum(np.abs(o[both]), 1e-12)))
        differ += int(np.sum(np.isnan(o) != np.isnan(n)))
    print(f"exact rows: {ex.height}, values differing beyond 1e-9 relative: {differ}")
    failed |= differ > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
