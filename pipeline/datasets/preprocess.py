"""Preprocessing of a raw table or raw arrays into the fixed arrays every run of a data set shares.

A data set is prepared one of two ways, the run field ``preprocess``: ``standard`` (the default) or
``none``, the inputs exactly as given, so that a model trained elsewhere is measured on the inputs it
was trained on.

A table under ``standard``, steps in order (all statistics fitted on the training split only):

1. drop the R ``rownames`` column and the data set's listed ``drop`` columns;
2. drop rows whose target is missing;
3. classification: labels are the sorted distinct target values, coded 0..K-1; classes with fewer
   than 2 rows are dropped (a stratified split needs two: the one step that looks at every row);
4. tables over ``max_rows`` are cut to a fixed stratified subsample;
5. a fixed stratified 75 / 25 train/test split, seeded by the data set's name (not by the run);
6. columns more than 50 % missing in the training rows are dropped;
   numeric columns: missing values imputed with the training median, then standardized with the
   training mean and standard deviation; constant columns are dropped;
7. categorical columns (strings, categories, booleans): missing becomes its own level, one-hot
   over the training levels (an unseen test level is all zeros); more than 30 levels: dropped as an
   identifier;
8. regression targets are standardized with the training mean and standard deviation
   (``target_mean``, ``target_std`` are kept so errors can be reported in the original units).

A table under ``none``: steps 1-5, then every feature column as it is, as float32, none dropped and
the regression target as given; a column that is not numeric, or a missing value, is an error.

Arrays (pipeline/datasets/arrays.py; X of shape (n, *input_shape)): steps 2-4, then the data's own
split when it has one (used as it is), else step 5; no column is ever dropped or imputed (a NaN is an
error). Under ``standard`` a float X is standardized with training-split statistics: one mean and
standard deviation per channel (the first axis of a row's shape: C of (C, H, W) or (C, T)) when rows
have two or more axes, per position when they have one (a constant channel or position is only
centred); token ids (an integer X) are never changed; the regression target as in step 8. Under
``none`` X is as given (float32, or int64 token ids) and so is the target. ``feature_names`` are
empty for arrays; ``input_shape`` is a row's shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.datasets.arrays import RawArrays
from pipeline.datasets.registry import PREPROCESSINGS, DatasetSpec
from pipeline.errors import DatasetError

TEST_FRACTION = 0.25
#: Token ids are 0 .. V-1 and an embedding holds V rows: a larger id is a hashed or sparse id, refused.
MAX_VOCABULARY = 2**20
MAX_MISSING_FRACTION = 0.5
MAX_CATEGORICAL_LEVELS = 30


@dataclass(frozen=True)
class PreparedDataset:
    """Preprocessed arrays of one data set, shared by all its runs.

    X: (n, *input_shape) float32, or int64 token ids (``vocab_size``: ids are below it; 0 for float
    inputs); a table's input_shape is (p,). y: (n,) int64 class codes or float32 targets
    (standardized under ``preprocess = "standard"``); train_idx, test_idx: row indices into X of the
    fixed split.
    """

    name: str
    task: str
    X: np.ndarray
    y: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    target_mean: float
    target_std: float
    n_raw_rows: int
    preprocess: str = "standard"
    vocab_size: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one row of X."""
        return tuple(int(k) for k in self.X.shape[1:])

    @property
    def is_table(self) -> bool:
        """Float rows of one axis: a table of features (what the MLP and the tabular families read)."""
        return self.X.ndim == 2 and self.X.dtype != np.int64

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def output_dim(self) -> int:
        return self.n_classes if self.task == "classification" else 1


