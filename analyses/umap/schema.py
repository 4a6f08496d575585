"""The tables of the umap stage (its verdict table is added by ``verdicts=True``)."""

TABLES = {
    "analysis_umap": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("snapshot_index", "BIGINT"), ("progress", "DOUBLE"),
        ("dataset", "VARCHAR"), ("task", "VARCHAR"), ("architecture", "VARCHAR"), ("preset", "VARCHAR"),
        ("widths", "VARCHAR"), ("size", "VARCHAR"),
        ("activation", "VARCHAR"), ("norm", "VARCHAR"), ("optimizer", "VARCHAR"), ("x", "DOUBLE"), ("y", "DOUBLE"),
    ],
    "analysis_umap_scores": [
        ("what", "VARCHAR"), ("target", "VARCHAR"), ("snapshots", "VARCHAR"), ("cv_groups", "VARCHAR"),
        ("value", "DOUBLE"),
        ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("n", "BIGINT"), ("n_runs", "BIGINT"), ("detail", "VARCHAR"),
    ],
}
