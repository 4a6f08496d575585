"""The dynamics stage's report text: phases per run, phase starts, the segmentation's parameters, and
the phase tables."""

from __future__ import annotations

from collections import Counter

import duckdb

from analyses.dynamics.phases import PHASES
from analyses.dynamics.segmentation import MAX_CHANGES, MIN_SEGMENT, PENALTY_C


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Sentences from the phase and rate tables, and the phases-per-run table."""
    per_run = con.execute("""
        SELECT run_id, count(*) AS n, string_agg(phase, ' → ' ORDER BY phase_index) AS seq
        FROM analysis_dynamics_phases GROUP BY run_id""").fetchall()
    paragraphs = []
    if per_run:
        counts = Counter(n for _, n, _ in per_run)
        full = sum(seq == " → ".join(PHASES) for _, _, seq in per_run)
        dist = "; ".join(f"{counts[k]} with {k} phase{'s' if k > 1 else ''}" for k in sorted(counts))
        paragraphs.append(f"Of {len(per_run)} runs with spectral snapshots, {dist}; {full} show the paper's "
                          f"four phases in order (initial, fast learning, fine-tuning, saturation).")
        seqs = Counter(seq for _, _, seq in per_run).most_common(3)
        paragraphs.append("Most common phase sequences: " + "; ".join(f"{s} ({c} runs)" for s, c in seqs) + ".")
        starts = con.execute("""
            SELECT p.phase, count(*), median(p.start_step::DOUBLE / greatest(r.total_steps, 1))
            FROM analysis_dynamics_phases p JOIN runs r USING (run_id)
            WHERE p.phase_index > 0 GROUP BY p.phase ORDER BY min(p.phase_index), p.phase""").fetchall()
        if starts:
            paragraphs.append("Median start of each phase as a fraction of training (runs where it is not "
                              "the first phase): " + "; ".join(f"{ph} {m:.2f} (n = {n})" for ph, n, m in starts)
                              + ".")
        rate = con.execute("""SELECT any_value(noise_sigma), any_value(penalty), count(*),
                                     count(DISTINCT run_id) FROM analysis_dynamics_rates""").fetchall()[0]
        if rate[2]:
            paragraphs.append(f"The segmentation used {rate[2]} rate intervals of {rate[3]} runs; noise scale of "
                              f"the log rate σ = {rate[0]:.3g} (pooled MAD of first differences), penalty "
                              f"{PENALTY_C:g}·σ²·ln n per change point, at most {MAX_CHANGES} change points, "
                              f"segments of at least {MIN_SEGMENT} intervals."
                              if rate[0] is not None else
                              f"The segmentation used {rate[2]} rate intervals of {rate[3]} runs.")
    else:
        paragraphs.append("No run has spectral snapshots to segment.")
    tables = [
        {"caption": "Phases by architecture: runs, mean number of phases, and runs with the paper's four phases",
         "sql": f"""
            WITH n AS (SELECT run_id, count(*) AS n_phases,
                              string_agg(phase, ' → ' ORDER BY phase_index) = '{" → ".join(PHASES)}' AS four
                       FROM analysis_dynamics_phases GROUP BY run_id),
                 a AS (SELECT DISTINCT run_id, architecture FROM analysis_features)
            SELECT a.architecture, count(*) AS runs, round(avg(n.n_phases), 2) AS mean_phases,
                   sum(n.four::INTEGER) AS four_phase_runs
            FROM n JOIN a USING (run_id) GROUP BY a.architecture ORDER BY a.architecture LIMIT 60"""},
        {"caption": "Phases per run (boundaries are phase start steps; at most 60 runs)",
         "sql": """
            SELECT p.run_id, r.dataset, r.size, r.activation, r.norm, r.total_steps, count(*) AS n_phases,
                   string_agg(p.phase, ' → ' ORDER BY p.phase_index) AS phases,
                   string_agg(p.start_step::VARCHAR, ', ' ORDER BY p.phase_index) AS start_steps,
                   round(max(p.mean_rate), 3) AS peak_rate
            FROM analysis_dynamics_phases p JOIN runs r USING (run_id)
            GROUP BY ALL ORDER BY n_phases DESC, r.dataset, p.run_id LIMIT 60"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
