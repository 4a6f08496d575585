"""Data of any shape: arrays from .npz, .npy pairs and Parquet list columns, the ``preprocess`` run
field, the built-in image and token data sets, and the built-in families on them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import cli
from pipeline.config import parse_config
from pipeline.datasets import REGISTRY, file_spec, prepare, prepared_dataset
from pipeline.errors import ConfigError, DatasetError
from pipeline.models.build import build_network
from pipeline.runspec import RunSpec

SHAPE = (1, 4, 4)


def _arrays(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = (rng.integers(0, 17, size=(n, *SHAPE)) * 1.5 + 3).astype(np.float32)  # far from standardized
    return X, np.arange(n) % 3


def _write(fmt: str, folder: Path, X, y, X_test=None, y_test=None) -> Path:
    """The arrays as a data file of format ``fmt``; with X_test, y_test: its own split."""
    if fmt == "npz":
        path = folder / "d.npz"
        extra = {} if X_test is None else {"X_test": X_test, "y_test": y_test}
        np.savez(path, X=X, y=y, **extra)
    elif fmt == "npy":
        path = folder / "d_X.npy"
        np.save(path, X)
        np.save(folder / "d_y.npy", y)
        if X_test is not None:
            np.save(folder / "d_X_test.npy", X_test)
            np.save(folder / "d_y_test.npy", y_test)
    else:  # parquet: a nested fixed-size list column, the target and an optional split column
        path = folder / "d.parquet"
        rows = X if X_test is None else np.concatenate([X, X_test])
        labels = y if X_test is None else np.concatenate([y, y_test])
        typ = pa.float32()
        for k in reversed(rows.shape[1:]):
            typ = pa.list_(typ, k)
        columns = {"image": pa.array(rows.tolist(), type=typ), "y": pa.array(labels)}
        if X_test is not None:
            columns["split"] = pa.array(["train"] * len(X) + ["test"] * len(X_test))
        pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("fmt", ["npz", "npy", "parquet"])
def test_arrays_round_trip_bitwise_under_preprocess_none(fmt: str, tmp_path: Path) -> None:
    X, y = _arrays()
    path = _write(fmt, tmp_path, X, y)
    d = prepare(_file(path, "none"))
    assert d.input_shape == SHAPE and d.X.dtype == np.float32 and d.feature_names == ()
    assert d.X.tobytes() == X.tobytes() and np.array_equal(d.y, y)
    assert 0 < len(d.test_idx) < 20 and len(np.intersect1d(d.train_idx, d.test_idx)) == 0  # the fixed split
    standard = prepare(_file(path, "standard"))
    train = standard.X[standard.train_idx]
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-4  # one channel: scalar statistics
    np.testing.assert_array_equal(standard.test_idx, d.test_idx)


@pytest.mark.parametrize("fmt", ["npz", "npy", "parquet"])
def test_an_own_split_is_used_as_it_is(fmt: str, tmp_path: Path) -> None:
    X, y = _arrays(30)
    X_test, y_test = _arrays(9, seed=1)
    path = _write(fmt, tmp_path, X, y, X_test, y_test)
    d = prepare(_file(path, "none"))
    np.testing.assert_array_equal(d.train_idx, np.arange(30))
    np.testing.assert_array_equal(d.test_idx, np.arange(30, 39))
    assert d.X[d.train_idx].tobytes() == X.tobytes() and d.X[d.test_idx].tobytes() == X_test.tobytes()
    np.testing.assert_array_equal(d.y[d.test_idx], y_test)


def test_a_variable_list_column_with_one_length_and_token_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 20, size=(24, 6))
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"ids": pa.array(tokens.tolist()), "label": np.arange(24) % 2}), path)
    for preprocess in ("standard", "none"):  # token ids are never changed
        d = prepare(_file(path, preprocess, "label"))
        assert d.X.dtype == np.int64 and np.array_equal(d.X, tokens) and d.vocab_size == int(tokens.max()) + 1


def _file(path: Path, preprocess: str, target: str = "y"):
    """A user's file as a classification data set under ``preprocess``."""
    return dataclasses.replace(file_spec(path.stem, str(path), target, "classification"), preprocess=preprocess)


