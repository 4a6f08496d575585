"""The gap stage's report text: our R^2 beside the paper's, the stage and transfer tests, the other
predictors, and the regression table."""

from __future__ import annotations

import duckdb

from analyses.gap.predictors import MAIN, PAPER_N_MODELS, PAPER_R2, SIGNATURE
from analyses.gap.regression import RANDOM_FOLDS
from analyses.kit.presentation import fmt_number


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences: our R^2 beside the paper's, the stage and transfer tests, other predictors."""
    paragraphs = []
    n_all, n_class, n_div = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE task = 'classification'),
               count(*) FILTER (WHERE task = 'classification' AND status <> 'complete') FROM runs""").fetchall()[0]
    statuses = con.execute("""SELECT status, count(DISTINCT run_id) FROM margins WHERE status <> 'ok'
                              GROUP BY status ORDER BY status""").fetchall()
    paragraphs.append(
        f"{n_class} of {n_all} runs are classifiers ({n_div} of them diverged and are left out); regression runs "
        "have no margins (their rows in `margins` say `not_classification`). "
        + ("Margin rows without statistics, by reason (runs): " + ", ".join(f"{s}: {k}" for s, k in statuses) + "."
           if statuses else "Every classifier's margins are defined at every snapshot."))
    paragraphs.extend(_jiang_paragraphs(con))
    main = con.execute(f"""SELECT r2, r2_adj, r2_cv, r2_cv_low, r2_cv_high, n_models, n_datasets, cv_folds, note,
                                  kendall_tau_cv
                           FROM analysis_gap_regression WHERE spec = '{MAIN}' AND sample = 'all'
                           ORDER BY cv_scheme""").fetchall()
    random = [r for r in main if r[7] == RANDOM_FOLDS and r[2] is not None]
    main = [r for r in main if r[7] != RANDOM_FOLDS]
    if main and main[0][2] is not None:
        r2, r2_adj, r2_cv, lo, hi, n, k, folds, _, tau = main[0]
        covers = lo is not None and hi is not None and lo <= PAPER_R2 <= hi
        paragraphs.append(
            f"Our margin model (the signature at input, first hidden layer and output, {len(SIGNATURE)} statistics "
            f"each, slog-transformed) on {n} models from {k} data sets: in-sample R^2 = {fmt_number(r2)} "
            f"(adjusted {fmt_number(r2_adj)}), cross-validated R^2 = {fmt_number(r2_cv)} "
            f"[{fmt_number(lo)}, {fmt_number(hi)}] ({folds} folds grouped by data set, so no data set is predicted "
            f"by a fit that saw it), Kendall's tau of the held-out predictions with the gap "
            f"{fmt_number(tau)}. Paper 004 reports R^2 = {PAPER_R2} on {PAPER_N_MODELS} models, without saying "
            "whether in-sample or held-out; Jiang et al. (2019) fitted and tested on networks of one data set at a "
            f"time (CIFAR-10 or CIFAR-100), a far easier setting than predicting unseen data sets. The paper's "
            f"value is {'inside' if covers else 'outside'} our interval."
            + (f" With {RANDOM_FOLDS} random folds of models instead (a model's own data set is then in the fit, "
               f"as in Jiang et al.), R^2_cv = {fmt_number(random[0][2])} [{fmt_number(random[0][3])}, "
               f"{fmt_number(random[0][4])}]." if random else ""))
    elif main:
        paragraphs.append(f"The margin model could not be cross-validated: {main[0][8] or 'too few models'}.")
    for scheme, label in ((f"random_{RANDOM_FOLDS}_fold", f"{RANDOM_FOLDS} random folds of models"),
                          ("grouped_by_dataset", "folds grouped by data set")):
        stage_rows = {(st, f, t): (r, lo, hi, n, frac) for st, f, t, r, lo, hi, n, frac in con.execute(f"""
            SELECT stage, fit_stage, target, r2_cv, r2_cv_low, r2_cv_high, n_models, stage_fraction
            FROM analysis_gap_regression WHERE spec = '{MAIN}' AND sample = 'all_stages' AND cv_scheme = ?""",
            [scheme]).fetchall()}
        if stage_rows.get(("late", "late", "gap"), (None,))[0] is None:
            continue

        def fmt(key, rows=stage_rows):
            r, lo, hi, _, _ = rows.get(key, (None, None, None, 0, None))
            return f"{fmt_number(r)} [{fmt_number(lo)}, {fmt_number(hi)}]"

        def pct(stage, rows=stage_rows):
            frac = rows.get((stage, stage, "gap"), (None,) * 5)[4]
            return "n/a" if frac is None else f"{100 * frac:.0f} %"

        paragraphs.append(
            f"By training stage ({label}), on the {stage_rows[('late', 'late', 'gap')][3]} models with margins at "
            f"every stage: R^2_cv = {fmt(('early', 'early', 'gap'))} early (median {pct('early')} of the steps), "
            f"{fmt(('middle', 'middle', 'gap'))} in the middle (median {pct('middle')}), "
            f"{fmt(('late', 'late', 'gap'))} at the end. The late-fitted model applied to the middle snapshots "
            f"reaches {fmt(('middle', 'late', 'gap'))}, and {fmt(('early', 'late', 'gap'))} on the early ones.")
    others = con.execute("""SELECT spec, r2_cv, coalesce(kendall_tau_feature, kendall_tau) FROM analysis_gap_regression
                            WHERE family = 'other' AND sample = 'all' AND r2_cv IS NOT NULL
                            ORDER BY r2_cv DESC""").fetchall()
    if others:
        paragraphs.append("Other predictors alone (R^2 on held-out data sets; Kendall tau of the predictor itself "
                          "with the gap, of the fit for the combined set): " + "; ".join(
            f"{s}: {fmt_number(r)}, tau {fmt_number(t)}" for s, r, t in others) + ".")
    tables = [
        {"caption": f"Jiang et al. fits beside the paper's R^2 = {PAPER_R2} (analysis_gap_jiang)",
         "sql": """SELECT scope, predictors, stage, fit_stage, sample, n_models, n_datasets, n_stalled, n_noisy, k,
                          round(r2_cv, 3) AS r2_cv, round(r2_cv_repeat_min, 3) AS r2_cv_min,
                          round(r2_cv_repeat_max, 3) AS r2_cv_max, round(tau_cv, 3) AS tau_cv, paper_r2,
                          round(max_vif, 1) AS max_vif
                   FROM analysis_gap_jiang ORDER BY sample, scope = 'pooled' DESC, scope, stage, predictors"""},
        {"caption": "Gap regressions (analysis_gap_regression)",
         "sql": """SELECT spec, cv_scheme, stage, fit_stage, target, sample, k, n_models, n_datasets, n_excluded,
                          round(r2, 3) AS r2, round(r2_adj, 3) AS r2_adj, round(r2_cv, 3) AS r2_cv,
                          round(r2_cv_low, 3) AS r2_cv_low, round(r2_cv_high, 3) AS r2_cv_high,
                          round(kendall_tau, 3) AS tau, round(kendall_tau_feature, 3) AS tau_feature,
                          round(kendall_tau_cv, 3) AS tau_cv, round(stage_fraction, 3) AS stage_fraction, paper_r2,
                          note
                   FROM analysis_gap_regression ORDER BY sample, family, r2_cv DESC NULLS LAST"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}


