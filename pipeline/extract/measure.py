"""Measure checkpoints that already exist: a folder of a user's saved checkpoints as one run.

Which children of the folder are checkpoints, their steps, and how each format is read into a state
dict keyed as the factory's model: :mod:`pipeline.extract.checkpoint_files` (``torch.save`` files,
safetensors, Lightning ``.ckpt``, Hugging Face folders, one folder per checkpoint; ``manifest.json``).
Here: the two passes over them.

Each checkpoint is loaded into the factory's model (``load_state_dict(strict=True)``) and measured
as a spectral snapshot by the same engine as a trained run, on the data set's splits and the run's
probe batch, so the rows land in the same tables. Every file is read and loaded before any is
measured: a truncated or foreign file, a missing or extra tensor, or a non-finite weight is one
error naming the file, and nothing is written. Only one state dict is held at a time: the check
reads each checkpoint's files and lets them go, and the measurement reads them again (each file is
read twice), so a folder of many checkpoints of a large model needs the memory of one. The bytes
measured are the bytes checked and hashed into the run id: a file that changes in between (a
trainer still writing to the folder) stops the command, naming it, with nothing written.

The run's id hashes the factory, the data set, the measurement settings and ``checkpoint_digest``
(a digest of every checkpoint's step and of the bytes of every file read for it, taken by the check
pass), so measuring the same folder twice finds the run done.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from pipeline.curvature.engine import CurvatureSettings
from pipeline.datasets.registry import DatasetSpec
from pipeline.datasets.run_data import run_data, run_dataset
from pipeline.extract.checkpoint_files import (
    Checkpoint,
    CheckpointError,
    blob_digest,
    checkpoint_files,
    model_keys,
    read_blobs,
    read_state_dict,
)
from pipeline.extract.run import (
    add_checkpoint_rows,
    dataset_row,
    empty_rows,
    layer_rows_of,
    measure_checkpoint,
    measured_margin_splits,
    run_row,
)
from pipeline.models.build import network_for
from pipeline.runspec import RunSpec
from pipeline.training.optim import loss_function

__all__ = ["CheckedFolder", "Checkpoint", "CheckpointError", "FolderDigest", "check_folder", "checkpoint_files",
           "measure_folder", "read_state_dict"]


def block_of(exc: BaseException) -> str:
    """``block '<name>': `` when the exception carries the note
    :func:`pipeline.curvature.engine.measure_blocks` adds, else empty."""
    return "".join(f"{note}: " for note in getattr(exc, "__notes__", ()) if note.startswith("block "))


def failure(exc: BaseException) -> str:
    """An exception raised while a user's model is measured, as one line: the block it was raised in,
    its type and its message's first line."""
    first = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{block_of(exc)}{type(exc).__name__}" + (f": {first}" if first else "")