def test_digits_images_are_sklearns_digits_and_standardized_under_standard() -> None:
    from sklearn.datasets import load_digits

    raw = prepared_dataset("digits_images", preprocess="none")
    digits = load_digits()
    assert raw.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(raw.X[:, 0], digits.images.astype(np.float32))
    np.testing.assert_array_equal(raw.y, digits.target)
    std = prepared_dataset("digits_images")
    train = digits.images[std.train_idx].astype(np.float64)
    np.testing.assert_allclose(std.X[:, 0], (digits.images - train.mean()) / train.std(), atol=1e-5)


def test_the_token_data_set_loads_offline() -> None:
    d = prepared_dataset("tate_titles")
    assert REGISTRY["tate_titles"].source == "arrays"
    assert d.X.dtype == np.int64 and d.input_shape == (12,) and d.n_classes == 10
    assert d.X.min() >= 0 and d.X.max() < d.vocab_size and (d.X[:, 0] > 0).all()  # every title has a word
    assert 500 < len(d.y) < 2000
    np.testing.assert_array_equal(prepared_dataset("tate_titles", preprocess="none").X, d.X)


@pytest.mark.parametrize(("write", "message"), [
    (lambda p: np.savez(p / "d.npz", X=np.zeros((5, 2, 2)), y=np.zeros(4)), "X has 5 rows and y 4"),
    (lambda p: np.savez(p / "d.npz", X=np.zeros((5, 2, 2))), "no array 'y'"),
    (lambda p: np.savez(p / "d.npz", X=np.full((9, 2), np.nan), y=np.arange(9) % 2), "NaN or infinite"),
    (lambda p: np.savez(p / "d.npz", X=-np.ones((9, 2), dtype=np.int64), y=np.arange(9) % 2), "is negative"),
    (lambda p: np.savez(p / "d.npz", X=np.zeros((9, 2)), y=np.arange(9) % 2, X_test=np.zeros((2, 2))),
     "without its pair"),
    (lambda p: np.save(p / "d_X.npy", np.zeros((9, 2))), "its labels d_y.npy are missing"),
    (lambda p: pq.write_table(pa.table({"x": pa.array([[1.0, 2.0], [1.0]] * 5), "y": [0, 1] * 5}),
                              p / "d.parquet"), "ragged lists"),
    (lambda p: pq.write_table(pa.table({"x": pa.array([[1.0, 2.0]] * 10), "y": [0, 1] * 5,
                                        "split": ["train", "valid"] * 5}), p / "d.parquet"), "'valid'"),
    (lambda p: pq.write_table(pa.table({"x": pa.array([[1.0, 2.0]] * 10), "z": pa.array([[1.0]] * 10),
                                        "y": [0, 1] * 5}), p / "d.parquet"), "2 list columns"),
    (lambda p: np.savez(p / "d.npz", X=np.ones((9, 2), np.int64), y=np.arange(9) % 2,
                        X_test=np.ones((3, 2), np.float32), y_test=np.arange(3) % 2), "token ids .* in one and not"),
    (lambda p: np.savez(p / "d.npz", X=np.zeros((5, 2)), y=np.float64(1.0)), r"y has shape \(\)"),
    (lambda p: np.savez(p / "d.npz", X=np.zeros((6, 2), np.complex64), y=np.arange(6) % 2), "not real numbers"),
    (lambda p: np.savez(p / "d.npz", X=np.full((9, 2), 2**40, np.int64), y=np.arange(9) % 2),
     "implies a vocabulary of 1,099,511,627,777"),
])
def test_bad_arrays_are_one_line_errors_naming_the_file(tmp_path: Path, write, message: str) -> None:
    write(tmp_path)
    path = next(p for p in tmp_path.iterdir() if p.name in ("d.npz", "d_X.npy", "d.parquet"))
    with pytest.raises(DatasetError, match=message) as info:
        prepare(file_spec("d", str(path), "y", "classification"))
    assert "\n" not in str(info.value) and str(path.parent) in str(info.value)


