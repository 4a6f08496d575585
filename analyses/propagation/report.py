"""The propagation stage's report text: the study's size, the synthesis trials, the arm and verdict tables."""

from __future__ import annotations

import duckdb

from analyses.kit.presentation import fmt_number
from pipeline.curvature.shadows import SHADOW_RATIO, SHADOW_WINDOW


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Sentences, the arm table and the trials summary."""
    n = con.execute("SELECT count(*), count(DISTINCT cell) FROM analysis_propagation_runs").fetchone()
    if not n[0]:
        return {"paragraphs": ["No run in this corpus has a coupling map (coupling_probes = 0 everywhere); "
                               "configs/propagation.toml has the study."], "tables": []}
    trials = con.execute("""SELECT count(*), count(DISTINCT t.run_id), sum(t.selected::INTEGER),
                                   avg(t.gain) FILTER (WHERE t.selected)
                            FROM augmentation_trials t JOIN runs r USING (run_id)
                            WHERE r.augment = 'synthesized'""").fetchone()
    shadows = con.execute("SELECT count(DISTINCT run_id), count(*) FROM shadows").fetchone()
    paragraphs = [
        f"{n[0]} runs in {n[1]} cells (data set, seed, learning rate) of deep plain networks, four arms each where "
        f"the config has them. {shadows[0]} runs show shadows in some window ({shadows[1]} pair-windows, threshold "
        f"{SHADOW_RATIO} of the median coupling at the same path length, {SHADOW_WINDOW} consecutive maps).",
        f"Synthesis ran {trials[0]} gentle trials in {trials[1]} synthesized runs and kept {trials[2] or 0} edges "
        f"(mean coherence gain of a kept edge {fmt_number(trials[3])}); each random run repeats its twin's trials "
        "only to add as many edges of the same kinds at random. A run whose map showed no shadow, or whose "
        "trials restored no coherence, adds none and trains exactly as its plain twin.",
    ]
    tables = [
        {"caption": "Per data set and arm (analysis_propagation): steps to target count a run that never reaches "
                    "the data set's target loss as its total steps",
         "sql": """SELECT dataset, arm, n_runs, round(final_test_metric, 4) AS test_metric,
                          round(final_train_loss, 4) AS train_loss, round(reached_fraction, 2) AS reached,
                          median_steps_to_target AS steps_to_target,
                          round(loss_variance_across_seeds, 5) AS loss_var_seeds,
                          round(lr_sensitivity, 4) AS lr_sensitivity, round(edges_added, 2) AS edges,
                          round(final_coherence, 3) AS coherence, round(final_shadows, 2) AS shadows
                   FROM analysis_propagation"""},
        {"caption": "Verdicts (analysis_propagation_verdicts)",
         "sql": """SELECT claim_id, effect_name, round(effect, 4) AS effect, round(ci_low, 4) AS ci_low,
                          round(ci_high, 4) AS ci_high, n, n_unit, verdict FROM analysis_propagation_verdicts"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}
