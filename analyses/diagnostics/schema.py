"""The diagnostics stage's tables (the verdict table is added by ``verdicts=True``)."""

TABLES = {
    "findings": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("layer_index", "INTEGER"), ("rule", "VARCHAR"),
        ("severity", "VARCHAR"), ("message", "VARCHAR"), ("evidence", "MAP(VARCHAR, DOUBLE)"),
    ],
    "analysis_diagnostics_summary": [
        ("rule", "VARCHAR"), ("severity", "VARCHAR"), ("n_findings", "BIGINT"), ("n_runs", "BIGINT"),
        ("n_snapshots", "BIGINT"), ("threshold", "VARCHAR"),
    ],
    "analysis_diagnostics_normalization": [
        ("dataset", "VARCHAR"), ("norm", "VARCHAR"), ("metric", "VARCHAR"), ("value_with_norm", "DOUBLE"),
        ("value_without", "DOUBLE"), ("difference", "DOUBLE"), ("run_id", "VARCHAR"), ("twin_run_id", "VARCHAR"),
    ],
}
