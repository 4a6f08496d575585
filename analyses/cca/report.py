"""The CCA stage's report text: in-sample against held-out first canonical correlation, and the
spectral block against the ln-step baseline on each design."""

from __future__ import annotations

import duckdb

from analyses.kit.presentation import fmt_number as _f


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences: in-sample vs held-out first canonical correlation and the Wilks test."""
    paragraphs = []
    rows = con.execute("""
        SELECT c.task, c.canonical_correlation, c.p_value, c.n, c.n_runs, c.n_datasets,
               (SELECT count(*) FROM analysis_cca c2 WHERE c2.task = c.task AND c2.p_value < 0.05),
               h.mean_r, h.min_r, h.max_r, h.k, h.grouped_by,
               (SELECT count(*) FROM analysis_cca_loadings l WHERE l.task = c.task AND l.component = 1
                AND l.block = 'X'),
               (SELECT count(*) FROM analysis_cca_loadings l WHERE l.task = c.task AND l.component = 1
                AND l.block = 'Y')
        FROM analysis_cca c
        LEFT JOIN (SELECT task, avg(heldout_correlation) AS mean_r, min(heldout_correlation) AS min_r,
                          max(heldout_correlation) AS max_r, count(heldout_correlation) AS k,
                          any_value(grouped_by) AS grouped_by
                   FROM analysis_cca_heldout WHERE x_block = 'spectral' GROUP BY task) h USING (task)
        WHERE c.component = 1 OR c.component IS NULL ORDER BY c.task""").fetchall()
    for task, r1, p1, n, n_runs, n_ds, n_sig, mr, lo, hi, k, by, px, qy in rows:
        if r1 is None:
            paragraphs.append(f"{task.capitalize()}: no CCA on the verdict's design ({n} last snapshots of {n_runs} "
                              f"runs in {n_ds} data sets are too few for the blocks).")
            continue
        text = (f"{task.capitalize()}: {px} spectral features against {qy} quality metrics (no loss-defined ones) "
                f"over the last snapshots of {n_runs} runs ({n} rows, {n_ds} data sets). In-sample first "
                f"canonical correlation {r1:.2f} (Wilks p = {p1:.2g}; "
                f"{n_sig} of the components significant at 0.05, rows treated as independent).")
        if mr is not None:
            text += (f" Held out by {by}, the first canonical correlation averages {mr:.2f} (arithmetic mean) "
                     f"over {k} folds (range {lo:.2f} to {hi:.2f}): in-sample exceeds it by {r1 - mr:.2f}.")
        else:
            text += " No held-out fold could be scored."
        paragraphs.append(text)
    for task, design, by, n, n_runs, r, lo, hi, t, tlo, thi, d, dlo, dhi in con.execute("""
            SELECT task, design, grouped_by, n, n_runs, spectral_r, spectral_low, spectral_high, time_r, time_low,
                   time_high, difference, difference_low, difference_high
            FROM analysis_cca_designs WHERE spectral_r IS NOT NULL ORDER BY task, is_verdict, design""").fetchall():
        head = (f"{task.capitalize()}, {design} ({n} rows of {n_runs} runs, folds by {by}): held-out first canonical "
                f"correlation of the spectral block {_f(r)} [{_f(lo)}, {_f(hi)}]")
        tail = (f", of ln(1 + step) alone {_f(t)} [{_f(tlo)}, {_f(thi)}]; difference {_f(d)} [{_f(dlo)}, "
                f"{_f(dhi)}] (two-level bootstrap)." if t is not None else
                " (two-level bootstrap; both blocks residualized on ln(1 + step) within data set: no baseline).")
        paragraphs.append(head + tail)
    tables = [
        {"caption": "Spectral features against training time (ln(1 + step) alone), held out, per design; the "
                    "verdict rests on the last-snapshot design",
         "sql": """SELECT task, design, grouped_by, n, n_runs, round(spectral_r, 3) AS spectral_r,
                          round(spectral_low, 3) AS low, round(spectral_high, 3) AS high,
                          round(time_r, 3) AS time_r, round(time_low, 3) AS time_low, round(time_high, 3) AS time_high,
                          round(difference, 3) AS difference, round(difference_low, 3) AS diff_low,
                          round(difference_high, 3) AS diff_high, is_verdict
                   FROM analysis_cca_designs ORDER BY task, is_verdict, design"""},
        {"caption": "Canonical correlations and Wilks' lambda tests per task",
         "sql": """SELECT task, component, round(canonical_correlation, 3) AS rho, round(wilks_lambda, 4) AS wilks,
                          round(f_stat, 2) AS F, round(df_num, 1) AS df_num, round(df_den, 1) AS df_den, p_value,
                          n, n_runs FROM analysis_cca ORDER BY task, component"""},
        {"caption": "Held-out first canonical correlation per fold (x_block: the spectral features, or ln_step alone)",
         "sql": """SELECT task, x_block, fold, grouped_by, test_groups, n_train, n_test,
                          round(heldout_correlation, 3) AS heldout_r FROM analysis_cca_heldout
                   ORDER BY task, x_block DESC, fold"""},
        {"caption": "Loadings on the first canonical pair",
         "sql": """SELECT task, block, variable, round(loading, 3) AS loading FROM analysis_cca_loadings
                   WHERE component = 1 ORDER BY task, block, abs(loading) DESC"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
