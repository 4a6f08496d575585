"""The tables the propagation stage writes (its verdict table is added by ``verdicts=True``)."""

TABLES = {
    # per run and window of SHADOW_WINDOW consecutive coupling maps, every pair in shadow over it
    "shadows": [
        ("run_id", "VARCHAR"), ("step_first", "INTEGER"), ("step_last", "INTEGER"), ("block_i", "INTEGER"),
        ("block_j", "INTEGER"), ("path_length", "INTEGER"), ("max_relative", "DOUBLE"), ("mean_relative", "DOUBLE"),
        ("n_maps", "INTEGER"),
    ],
    # per MLP run with a coupling map: its arm and cell, outcome, edges, coherence and shadows
    "analysis_propagation_runs": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("task", "VARCHAR"), ("arm", "VARCHAR"), ("lr", "DOUBLE"),
        ("seed", "INTEGER"), ("epochs", "INTEGER"), ("status", "VARCHAR"), ("total_steps", "INTEGER"),
        ("cell", "VARCHAR"), ("final_test_metric", "DOUBLE"), ("final_train_loss", "DOUBLE"),
        ("target_loss", "DOUBLE"), ("steps_to_target", "INTEGER"), ("reached", "BOOLEAN"),
        ("edges_added", "BIGINT"), ("coherence_first", "DOUBLE"), ("coherence_last", "DOUBLE"),
        ("shadows_last", "INTEGER"),
    ],
    # per (data set, arm), and per arm over all data sets (dataset = 'all')
    "analysis_propagation": [
        ("dataset", "VARCHAR"), ("arm", "VARCHAR"), ("n_runs", "BIGINT"), ("final_test_metric", "DOUBLE"),
        ("final_train_loss", "DOUBLE"), ("reached_fraction", "DOUBLE"), ("median_steps_to_target", "DOUBLE"),
        ("edges_added", "DOUBLE"), ("final_coherence", "DOUBLE"), ("final_shadows", "DOUBLE"),
        ("loss_variance_across_seeds", "DOUBLE"), ("lr_sensitivity", "DOUBLE"),
    ],
}