def name_seed(name: str) -> int:
    """A stable 32-bit seed derived from a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def prepare(spec: DatasetSpec, raw: pd.DataFrame | None = None) -> PreparedDataset:
    """Run the documented preprocessing on a data set; see the module docstring."""
    if spec.preprocess not in PREPROCESSINGS:
        raise DatasetError(f"dataset {spec.name!r}: unknown preprocess {spec.preprocess!r} (choose from "
                           f"{', '.join(PREPROCESSINGS)})")
    loaded = spec.load_raw() if raw is None else raw
    if isinstance(loaded, RawArrays):
        return _prepare_arrays(spec, loaded)
    frame = loaded.copy()
    n_raw = len(frame)
    frame = frame.drop(columns=[c for c in ("rownames", *spec.drop) if c in frame.columns])
    frame = frame[frame[spec.target].notna()].reset_index(drop=True)
    target = frame.pop(spec.target)

    if spec.task == "classification":
        labels = target.astype(str)
        counts = labels.value_counts()
        rare = counts[counts < 2].index
        if len(rare):
            mask = ~labels.isin(rare)
            frame, labels = frame[mask.values].reset_index(drop=True), labels[mask].reset_index(drop=True)
        class_names = tuple(sorted(labels.unique()))
        if len(class_names) < 2:
            raise DatasetError(f"dataset {spec.name!r}: target {spec.target!r} has fewer than two classes")
        code = {c: i for i, c in enumerate(class_names)}
        y = labels.map(code).to_numpy(dtype=np.int64)
    else:
        try:
            y = pd.to_numeric(target, errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise DatasetError(f"dataset {spec.name!r}: regression target {spec.target!r} is not numeric") from None
        class_names = ()
    if len(y) < 8:
        raise DatasetError(f"dataset {spec.name!r}: only {len(y)} usable rows after dropping missing targets")

    rng = np.random.default_rng(name_seed(spec.name))
    rows = np.arange(len(y))
    if spec.max_rows is not None and len(rows) > spec.max_rows:
        rows = np.sort(_stratified_sample(rows, y if class_names else None, spec.max_rows, rng))
        frame, y = frame.iloc[rows].reset_index(drop=True), y[rows]
    train_idx, test_idx = _split(len(y), y if class_names else None, rng)

    if spec.preprocess == "none":
        X, feature_names = _raw_features(frame, spec.name)
    else:
        X, feature_names = _encode_features(frame, train_idx, spec.name)
    target_mean, target_std = 0.0, 1.0
    if spec.task == "regression" and spec.preprocess == "none":
        y = y.astype(np.float32)
    elif spec.task == "regression":
        target_mean = float(y[train_idx].mean())
        target_std = float(y[train_idx].std()) or 1.0
        y = ((y - target_mean) / target_std).astype(np.float32)
    return PreparedDataset(spec.name, spec.task, X, y, train_idx, test_idx, feature_names, class_names,
                           target_mean, target_std, n_raw, spec.preprocess)


def _labels(spec: DatasetSpec, target: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """(y, class names): class codes in the order of the sorted distinct values (numbers as numbers),
    or a float regression target."""
    if spec.task == "classification":
        values, y = np.unique(target, return_inverse=True)
        class_names = tuple(str(v) for v in values)
        if len(class_names) < 2:
            raise DatasetError(f"dataset {spec.name!r}: target {spec.target!r} has fewer than two classes")
        return y.reshape(-1).astype(np.int64), class_names
    try:
        y = np.asarray(target, dtype=np.float64)
    except (ValueError, TypeError):
        raise DatasetError(f"dataset {spec.name!r}: regression target {spec.target!r} is not numeric") from None
    return y, ()


def _prepare_arrays(spec: DatasetSpec, raw: RawArrays) -> PreparedDataset:
    X, target, is_test = raw.X, np.asarray(raw.y), raw.is_test
    n_raw = len(X)
    y, class_names = _labels(spec, target)
    rng = np.random.default_rng(name_seed(spec.name))
    if is_test is None:
        if class_names:  # classes with fewer than 2 rows cannot be split: dropped
            counts = np.bincount(y)
            if (counts < 2).any():
                keep = counts[y] >= 2
                X, y = X[keep], np.unique(y[keep], return_inverse=True)[1].astype(np.int64)
                class_names = tuple(c for c, k in zip(class_names, counts >= 2, strict=True) if k)
        if len(y) < 8:
            raise DatasetError(f"dataset {spec.name!r}: only {len(y)} usable rows")
        rows = np.arange(len(y))
        if spec.max_rows is not None and len(rows) > spec.max_rows:
            rows = np.sort(_stratified_sample(rows, y if class_names else None, spec.max_rows, rng))
            X, y = X[rows], y[rows]
        train_idx, test_idx = _split(len(y), y if class_names else None, rng)
    else:
        train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        if len(train_idx) < 4 or len(test_idx) < 1:
            raise DatasetError(f"dataset {spec.name!r}: its own split has {len(train_idx)} training and "
                               f"{len(test_idx)} test rows (at least 4 and 1 needed)")
    vocab = 0
    if X.dtype == np.int64:
        vocab = raw.vocab_size or int(X.max()) + 1
        if vocab > MAX_VOCABULARY:
            raise DatasetError(f"{spec.item}: token id {vocab - 1} implies a vocabulary of {vocab:,} "
                               f"(above {MAX_VOCABULARY:,}): hashed or sparse ids? map them to 0 .. V-1 first")
    elif spec.preprocess == "standard":
        X = _standardize_array(X, train_idx)
    target_mean, target_std = 0.0, 1.0
    if spec.task == "regression":
        if spec.preprocess == "standard":
            target_mean = float(y[train_idx].mean())
            target_std = float(y[train_idx].std()) or 1.0
            y = (y - target_mean) / target_std
        y = y.astype(np.float32)
    return PreparedDataset(spec.name, spec.task, np.ascontiguousarray(X), y, train_idx, test_idx, (),
                           class_names, target_mean, target_std, n_raw, spec.preprocess, vocab)


def _standardize_array(X: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    """Per channel (rows of 2+ axes) or per position (rows of one axis), training statistics; a
    constant channel or position is centred only."""
    train = X[train_idx].astype(np.float64)
    axes = (0, *range(2, X.ndim)) if X.ndim >= 3 else (0,)
    mu = train.mean(axis=axes, keepdims=True)
    sd = train.std(axis=axes, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)
    return ((X - mu) / sd).astype(np.float32)


def _raw_features(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """``preprocess = "none"``: every feature column as it is."""
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            raise DatasetError(f"dataset {name!r}: column {col!r} is not numeric: preprocess = 'none' takes "
                               "numeric columns only (or use preprocess = 'standard', which one-hot encodes it)")
        if s.isna().any():
            raise DatasetError(f"dataset {name!r}: column {col!r} has {int(s.isna().sum())} missing values: "
                               "preprocess = 'none' imputes nothing")
    if not len(frame.columns):
        raise DatasetError(f"dataset {name!r}: no feature columns")
    return frame.to_numpy(dtype=np.float32), tuple(str(c) for c in frame.columns)


def _split(n: int, labels: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split: per class, round(TEST_FRACTION * n_c) rows (at least one) go to test."""
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test = []
    for g in groups:
        k = max(1, int(round(TEST_FRACTION * len(g))))
        test.append(rng.choice(g, size=k, replace=False))
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(n), test_idx)
    return train_idx, test_idx


