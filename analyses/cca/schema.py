"""The CCA stage's tables (its verdict table is declared by ``verdicts=True``)."""

TABLES = {
    "analysis_cca": [
        ("task", "VARCHAR"), ("component", "INTEGER"), ("canonical_correlation", "DOUBLE"),
        ("wilks_lambda", "DOUBLE"), ("f_stat", "DOUBLE"), ("df_num", "DOUBLE"), ("df_den", "DOUBLE"),
        ("p_value", "DOUBLE"), ("n", "BIGINT"), ("n_runs", "BIGINT"), ("n_datasets", "BIGINT"),
    ],
    "analysis_cca_loadings": [
        ("task", "VARCHAR"), ("block", "VARCHAR"), ("variable", "VARCHAR"), ("component", "INTEGER"),
        ("loading", "DOUBLE"),
    ],
    "analysis_cca_heldout": [
        ("task", "VARCHAR"), ("x_block", "VARCHAR"), ("fold", "INTEGER"), ("grouped_by", "VARCHAR"),
        ("test_groups", "VARCHAR"),
        ("n_train", "BIGINT"), ("n_test", "BIGINT"), ("heldout_correlation", "DOUBLE"),
    ],
    "analysis_cca_scores": [
        ("task", "VARCHAR"), ("run_id", "VARCHAR"), ("step", "BIGINT"), ("dataset", "VARCHAR"),
        ("architecture", "VARCHAR"), ("fold", "INTEGER"), ("u1", "DOUBLE"), ("v1", "DOUBLE"),
        ("heldout_u1", "DOUBLE"), ("heldout_v1", "DOUBLE"), ("time_u1", "DOUBLE"), ("time_v1", "DOUBLE"),
    ],
    "analysis_cca_designs": [
        ("task", "VARCHAR"), ("design", "VARCHAR"), ("snapshots", "VARCHAR"), ("metrics", "VARCHAR"),
        ("time_partialled", "BOOLEAN"), ("y_block", "VARCHAR"), ("grouped_by", "VARCHAR"), ("n", "BIGINT"),
        ("n_runs", "BIGINT"),
        ("n_datasets", "BIGINT"), ("interval_level", "VARCHAR"), ("spectral_r", "DOUBLE"), ("spectral_low", "DOUBLE"),
        ("spectral_high", "DOUBLE"), ("spectral_fold_mean", "DOUBLE"), ("time_r", "DOUBLE"), ("time_low", "DOUBLE"),
        ("time_high", "DOUBLE"), ("difference", "DOUBLE"), ("difference_low", "DOUBLE"),
        ("difference_high", "DOUBLE"), ("is_verdict", "BOOLEAN"),
    ],
}
