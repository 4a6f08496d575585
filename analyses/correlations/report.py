"""The correlation stage's report text: how many correlations survive correction, and the strongest."""

from __future__ import annotations

import duckdb

from analyses.correlations.families import ALPHA


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences: how many correlations survive correction, and the strongest ones."""
    paragraphs = []
    for task, n_all, n_fin, n_sig in con.execute("""
            SELECT task, count(*), count(r), count(*) FILTER (WHERE significant)
            FROM analysis_correlations WHERE phase = 'all' GROUP BY task ORDER BY task""").fetchall():
        top = con.execute("""
            SELECT feature, metric, r, p_adjusted FROM analysis_correlations
            WHERE phase = 'all' AND task = ? AND r IS NOT NULL ORDER BY abs(r) DESC LIMIT 3""", [task]).fetchall()
        strongest = "; ".join(f"{f} with {m} (r = {r:.2f}, adjusted p = {p:.2g})" for f, m, r, p in top)
        paragraphs.append(
            f"{task.capitalize()}, all snapshots: {n_fin} of {n_all} feature-metric correlations could be "
            f"computed and {n_sig} survive Benjamini-Hochberg correction at {ALPHA}"
            + (f". Strongest: {strongest}." if top else "."))
    phases = con.execute("""
        SELECT task, phase, count(*) FILTER (WHERE significant), count(r) FROM analysis_correlations
        WHERE phase <> 'all' GROUP BY ALL ORDER BY task, phase""").fetchall()
    if phases:
        paragraphs.append("By phase, significant / computed: " + "; ".join(
            f"{t} {p}: {s} / {n}" for t, p, s, n in phases) + ".")
    tables = [
        {"caption": "The 40 strongest correlations over all snapshots (within-data-set r, BH-adjusted p)",
         "sql": """SELECT task, feature, feature_group, metric, n, n_runs, round(r, 3) AS r,
                          round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high, p_adjusted, significant
                   FROM analysis_correlations WHERE phase = 'all' AND r IS NOT NULL
                   ORDER BY abs(r) DESC LIMIT 40"""},
        {"caption": "Significant correlations per task and phase",
         "sql": """SELECT task, phase, count(r) AS computed, count(*) FILTER (WHERE significant) AS significant,
                          round(max(abs(r)), 3) AS max_abs_r, max(n) AS max_n
                   FROM analysis_correlations GROUP BY ALL ORDER BY task, phase"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
