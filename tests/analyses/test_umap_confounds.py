"""Planted confounds for the UMAP verdicts (issue 18, item 8): an architecture signal present only at
initialization must not make the claim supported; one that training adds must. The k-NN decides, so the
stage-level functions run without UMAP. Also the (data set, study) hold-out groups against a brute force."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from analyses.stats import assess
from analyses.umap.groups import dataset_study_groups
from analyses.umap.stage import CV_DATASET, CV_STUDY, holdout_groups, subset_scores
from analyses.umap.verdicts import umap_verdicts

DATASETS = ("d0", "d1", "d2", "d3")
STUDIES = ("sa", "sb")


def planted(mode: str, n_arch: int = 5, runs_per_arch: int = 8, snapshots: int = 3, dim: int = 6, seed: int = 0
            ) -> tuple[pl.DataFrame, np.ndarray, list[str], dict[str, tuple[str, ...]]]:
    """Snapshot context (run_id, dataset, step, architecture), raw features (n, dim), their names and the
    study membership. Run r of architecture a lives in data set r mod 4 and study (r div 4) mod 2; every
    run starts near its own random point; its architecture moves its features by centre_a x w(progress):

    - mode "init": w = 1 - progress, the signal is there at step 0 and training erases it;
    - mode "trained": w = progress, training adds it (step 0 carries nothing).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3.0, size=(n_arch, dim))
    ctx, x, studies = [], [], {}
    for a, r in itertools.product(range(n_arch), range(runs_per_arch)):
        run_id = f"a{a}r{r}"
        studies[run_id] = (STUDIES[(r // 4) % 2],)
        start = rng.normal(0, 1.0, dim)
        for s in range(snapshots):
            progress = s / (snapshots - 1)
            w = 1 - progress if mode == "init" else progress
            x.append(start + centres[a] * w + rng.normal(0, 0.2, dim))
            ctx.append({"run_id": run_id, "dataset": DATASETS[r % 4], "step": 100 * s, "architecture": f"arch{a}"})
    frame = pl.DataFrame(ctx)
    assert frame.equals(frame.sort("run_id", "step"))  # generated in the stage's order (run_id, step)
    return frame, np.array(x), [f"f{i}" for i in range(dim)], studies


def _calls(mode: str, seed: int = 0) -> dict[str, dict]:
    """The verdict rows (clusters, transfer) of the stage-level functions, assessed as write_verdicts does."""
    ctx, raw, names, studies = planted(mode, seed=seed)
    cv = holdout_groups(ctx, studies)
    scores, _, subsets = subset_scores(ctx, raw, names, cv, [CV_STUDY, CV_DATASET])
    out = {}
    for v in umap_verdicts(scores, subsets, len(DATASETS), 3):
        a = assess(v.data, v.predicted, v.null_value, studies, boundary=v.null_value)
        out[v.claim_id] = v.row("umap", a)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_architecture_visible_only_at_initialization_is_not_supported(seed: int) -> None:
    rows = _calls("init", seed)
    for claim_id, row in rows.items():
        assert row["baseline_effect"] > 0.9, claim_id  # step 0 identifies the architecture
        assert row["effect"] < 0.5, claim_id
        assert row["confound"] == "initialization"
        assert row["verdict"] in ("not supported", "inconclusive"), claim_id


@pytest.mark.parametrize("seed", [0, 1])
def test_architecture_added_by_training_is_supported(seed: int) -> None:
    rows = _calls("trained", seed)
    for claim_id, row in rows.items():
        assert row["effect"] > 0.9 and row["baseline_effect"] < 0.5, claim_id
        assert row["beyond_low"] > 0.05, claim_id
        assert row["verdict"] == "supported", claim_id
        assert row["interval_level"] == "data sets, then runs within them"


def test_per_run_rows_reproduce_the_accuracies() -> None:
    """The claim's statistic over all rows is the last-snapshot k-NN accuracy, its baseline the step-0
    one; one row per run."""
    ctx, raw, names, studies = planted("trained")
    cv = holdout_groups(ctx, studies)
    scores, rows, subsets = subset_scores(ctx, raw, names, cv, [CV_STUDY])
    v = umap_verdicts(scores, subsets, len(DATASETS), 3)[0]
    idx = np.arange(v.data.rows.height)
    assert v.data.rows.height == ctx["run_id"].n_unique() == v.data.rows["run_id"].n_unique()
    assert v.data.statistic(idx) == pytest.approx(scores[("architecture", "last", CV_STUDY)].accuracy.value)
    assert v.data.baseline(idx) == pytest.approx(scores[("architecture", "step0", CV_STUDY)].accuracy.value)
    assert {r["snapshots"] for r in rows} == {"last", "step0"}


def _brute_force_groups(runs: list[str], datasets: list[str], studies: dict) -> dict[str, frozenset]:
    """run -> the set of runs reachable through shared (data set, study) pairs, by repeated closure."""
    keys = {r: {(d, s) for s in studies.get(r, ())} or {(d, f"run:{r}")} for r, d in zip(runs, datasets, strict=True)}
    out = {}
    for r in keys:
        reach, grown = {r}, True
        while grown:
            grown = False
            for o in keys:
                if o not in reach and any(keys[o] & keys[m] for m in reach):
                    reach.add(o)
                    grown = True
        out[r] = frozenset(reach)
    return out


def test_dataset_study_groups_match_a_brute_force_closure() -> None:
    runs = ["a", "b", "c", "d", "e", "f", "g"]
    datasets = ["x", "x", "x", "y", "y", "x", "x"]
    studies = {"a": ("s1",), "b": ("s1", "s2"), "c": ("s2",), "d": ("s1",), "e": ("s3",), "f": ("s4",)}
    got = dataset_study_groups(runs, datasets, studies)
    members = {g: frozenset(r for r in runs if got[r] == g) for g in set(got.values())}
    brute = _brute_force_groups(runs, datasets, studies)
    assert all(members[got[r]] == brute[r] for r in runs)
    assert got["a"] == got["c"] == "x/s1+x/s2"  # joined through run b, in both studies
    assert got["d"] == "y/s1" and got["g"] == "x/run:g"  # same study, other data set; no study