def test_a_bad_data_file_stops_measure_with_one_line(tmp_path: Path, capsys) -> None:
    np.savez(tmp_path / "bad.npz", X=np.zeros((5, 1, 2, 2)), y=np.zeros(3))
    (tmp_path / "ckpt").mkdir()
    torch.save({"step": 0, "state_dict": {}}, tmp_path / "ckpt" / "step_0.pt")
    assert cli.main(["measure", "--model", "tests.user_models:recording_cnn", "--checkpoints",
                     str(tmp_path / "ckpt"), "--data", str(tmp_path / "bad.npz"), "--db", str(tmp_path / "m.duckdb"),
                     "--shards", str(tmp_path / "shards"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "X has 5 rows and y 3" in err and "\n" not in err
    assert err.count(str(tmp_path / "bad.npz")) == 1  # the file named once


def test_one_data_set_under_two_preprocessings_is_refused_by_the_config() -> None:
    """The datasets table holds one row per name: a config asking for one name under both is refused
    before anything is trained, not at ingest after both are."""
    with pytest.raises(ConfigError, match=r"study\[0\]\.grid\.preprocess: dataset 'iris' is asked for under "
                                          r"preprocess 'standard' \(study 's'\) and 'none': a built-in data set"):
        parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "preprocess": ["standard", "none"]}}]})


def test_a_datasets_row_of_an_older_shard_reads_as_the_migration_fills_it() -> None:
    from snapshot_loader.schema import arrow_schema
    from snapshot_loader.shards import _older_shard_column

    old = pa.table({"name": ["iris"], "n_features": [4]})
    schema = arrow_schema("datasets")
    assert _older_shard_column("datasets", schema.field("input_shape"), old).to_pylist() == [[4]]
    assert _older_shard_column("datasets", schema.field("preprocess"), old).to_pylist() == ["standard"]
    assert _older_shard_column("datasets", schema.field("description"), old).to_pylist() == [None]
    # before shard version 10: no baseline, but chance AUC where the data set classifies
    before = pa.table({"name": ["iris", "diabetes"], "task": ["classification", "regression"]})
    assert _older_shard_column("datasets", schema.field("baseline_auc"), before).to_pylist() == [0.5, None]
    assert _older_shard_column("datasets", schema.field("baseline_metric"), before).to_pylist() == [None, None]


def test_preprocess_none_on_a_table_keeps_numeric_columns_and_refuses_text(tmp_path: Path) -> None:
    import pandas as pd

    iris = prepared_dataset("iris", preprocess="none")
    from sklearn.datasets import load_iris

    np.testing.assert_array_equal(iris.X, load_iris().data.astype(np.float32))
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0] * 6, "c": ["x", "y"] * 6, "t": [0, 1] * 6}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"column 'c' is not numeric: preprocess = 'none'"):
        prepare(_file(path, "none", "t"))


def test_the_preprocess_field_keeps_existing_ids_and_is_checked_by_the_config() -> None:
    base = RunSpec(dataset="iris")
    assert RunSpec(dataset="iris", preprocess="standard").run_id == base.run_id
    assert RunSpec(dataset="iris", preprocess="none").run_id != base.run_id
    (spec,) = parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "preprocess": "none"}}]}).runs()
    assert spec.preprocess == "none"
    with pytest.raises(ConfigError, match=r"study\[0\]\.grid\.preprocess"):
        parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "preprocess": "zscore"}}]})


