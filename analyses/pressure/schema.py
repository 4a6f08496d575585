"""The tables of the pressure stage (its verdict table is added by ``verdicts=True``)."""

TABLES = {
    "analysis_pressure": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("snapshot_index", "BIGINT"), ("progress", "DOUBLE"),
        ("dataset", "VARCHAR"), ("task", "VARCHAR"), ("architecture", "VARCHAR"), ("activation", "VARCHAR"),
        ("optimizer", "VARCHAR"), ("n_layers", "BIGINT"), ("layer_index", "INTEGER"), ("relative_depth", "DOUBLE"),
        ("is_output", "BOOLEAN"), ("gradient_pressure", "DOUBLE"), ("pressure_rank_in_snapshot", "BIGINT"),
        ("pressure_share", "DOUBLE"), ("saturation_fraction", "DOUBLE"), ("dead_fraction", "DOUBLE"),
        ("grad_norm", "DOUBLE"), ("weight_norm", "DOUBLE"),
    ],
    "analysis_pressure_layers": [
        ("run_id", "VARCHAR"), ("layer_index", "INTEGER"), ("dataset", "VARCHAR"), ("architecture", "VARCHAR"),
        ("activation", "VARCHAR"), ("n_layers", "BIGINT"), ("relative_depth", "DOUBLE"), ("is_output", "BOOLEAN"),
        ("early_pressure", "DOUBLE"), ("late_pressure", "DOUBLE"), ("early_metric_ratio", "DOUBLE"),
        ("early_pressure_rank", "BIGINT"),
        ("early_pressure_share", "DOUBLE"), ("grad_log_decrease", "DOUBLE"), ("initial_log_grad", "DOUBLE"),
        ("weight_movement", "DOUBLE"),
        ("saturation_early", "DOUBLE"), ("saturation_late", "DOUBLE"), ("saturation_rise", "DOUBLE"),
        ("dead_rise", "DOUBLE"), ("n_early_snapshots", "BIGINT"), ("n_late_snapshots", "BIGINT"),
        ("n_grad_checkpoints", "BIGINT"),
    ],
    "analysis_pressure_bottlenecks": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("architecture", "VARCHAR"), ("activation", "VARCHAR"),
        ("n_layers", "BIGINT"), ("top_layer", "INTEGER"), ("top_is_output", "BOOLEAN"),
        ("top_relative_depth", "DOUBLE"), ("top_share", "DOUBLE"), ("top_grad_log_decrease", "DOUBLE"),
        ("top_saturation_rise", "DOUBLE"), ("top_weight_movement", "DOUBLE"), ("n_layers_with_pressure", "BIGINT"),
        ("slowest_layer", "INTEGER"), ("n_layers_compared", "BIGINT"), ("top_is_slowest", "BOOLEAN"),
        ("chance_rate", "DOUBLE"), ("rho_improvement", "DOUBLE"), ("rho_improvement_hidden", "DOUBLE"),
        ("rho_saturation", "DOUBLE"), ("rho_movement", "DOUBLE"),
    ],
}
