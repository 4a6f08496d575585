"""The topology stage's report text: sentences generated from its tables, and the tables to show."""

from __future__ import annotations

import duckdb

from analyses.kit.features import POSITIONS
from analyses.topology.layers import INCLUDE_BIAS, METHOD
from analyses.topology.verdicts import LABEL


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Generated sentences on the clouds, the baseline comparison, and the tables."""
    paragraphs = []
    n, runs, dead, dup, undefined, others = con.execute("""
        SELECT count(*) FILTER (WHERE principal), count(DISTINCT run_id), sum(n_dead) FILTER (WHERE principal),
               sum(n_duplicates) FILTER (WHERE principal),
               count(*) FILTER (WHERE principal AND normalized_entropy IS NULL),
               count(*) FILTER (WHERE NOT principal) FROM layer_topology""").fetchall()[0]
    paragraphs.append(
        f"{n} layer snapshots of {runs} runs (and {others} clouds of a block's other weight matrices and of the "
        "Q, K and V parts of packed attention projections, stored but not in these tests): the point cloud is "
        "each layer's rows of W (one point per neuron, "
        f"bias {'appended' if INCLUDE_BIAS else 'not appended'}); {dead or 0} dead (all-zero) rows were dropped "
        f"and {dup or 0} duplicate rows merged. H0 deaths by "
        + ("Prim's minimum spanning tree (the tests check it against ripser's diagram and scipy's MST)"
           if METHOD != "ripser" else "ripser")
        + f". {undefined} layer snapshots have fewer than two bars (e.g. the output layer of a binary or "
        "regression task), where the normalized entropy is undefined (NULL). Mean lifetimes and the controls "
        "enter Pearson r on a log scale.")
    rows = con.execute("""
        SELECT metric, position, max(estimate) FILTER (WHERE analysis = 'accuracy_across_runs' AND method = 'pearson'),
               max(ci_low) FILTER (WHERE analysis = 'accuracy_across_runs' AND method = 'pearson'),
               max(ci_high) FILTER (WHERE analysis = 'accuracy_across_runs' AND method = 'pearson'),
               max(estimate) FILTER (WHERE analysis = 'accuracy_beyond_variance'),
               max(ci_low) FILTER (WHERE analysis = 'accuracy_beyond_variance'),
               max(ci_high) FILTER (WHERE analysis = 'accuracy_beyond_variance'),
               max(n) FILTER (WHERE analysis = 'accuracy_beyond_variance')
        FROM analysis_topology_correlations WHERE metric IN ('normalized_entropy', 'mean_lifetime')
        GROUP BY metric, position""").fetchall()
    order = {p: i for i, p in enumerate(POSITIONS)}
    parts, adds, untested = [], [], 0
    for metric, position, r, lo, hi, pr, plo, phi, n_runs in sorted(rows, key=lambda t: (t[0], order.get(t[1], 9))):
        if pr is None or plo is None or phi is None:
            untested += 1
            continue
        parts.append(f"{LABEL[metric]}, {position} layer: r = {_fmt_ci(r, lo, hi)}, partial r = "
                     f"{_fmt_ci(pr, plo, phi)} (n = {n_runs} runs)")
        if plo > 0 or phi < 0:
            adds.append(f"{LABEL[metric]} ({position}, partial r {pr:+.2f})")
    if parts:
        paragraphs.append("Across classification runs, within (data set, architecture) groups: "
                          + "; ".join(parts) + ".")
        skipped = f" ({untested} metric x position pairs had too few runs for an interval)" if untested else ""
        paragraphs.append(
            ("Topology adds information about accuracy beyond the layer's weight variance and norm here for "
             + ", ".join(adds) + f": the partial correlation's interval excludes 0{skipped}. These are "
             "unadjusted intervals; analysis_topology_correlations.p_adjusted corrects for the table's many tests.")
            if adds else
            ("Topology adds no detectable information about accuracy beyond the layer's weight variance and norm "
             f"here: every partial correlation's interval covers 0{skipped}."))
    else:
        paragraphs.append("Too few classification runs for correlations across runs.")
    tables = [
        {"caption": "Correlation tests per metric and layer position (analysis_topology_correlations)",
         "sql": """SELECT metric, position, analysis, method, round(estimate, 3) AS estimate,
                          round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high, p_value, p_adjusted, n, n_unit,
                          n_groups, n_datasets
                   FROM analysis_topology_correlations
                   WHERE metric IN ('normalized_entropy', 'mean_lifetime', 'mean_lifetime_scaled',
                                    'weight_variance', 'weight_norm')
                   ORDER BY metric, position, analysis, method"""},
        {"caption": "Final metric by train fraction, mean over seeds (analysis_topology_train_fraction)",
         "sql": """SELECT position, dataset, size, train_fraction, n_runs,
                          round(max(final_mean) FILTER (WHERE metric = 'normalized_entropy'), 4) AS normalized_entropy,
                          round(max(final_mean) FILTER (WHERE metric = 'mean_lifetime'), 4) AS mean_lifetime,
                          round(max(final_mean) FILTER (WHERE metric = 'mean_lifetime_scaled'), 4)
                              AS mean_lifetime_scaled,
                          round(max(test_metric_mean), 4) AS test_metric
                   FROM analysis_topology_train_fraction GROUP BY ALL
                   ORDER BY position, dataset, size, train_fraction"""},
    ]
    return {"paragraphs": paragraphs, "tables": tables}


def _fmt_ci(r: float | None, lo: float | None, hi: float | None) -> str:
    if r is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{r:.2f} (no interval)"
    return f"{r:.2f} [{lo:.2f}, {hi:.2f}]"
