"""The tables of the dynamics stage (``analysis_dynamics_verdicts`` is added by ``verdicts=True``)."""

TABLES = {
    "analysis_dynamics": [
        ("run_id", "VARCHAR"), ("step", "INTEGER"), ("epoch", "DOUBLE"), ("progress", "DOUBLE"),
        ("quantity", "VARCHAR"), ("layer_index", "INTEGER"), ("value", "DOUBLE"), ("transform", "VARCHAR"),
    ],
    "analysis_dynamics_rates": [
        ("run_id", "VARCHAR"), ("step_from", "INTEGER"), ("step_to", "INTEGER"), ("distance", "DOUBLE"),
        ("relative_distance", "DOUBLE"), ("relative_rate", "DOUBLE"),
        ("log_step_span", "DOUBLE"), ("rate", "DOUBLE"), ("log_rate", "DOUBLE"), ("rate_per_step", "DOUBLE"),
        ("n_layers", "INTEGER"), ("segment_index", "INTEGER"), ("phase_index", "INTEGER"), ("phase", "VARCHAR"),
        ("noise_sigma", "DOUBLE"), ("penalty", "DOUBLE"),
    ],
    "analysis_dynamics_rise_fall": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("n_intervals", "INTEGER"), ("early", "DOUBLE"),
        ("middle", "DOUBLE"), ("late", "DOUBLE"), ("hump", "DOUBLE"), ("hump_null", "DOUBLE"),
        ("hump_relative", "DOUBLE"),
    ],
    "analysis_dynamics_phases": [
        ("run_id", "VARCHAR"), ("phase_index", "INTEGER"), ("phase", "VARCHAR"), ("start_step", "INTEGER"),
        ("end_step", "INTEGER"), ("n_snapshots", "INTEGER"), ("mean_rate", "DOUBLE"),
    ],
}
