"""The correlation stage's tables (its verdict table is declared by ``verdicts=True``)."""

TABLES = {
    "analysis_correlations": [
        ("task", "VARCHAR"), ("phase", "VARCHAR"), ("feature", "VARCHAR"), ("feature_group", "VARCHAR"),
        ("metric", "VARCHAR"), ("n", "BIGINT"), ("n_runs", "BIGINT"), ("r", "DOUBLE"), ("ci_low", "DOUBLE"),
        ("ci_high", "DOUBLE"), ("p_value", "DOUBLE"), ("p_adjusted", "DOUBLE"), ("significant", "BOOLEAN"),
    ],
}
