"""The tables of the gap stage (the verdict table comes with ``verdicts=True``)."""

from analyses.gap.predictors import MARGIN_COLUMNS

TABLES = {
    "analysis_gap_models": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("stage", "VARCHAR"), ("step", "INTEGER"),
        ("fraction", "DOUBLE"), ("gap", "DOUBLE"), ("final_gap", "DOUBLE"), ("train_accuracy", "DOUBLE"),
        ("test_accuracy", "DOUBLE"), ("train_loss", "DOUBLE"), ("initial_train_loss", "DOUBLE"),
        ("label_noise", "DOUBLE"), ("train_fraction", "DOUBLE"),
        ("regularizer", "VARCHAR"),
        # m_input_q1, m_all_input_q1, m_input_median, ..., m_all_output_upper_fence
        *[(c, "DOUBLE") for c in MARGIN_COLUMNS],
        ("margin_status", "VARCHAR"), ("hessian_trace", "DOUBLE"), ("hessian_top_eigenvalue", "DOUBLE"),
        ("sharpness", "DOUBLE"), ("grad_norm", "DOUBLE"), ("log_spectral_norm_product", "DOUBLE"),
        ("distance_from_init", "DOUBLE"), ("n_params", "DOUBLE"),
    ],
    "analysis_gap_regression": [
        ("spec", "VARCHAR"), ("family", "VARCHAR"), ("description", "VARCHAR"), ("features", "VARCHAR[]"),
        ("k", "INTEGER"), ("stage", "VARCHAR"), ("fit_stage", "VARCHAR"), ("target", "VARCHAR"),
        ("sample", "VARCHAR"), ("cv_scheme", "VARCHAR"), ("n_models", "INTEGER"), ("n_datasets", "INTEGER"),
        ("n_excluded", "INTEGER"), ("cv_folds", "INTEGER"), ("r2", "DOUBLE"), ("r2_adj", "DOUBLE"),
        ("r2_cv", "DOUBLE"), ("r2_cv_low", "DOUBLE"), ("r2_cv_high", "DOUBLE"), ("stage_fraction", "DOUBLE"),
        ("kendall_tau", "DOUBLE"), ("kendall_tau_feature", "DOUBLE"), ("kendall_tau_cv", "DOUBLE"),
        ("kendall_p_cv", "DOUBLE"), ("paper_r2", "DOUBLE"), ("note", "VARCHAR"),
    ],
    "analysis_gap_predictions": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("stage", "VARCHAR"), ("fit_stage", "VARCHAR"),
        ("target", "VARCHAR"), ("sample", "VARCHAR"), ("gap", "DOUBLE"), ("predicted_cv", "DOUBLE"),
    ],
    "analysis_gap_jiang": [
        ("scope", "VARCHAR"), ("predictors", "VARCHAR"), ("stage", "VARCHAR"), ("fit_stage", "VARCHAR"),
        ("sample", "VARCHAR"), ("n_models", "BIGINT"), ("n_datasets", "BIGINT"), ("n_stalled", "BIGINT"),
        ("n_noisy", "BIGINT"), ("n_missing", "BIGINT"), ("k", "BIGINT"), ("n_repeats", "BIGINT"),
        ("n_folds", "BIGINT"), ("max_vif", "DOUBLE"), ("r2", "DOUBLE"), ("r2_cv", "DOUBLE"),
        ("r2_cv_repeat_min", "DOUBLE"), ("r2_cv_repeat_max", "DOUBLE"), ("tau_cv", "DOUBLE"),
        ("tau_cv_repeat_min", "DOUBLE"), ("tau_cv_repeat_max", "DOUBLE"), ("paper_r2", "DOUBLE"),
    ],
    "analysis_gap_jiang_predictions": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("scope", "VARCHAR"), ("predictors", "VARCHAR"),
        ("stage", "VARCHAR"), ("fit_stage", "VARCHAR"), ("sample", "VARCHAR"), ("gap", "DOUBLE"),
        ("predicted_cv", "DOUBLE"),
    ],
}
