"""The pressure stage's report text, from ``analysis_pressure_bottlenecks``."""

from __future__ import annotations

import duckdb

from analyses.kit.presentation import fmt_number as _f


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """How often the top-pressure layer is the output layer and the slowest-improving one, and the per-run table."""
    n_runs, n_top_out, coincide, compared = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE top_is_output), count(*) FILTER (WHERE top_is_slowest),
               count(top_is_slowest) FROM analysis_pressure_bottlenecks""").fetchall()[0]
    share = con.execute("SELECT avg(top_share) FROM analysis_pressure_bottlenecks").fetchall()[0][0]
    paragraphs = []
    if n_runs:
        paragraphs.append(
            f"Over {n_runs} runs the layer of highest early gradient pressure is the output layer in {n_top_out}; "
            f"on average it carries {_f(share)} of the runs' summed absolute early pressure. It is also the "
            f"slowest-improving layer (smallest gradient-norm log-decrease) in {coincide} of {compared} runs.")
    return {"paragraphs": paragraphs, "tables": [{
        "caption": "Per run: the top-pressure layer, its improvement and saturation rise, the slowest-improving "
                   "layer, and the run's rank correlations",
        "sql": """SELECT run_id, dataset, architecture, n_layers, top_layer, top_is_output,
                         round(top_share, 3) AS top_share, round(top_grad_log_decrease, 3) AS top_grad_log_decrease,
                         round(top_saturation_rise, 3) AS top_saturation_rise, slowest_layer, top_is_slowest,
                         round(rho_improvement, 2) AS rho_improvement,
                         round(rho_improvement_hidden, 2) AS rho_improvement_hidden,
                         round(rho_saturation, 2) AS rho_saturation
                  FROM analysis_pressure_bottlenecks ORDER BY n_layers DESC, architecture, run_id LIMIT 60"""}]}
