"""The data set registry, preprocessing, and each run's view of the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.datasets import REGISTRY, file_spec, prepare, prepared_dataset, run_data
from pipeline.errors import DatasetError
from pipeline.runspec import RunSpec
from tests.conftest import run_cli


def test_cli_lists_at_least_22_classification_and_15_regression_real_datasets() -> None:
    proc = run_cli("datasets", "--json", check=True)
    rows = json.loads(proc.stdout)
    real = [r for r in rows if not r["synthetic"]]
    assert sum(r["task"] == "classification" for r in real) >= 22
    assert sum(r["task"] == "regression" for r in real) >= 15
    assert {"name", "task", "rows", "features", "classes", "source"} <= set(rows[0])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_dataset_loads_offline_and_is_standardized(name: str) -> None:
    d = prepare(REGISTRY[name])
    if d.vocab_size:  # token ids (tate_titles): untouched, within the vocabulary
        assert d.X.dtype == np.int64 and 0 <= d.X.min() and d.X.max() < d.vocab_size
    else:
        assert np.isfinite(d.X).all() and d.X.dtype == np.float32
    if not d.is_table and not d.vocab_size:  # images: standardized per channel
        np.testing.assert_allclose(d.X[d.train_idx].mean(), 0.0, atol=1e-4)
    assert len(np.intersect1d(d.train_idx, d.test_idx)) == 0
    assert len(d.train_idx) + len(d.test_idx) == len(d.y)
    numeric = [i for i, f in enumerate(d.feature_names) if "=" not in f]
    if numeric:
        np.testing.assert_allclose(d.X[d.train_idx][:, numeric].mean(0), 0.0, atol=1e-4)
    if d.task == "classification":
        assert d.n_classes >= 2 and set(np.unique(d.y[d.test_idx])) == set(range(d.n_classes))
    else:
        assert abs(float(d.y[d.train_idx].mean())) < 1e-4


def test_split_is_fixed_and_stratified() -> None:
    a, b = prepare(REGISTRY["wine"]), prepare(REGISTRY["wine"])
    np.testing.assert_array_equal(a.test_idx, b.test_idx)
    share_all = np.bincount(a.y) / len(a.y)
    share_test = np.bincount(a.y[a.test_idx]) / len(a.test_idx)
    np.testing.assert_allclose(share_test, share_all, atol=0.03)


def test_train_fraction_label_noise_and_probe_are_seeded_from_the_run() -> None:
    d = prepared_dataset("breast_cancer")
    spec = RunSpec(dataset="breast_cancer", train_fraction=0.1, label_noise=0.2, probe_size=16, seed=3)
    a, b = run_data(spec, d), run_data(spec, d)
    np.testing.assert_array_equal(a.train_rows, b.train_rows)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert len(a.train_rows) == pytest.approx(0.1 * len(d.train_idx), abs=2)
    assert set(a.probe_rows) <= set(a.train_rows) and len(a.probe_rows) == 16
    flipped = (a.y_train != d.y[a.train_rows]).sum()
    assert flipped == a.n_noisy > 0
    c = run_data(RunSpec(dataset="breast_cancer", train_fraction=0.1, seed=4), d)
    assert not np.array_equal(a.train_rows, c.train_rows)


def test_custom_csv_with_categoricals_and_missing_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({
        "x": rng.normal(size=n), "colour": rng.choice(["red", "green", None], size=n),
        "z": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)), "label": rng.choice(["a", "b"], size=n),
    })
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    d = prepare(file_spec("mine", str(path), "label", "classification"))
    assert d.class_names == ("a", "b")
    assert {"x", "z", "colour=red", "colour=green", "colour=NA"} == set(d.feature_names)
    assert np.isfinite(d.X).all()


def test_custom_file_in_a_config_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    frame["y"] = 2 * frame["a"] - frame["b"] + 0.1 * rng.normal(size=60)
    frame.to_parquet(tmp_path / "reg.parquet")
    (tmp_path / "c.toml").write_text(
        '[[dataset]]\nname = "myreg"\npath = "reg.parquet"\ntarget = "y"\ntask = "regression"\n'
        '[[study]]\nname = "s"\n[study.grid]\ndataset = "myreg"\nepochs = 2\nmetric_checkpoints = 4\n'
        'spectral_snapshots = 2\n')
    config = load_config(tmp_path / "c.toml")
    assert config.custom_datasets[0].path == (tmp_path / "reg.parquet").resolve()
    proc = run_cli("datasets", "--config", str(tmp_path / "c.toml"), check=True)
    assert "myreg" in proc.stdout


def test_bad_custom_data_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"x": range(20), "y": ["abc"] * 20}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="regression target 'y' is not numeric"):
        prepare(file_spec("bad", str(path), "y", "regression"))
    with pytest.raises(DatasetError, match="target column 'nope'"):
        prepare(file_spec("bad", str(path), "nope", "regression"))
    pd.DataFrame({"x": range(20), "y": [np.nan] * 20}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="only 0 usable rows"):
        prepare(file_spec("bad", str(path), "y", "regression"))


def test_too_small_train_fraction_is_a_clear_error() -> None:
    d = prepared_dataset("kyphosis")
    with pytest.raises(DatasetError, match="train_fraction"):
        run_data(RunSpec(dataset="kyphosis", train_fraction=0.01), d)