def _jiang_paragraphs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The Jiang et al. fits at the last snapshot, per data set and pooled, beside the paper's R^2."""
    rows = con.execute("""SELECT scope, predictors, n_models, r2_cv, tau_cv, n_stalled, n_noisy FROM analysis_gap_jiang
                          WHERE sample = 'all' AND stage = 'late' AND fit_stage = 'late'
                          ORDER BY scope = 'pooled' DESC, scope, predictors""").fetchall()
    fitted = [r for r in rows if r[3] is not None]
    if not fitted:
        return ["The Jiang et al. fits (log quartiles of the margins, within data sets) have too few models here "
                "to be cross-validated."] if rows else []
    n_stalled, n_noisy = rows[0][5], rows[0][6]
    parts = [f"{'the data-set indicators alone' if p == 'indicators' else 'margins + indicators'} pooled "
             f"R^2_cv = {fmt_number(r2)}, tau {fmt_number(tau)} ({n} models)" if scope == "pooled" else
             f"{scope}: R^2_cv = {fmt_number(r2)}, tau {fmt_number(tau)} ({n} models)"
             for scope, p, n, r2, tau, _, _ in fitted if p != "log_quartiles" or scope != "pooled"]
    return [f"As Jiang et al. (2019) fitted it (ln Q1, median, Q3 of the normalized margins at input, h0 and output; "
            f"10 x 10 random folds of models; {n_stalled} stalled and {n_noisy} label-noise runs left out), beside "
            f"the paper's R^2 = {PAPER_R2}: " + "; ".join(parts) + "."]
