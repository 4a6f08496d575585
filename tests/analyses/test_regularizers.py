"""The regularizer comparison: arms, matching keys, paired differences, and the stage on the tiny corpus."""

from __future__ import annotations

import json
import math

import duckdb
import matplotlib
import numpy as np
import polars as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analyses import regularizers as reg  # noqa: E402
from analyses.regularizers import STAGE  # noqa: E402


def test_arm_labels_and_matching_keys() -> None:
    assert reg.arm_label("none", 0.01, 0.05, 1.0) == "none"
    assert reg.arm_label("fisher_sam", 0.01, 0.05, 1.0) == "fisher_sam (rho 0.05, eta 1)"
    assert reg.arm_label("grad_norm", 0.1, 0.05, 1.0) == "grad_norm (lambda 0.1)"
    base = {"dataset": "wine", "seed": 1, "lr": 0.01}
    a = json.dumps({**base, "regularizer": "sam", "rho": 0.05})
    b = json.dumps({**base, "regularizer": "none"})
    assert reg.match_key(a) == reg.match_key(b)
    assert reg.unit_key(a) == reg.unit_key(json.dumps({**base, "seed": 2}))


def test_paired_differences_average_seeds_within_units() -> None:
    frame = pl.DataFrame({
        "arm": ["none", "sam", "none", "sam", "none", "sam"],
        "group": ["w0", "w0", "w1", "w1", "b0", "b0"],
        "unit": ["wine", "wine", "wine", "wine", "bc", "bc"],
        "dataset": ["wine", "wine", "wine", "wine", "breast_cancer", "breast_cancer"],
        "test_accuracy": [0.8, 0.9, 0.7, 0.7, 0.5, 0.6],
        "hessian_trace": [2.0, 1.0, 4.0, -1.0, 1.0, 1.0],
    })
    d, n, dropped = reg.paired_differences(frame, "sam", "none", "test_accuracy")
    np.testing.assert_allclose(sorted(d), sorted([0.1, 0.05]))  # bc: +0.1; wine: mean(+0.1, 0)
    assert n == 3 and dropped == 0
    d, n, dropped = reg.paired_differences(frame, "sam", "none", "hessian_trace")
    np.testing.assert_allclose(sorted(d), sorted([0.0, math.log(0.5)]))  # the negative trace pair is dropped
    assert n == 2 and dropped == 1
    units, _, _ = reg.paired_difference_units(frame, "sam", "none", "test_accuracy")
    assert units["dataset"].to_list() == ["breast_cancer", "wine"]
    data = reg.unit_claim_data(units)
    assert math.isclose(data.estimand.value(np.arange(2)), 0.075) and data.confound.startswith("twins")


def test_regularizer_stage_on_the_tiny_corpus(built_corpus) -> None:
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    try:
        arms = {a for (a,) in con.execute("SELECT DISTINCT arm FROM analysis_regularizers").fetchall()}
        assert arms == {"none", "sam (rho 0.05)", "fisher_sam (rho 0.05, eta 1)", "hessian_trace (lambda 0.01)"}
        pairs = con.execute("""SELECT arm, baseline, n_pairs, n_units FROM analysis_regularizers_pairs
                               WHERE metric = 'test_accuracy'""").fetchall()
        assert ("sam (rho 0.05)", "none", 1, 1) in pairs
        assert ("fisher_sam (rho 0.05, eta 1)", "sam (rho 0.05)", 1, 1) in pairs
        verdicts = con.execute("""SELECT claim_id, verdict FROM analysis_verdicts
                                  WHERE stage = 'regularizers'""").fetchall()
        ids = {c for c, _ in verdicts}
        assert "regularizers.fisher_sam_beats_sam.fisher_sam_rho_0.05_eta_1.vs.sam_rho_0.05" in ids
        assert "regularizers.worse_than_sam.hessian_trace_lambda_0.01.vs.sam_rho_0.05" in ids
        assert "regularizers.flatten.hessian_trace_lambda_0.01.hessian_trace" in ids
        assert all(v == "inconclusive" for _, v in verdicts)  # one unit: no interval
        fig = STAGE.figures[0].draw(con)
        assert fig.get_suptitle() and sum(len(ax.lines) for ax in fig.axes) > 0
        plt.close(fig)
    finally:
        con.close()