def test_a_family_that_cannot_read_the_rows_is_one_error_before_any_run(tmp_path: Path) -> None:
    spec = RunSpec(dataset="digits_images", family="mlp")
    with pytest.raises(ValueError, match=r"family mlp cannot read data set 'digits_images': its rows are arrays"):
        build_network(spec, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="family cnn2d cannot read data set 'tate_titles': its rows are token ids"):
        build_network(RunSpec(dataset="tate_titles", family="cnn2d"), (12,), 10, vocab_size=30)
    config = tmp_path / "c.toml"
    config.write_text('[[study]]\nname = "s"\n[study.grid]\ndataset = "digits_images"\nfamily = "mlp"\n')
    from pipeline.commands import extract

    with pytest.raises(ConfigError, match=r"c\.toml: run \w+: family mlp cannot read"):
        extract(config, str(tmp_path / "shards"))
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize(("dataset", "family", "widths", "blocks"), [
    ("digits_images", "cnn2d", (4,), ["convs.0", "head"]),
    ("tate_titles", "transformer", (8,), ["embed", "position", "layers.0.attn", "layers.0.mlp", "head"]),
])
def test_built_in_families_train_and_are_measured_on_images_and_tokens(dataset, family, widths, blocks) -> None:
    from pipeline.extract.run import train_and_measure

    spec = RunSpec(dataset=dataset, family=family, size="custom", widths=widths, epochs=1, metric_checkpoints=2,
                   spectral_snapshots=1, probe_size=16, coupling_probes=2)
    rows = train_and_measure(spec)
    assert rows["runs"][0]["status"] == "complete"
    assert [r["name"] for r in rows["layers"]] == blocks
    kinds = {(r["layer_index"], r["kind"]) for r in rows["hessian_spectra"]}
    assert kinds == {(i, k) for i in range(len(blocks)) for k in ("local", "loss", "ggn")}
    assert all(np.isfinite(r["trace"]) for r in rows["hessian_spectra"] if r["kind"] != "local" or
               r["method"] != "lanczos")
    assert len(rows["curvature_coupling"]) == len(blocks) * (len(blocks) + 1) // 2
    (row,) = rows["datasets"]
    shape = list(prepared_dataset(dataset).input_shape)
    assert row["input_shape"] == shape and row["n_features"] == int(np.prod(shape)) and row["preprocess"] == "standard"
    inputs = {r["status"] for r in rows["margins"] if r["representation"] == "input"}
    assert inputs == ({"discrete_input"} if dataset == "tate_titles" else {"ok"})
    assert {r["status"] for r in rows["margins"] if r["representation"] == "output"} == {"ok"}


def test_a_factory_measured_with_preprocess_none_sees_exactly_the_saved_arrays(tmp_path: Path, capsys) -> None:
    from tests import user_models

    X, y = _arrays(48)
    data = tmp_path / "images.npz"
    np.savez(data, X=X, y=y)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.manual_seed(0)
    model = user_models.recording_cnn(SHAPE, 3)
    for step in (0, 5):
        torch.save({"state_dict": model.state_dict(), "step": step}, folder / f"step_{step}.pt")
    user_models.SEEN.clear()
    args = ["measure", "--model", "tests.user_models:recording_cnn", "--checkpoints", str(folder), "--data", str(data),
            "--db", str(tmp_path / "m.duckdb"), "--shards", str(tmp_path / "shards"), "--quiet", "--probe-size", "16"]
    assert cli.main([*args, "--preprocess", "none"]) == 0
    saved = {row.astype(np.float64).tobytes() for row in X}
    seen = [row.double().numpy() for batch in user_models.SEEN for row in batch]
    assert len(seen) > 2  # the check's two rows, and the measurements' batches
    assert all(row.tobytes() in saved for row in seen)
    con = duckdb.connect(str(tmp_path / "m.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT input_shape, preprocess, n_features FROM datasets").fetchall() == \
            [([1, 4, 4], "none", 16)]
        assert con.execute("SELECT json_extract_string(config_json, '$.preprocess') FROM runs").fetchall() == \
            [("none",)]
    finally:
        con.close()
    capsys.readouterr()
    # the same file prepared the standard way is another data set: refused under the same name
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "preprocess none" in err and "give one of them another name" in err and "\n" not in err


def test_a_config_dataset_of_arrays_needs_no_target_and_its_digest_covers_every_file(tmp_path: Path) -> None:
    X, y = _arrays()
    _write("npy", tmp_path, X, y)
    config = tmp_path / "c.toml"
    config.write_text('[[dataset]]\nname = "imgs"\npath = "d_X.npy"\ntask = "classification"\n'
                      '[[study]]\nname = "s"\n[study.grid]\ndataset = "imgs"\nfamily = "cnn2d"\npreprocess = "none"\n')
    from pipeline.config import load_config

    corpus = load_config(config)
    (custom,) = corpus.custom_datasets
    assert custom.target == "y" and corpus.runs()[0].dataset_digest == custom.digest
    np.save(tmp_path / "d_y.npy", (y + 1) % 3)  # new labels: another data set
    assert load_config(config).custom_datasets[0].digest != custom.digest


def test_string_labels_in_a_parquet_file(tmp_path: Path) -> None:
    X, y = _arrays(24)
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"x": pa.array(X.reshape(24, -1).tolist()), "kind": [f"c{k}" for k in y]}), path)
    d = prepare(_file(path, "none", "kind"))
    assert d.class_names == ("c0", "c1", "c2") and d.input_shape == (16,) and np.array_equal(d.y, y)