class FolderDigest:
    """sha256 over every checkpoint's step and bytes, in step order (``blob_digest``: a folder
    checkpoint's files each with its relative name and length); ``hexdigest()``: first 16 hex digits."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, checkpoint: Checkpoint, blobs: list[tuple[str, bytes]]) -> None:
        blob_digest(checkpoint.step, blobs, checkpoint.is_folder, self._h)

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]


@dataclass(frozen=True)
class CheckedFolder:
    """What the check pass read: the folder's ``FolderDigest`` (the run id's ``checkpoint_digest``) and
    each checkpoint's sha256 (``blob_digest``), in step order, which the measuring pass's second read
    must match."""

    digest: str
    file_hashes: tuple[bytes, ...]


def check_folder(spec: RunSpec, checkpoints: list[Checkpoint],
                 custom: dict[str, DatasetSpec] | None = None) -> CheckedFolder:
    """Read, hash and load every checkpoint into the spec's model, one at a time (the check pass):
    a file that is unreadable, foreign or not finite raises a CheckpointError naming it."""
    dataset = run_dataset(spec, custom)
    model = network_for(spec, dataset)
    keys = model_keys(model)
    digest, file_hashes = FolderDigest(), []
    for c in checkpoints:
        blobs = read_blobs(c)
        digest.add(c, blobs)
        file_hashes.append(blob_digest(c.step, blobs, c.is_folder).digest())
        _load_into(model, read_state_dict(c, blobs, keys), c.path)
        del blobs
    return CheckedFolder(digest.hexdigest(), tuple(file_hashes))


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(f"{path}: does not fit the model: {' '.join(s.strip() for s in first[:3])}") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name!r} is not finite")


def measure_folder(spec: RunSpec, checkpoints: list[Checkpoint], folder: str | Path,
                   custom: dict[str, DatasetSpec] | None = None, device: str = "cpu",
                   progress=None, checked: CheckedFolder | None = None) -> dict[str, list[dict]]:
    """Every table's rows for the checkpoints, as one run (``spec``: family custom, its
    ``checkpoint_digest`` that of ``checked``). checked: the check pass already run on these files
    (``check_folder``, whose digest went into the run id); without it the check pass runs here first."""
    t_start = time.perf_counter()
    if checked is None:  # all of them first: a bad file stops the command before anything is measured
        checked = check_folder(spec, checkpoints, custom)
    if spec.checkpoint_digest and checked.digest != spec.checkpoint_digest:
        raise CheckpointError(f"{folder}: its files changed after the run id was computed from them; measure again")
    dataset = run_dataset(spec, custom)
    data = run_data(spec, dataset)
    tensors = {s: data.tensors(s) for s in ("train", "test", "probe")}
    model = network_for(spec, dataset)
    keys = model_keys(model)
    loss_fn = loss_function(dataset.task)
    settings = CurvatureSettings(spec.hessian_exact_limit, spec.hvp_budget, "sum", device, spec.product_dtype)
    rows = empty_rows()
    margin_splits = measured_margin_splits(data, tensors)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            for k, (c, sha) in enumerate(zip(checkpoints, checked.file_hashes, strict=True)):
                blobs = read_blobs(c)  # read again rather than kept: one state dict in memory
                if blob_digest(c.step, blobs, c.is_folder).digest() != sha:
                    raise CheckpointError(f"{c.path}: changed while the folder was being measured (its bytes "
                                          "are not those checked); nothing was written")
                _load_into(model, read_state_dict(c, blobs, keys), c.path)
                del blobs
                t = time.perf_counter()
                try:
                    row, layer_rows, snap = measure_checkpoint(model, data, tensors, loss_fn, settings, spec.seed,
                                                               c.step, True, margin_splits)
                except FloatingPointError as exc:
                    raise CheckpointError(f"{c.path}: {block_of(exc)}its loss or curvature is not finite ({exc})") \
                        from None
                except (torch.OutOfMemoryError, MemoryError):
                    raise
                except Exception as exc:  # the user's model failed inside the engine: one line, where and what
                    raise CheckpointError(f"{c.path}: {failure(exc)}") from None
                add_checkpoint_rows(rows, spec.run_id, c.step, None, row, layer_rows, snap,
                                    time.perf_counter() - t)
                if progress:
                    progress(k + 1, len(checkpoints))
    finally:
        torch.set_num_threads(threads)
    last = checkpoints[-1].step
    rows["runs"] = [{**run_row(spec, dataset, data, model, last, last, "complete", None,
                               time.perf_counter() - t_start), "device": device,
                     "checkpoint_dir": str(Path(folder).resolve())}]
    rows["layers"] = layer_rows_of(spec.run_id, model, spec)
    rows["splits"] = [{"run_id": spec.run_id, "split": s, "rows": r.astype("int32")}
                      for s, r in (("train", data.train_rows), ("test", data.test_rows), ("probe", data.probe_rows))]
    rows["datasets"] = [dataset_row(spec.dataset, custom, spec.preprocess)]
    return rows
