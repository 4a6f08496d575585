"""The topology stage on the tiny corpus: its tables against the stored weights (recomputed by ripser
and persim), its verdicts against its correlation table, and its figures."""

from __future__ import annotations

import duckdb
import matplotlib
import numpy as np
import pytest
from persim.persistent_entropy import persistent_entropy as persim_entropy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses.topology import STAGE  # noqa: E402
from analyses.topology import homology as ph  # noqa: E402
from analyses.topology.claims import eligible  # noqa: E402
from analyses.topology.correlations import correlation_table  # noqa: E402
from analyses.topology.verdicts import PAPER_METRICS, VERDICT_POSITIONS  # noqa: E402


def test_stage_tables_agree_with_the_stored_weights(built_corpus) -> None:
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    try:
        n_weights, n_rows = con.execute("""SELECT (SELECT count(*) FROM weights WHERE layer_index >= 0
                                                   AND len(shape) >= 2 AND tensor NOT LIKE '%bias'),
                                                  (SELECT count(*) FROM layer_topology)""").fetchall()[0]
        assert n_rows == n_weights > 0
        bars = con.execute("""SELECT count(*) FROM layer_topology t JOIN (
                                  SELECT run_id, step, layer_index, tensor, part, count(*) AS k
                                  FROM layer_topology_bars GROUP BY ALL
                              ) b USING (run_id, step, layer_index, tensor, part)
                              WHERE b.k <> t.n_bars""").fetchall()[0][0]
        assert bars == 0
        # recompute two layers independently: ripser and persim on the stored weights
        picks = con.execute("""SELECT w.run_id, w.step, w.layer_index, w.shape, w."values", t.normalized_entropy,
                                      t.mean_lifetime, t.n_bars
                               FROM weights w JOIN layer_topology t USING (run_id, step, layer_index)
                               WHERE w.tensor = 'linear.weight' AND t.n_bars >= 2
                               ORDER BY t.n_points DESC, w.run_id, w.step LIMIT 2""").fetchall()
        for _, _, _, shape, values, norm_entropy, mean_lifetime, n_bars in picks:
            points = np.unique(np.asarray(values, np.float32).astype(np.float64).reshape(shape), axis=0)
            deaths = ph.ripser_h0_deaths(points)
            diagram = np.column_stack([np.zeros_like(deaths), deaths])
            assert len(deaths) == n_bars
            assert norm_entropy == pytest.approx(persim_entropy(diagram, normalize=True)[0], rel=1e-6)
            assert mean_lifetime == pytest.approx(deaths.mean(), rel=1e-6)
        verdicts = con.execute("SELECT claim_id, verdict, n FROM analysis_verdicts WHERE stage = 'topology'").fetchall()
        expected = len(PAPER_METRICS) * (len(VERDICT_POSITIONS) * 7 + 1)
        assert len(verdicts) == expected
        # every correlation verdict carries, as the stage's own estimate, its row of the correlation table
        # recomputed on the clouds of at least MIN_CLOUD_POINTS points
        runs = con.sql("SELECT * FROM analysis_topology_runs").pl()
        kept = correlation_table(eligible(runs))
        con.register("kept_corr", kept)
        mismatched = con.execute("""
            SELECT count(*) FROM analysis_verdicts v JOIN kept_corr c
              ON v.claim_id = 'topology.' || c.metric || '.' || c.position || '.' ||
                 CASE c.analysis WHEN 'accuracy_across_runs' THEN 'tracks_accuracy'
                                 WHEN 'accuracy_beyond_variance' THEN 'beyond_variance'
                                 WHEN 'accuracy_over_training' THEN 'over_training'
                                 WHEN 'accuracy_over_training_beyond_variance' THEN 'over_training_beyond_variance'
                                 ELSE c.analysis END
             AND c.method IN ('pearson', 'partial', 'mean within-run spearman', 'mean within-run partial spearman',
                              'mean within-sweep spearman')
            WHERE v.stage_effect IS DISTINCT FROM c.estimate""").fetchall()[0][0]
        assert mismatched == 0
        # the tiny corpus has one train-fraction sweep of three fractions
        sweeps = con.execute("""SELECT max(n) FROM analysis_topology_correlations
                                WHERE analysis = 'train_fraction'""").fetchall()[0][0]
        assert sweeps == 1
        fractions = con.execute("SELECT DISTINCT train_fraction FROM analysis_topology_train_fraction").fetchall()
        assert sorted(f for (f,) in fractions) == [0.25, 0.5, 1.0]
        # the tiny corpus has one (data set, architecture) group of 3 classification runs: too few for an
        # across-runs interval, so the forest plot must say so instead of drawing
        estimated = con.execute("""SELECT count(*) FROM analysis_topology_correlations
                                   WHERE analysis = 'accuracy_across_runs' AND estimate IS NOT NULL""").fetchall()[0][0]
        for figure in STAGE.figures:
            name, fig = figure.name, figure.draw(con)
            drawn = sum(len(ax.lines) + len(ax.collections) for ax in fig.axes)
            assert fig.get_suptitle(), name
            if name == "topology_correlations" and not estimated:
                assert drawn == 0 and fig.axes[0].texts, name
            else:
                assert drawn > 0, name  # data, not the empty placeholder
            plt.close(fig)
    finally:
        con.close()