def _stratified_sample(rows: np.ndarray, labels: np.ndarray | None, k: int,
                       rng: np.random.Generator) -> np.ndarray:
    if labels is None:
        return rng.choice(rows, size=k, replace=False)
    out = []
    for c in np.unique(labels):
        g = rows[labels == c]
        out.append(rng.choice(g, size=max(2, int(round(k * len(g) / len(rows)))), replace=False))
    return np.concatenate(out)


def _encode_features(frame: pd.DataFrame, train_idx: np.ndarray, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    columns: list[np.ndarray] = []
    names: list[str] = []
    for col in frame.columns:
        s = frame[col]
        if s.iloc[train_idx].isna().mean() > MAX_MISSING_FRACTION:
            continue
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            levels_s = s.astype("string").fillna("NA")
            levels = sorted(levels_s.iloc[train_idx].unique())
            if len(levels) > MAX_CATEGORICAL_LEVELS or len(levels) < 2:
                continue
            values = levels_s.to_numpy()
            for level in levels:
                columns.append((values == level).astype(np.float64))
                names.append(f"{col}={level}")
        else:
            v = s.to_numpy(dtype=np.float64)
            train = v[train_idx]
            median = np.nanmedian(train) if np.isfinite(train).any() else 0.0
            v = np.where(np.isfinite(v), v, median)
            mu, sd = v[train_idx].mean(), v[train_idx].std()
            if not sd > 0:
                continue
            columns.append((v - mu) / sd)
            names.append(str(col))
    if not columns:
        raise DatasetError(f"dataset {name!r}: no usable feature columns after preprocessing")
    return np.stack(columns, axis=1).astype(np.float32), tuple(names)
