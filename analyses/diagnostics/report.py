"""The diagnostics stage's report text and tables, from its tables."""

from __future__ import annotations

import duckdb


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Sentences from the findings and normalization tables, and the tables the report shows."""
    n_runs, n_snap = con.execute("SELECT count(DISTINCT run_id), count(DISTINCT (run_id, step)) "
                                 "FROM analysis_features_layer").fetchall()[0]
    total, runs_hit = con.execute("SELECT count(*), count(DISTINCT run_id) FROM findings").fetchall()[0]
    by_rule = con.execute("""SELECT rule, sum(n_findings)::BIGINT, sum(n_findings) FILTER (WHERE severity = 'critical')
                             FROM analysis_diagnostics_summary GROUP BY rule ORDER BY 2 DESC, rule""").fetchall()
    fired = [f"{rule} {n} ({crit or 0} critical)" for rule, n, crit in by_rule if n]
    silent = [rule for rule, n, _ in by_rule if not n]
    paragraphs = [f"The rules produced {total} findings on {runs_hit} of {n_runs} runs ({n_snap} spectral "
                  f"snapshots): " + (", ".join(fired) if fired else "none") + "."]
    if silent:
        paragraphs.append("Rules that never fired on this corpus: " + ", ".join(silent) + ".")
    norm = con.execute("""SELECT count(*), count(*) FILTER (WHERE difference < 0), avg(difference)
                          FROM analysis_diagnostics_normalization WHERE metric = 'saturation_fraction'""").fetchall()[0]
    if norm[0]:
        paragraphs.append(f"Of {norm[0]} normalized runs with an unnormalized twin, {norm[1]} have a lower mean "
                          f"hidden-layer saturation than their twin (mean difference {norm[2]:.3g}).")
    else:
        paragraphs.append("No run with a normalization layer has an unnormalized twin in this corpus, so the "
                          "normalization comparison is empty.")
    return {
        "paragraphs": paragraphs,
        "tables": [
            {"caption": "Findings per rule and severity, with the thresholds",
             "sql": "SELECT * FROM analysis_diagnostics_summary ORDER BY rule, severity"},
            {"caption": "Normalization against the unnormalized twin (run means over hidden layers)",
             "sql": """SELECT dataset, norm, metric, round(value_with_norm, 4) AS with_norm,
                              round(value_without, 4) AS without, round(difference, 4) AS difference
                       FROM analysis_diagnostics_normalization ORDER BY dataset, norm, metric LIMIT 60"""},
            {"caption": "Critical findings (first 40)",
             "sql": """SELECT f.run_id, r.dataset, r.size, r.activation, f.step, f.layer_index, f.rule, f.message
                       FROM findings f JOIN runs r USING (run_id) WHERE f.severity = 'critical'
                       ORDER BY f.rule, f.run_id, f.step, f.layer_index LIMIT 40"""},
        ],
    }
