"""Measure checkpoints that already exist: a folder of a user's saved ``state_dict``s as one run.

Every file of the folder ending in ``.pt``, ``.pth`` or ``.ckpt`` is one checkpoint; its step is the
last integer in its name (``step_0200.pt`` -> 200), or the value ``manifest.json`` gives it
(``{"steps": {"file name": step, ...}}``, which then lists exactly the files measured). A file may
hold the state dict itself or a dict with it under ``state_dict`` or ``model``
(``torch.load(weights_only=True)``: no code in a checkpoint runs).

Each checkpoint is loaded into the factory's model (``load_state_dict(strict=True)``) and measured
as a spectral snapshot by the same engine as a trained run, on the data set's splits and the run's
probe batch, so the rows land in the same tables. Every file is read and loaded before any is
measured: a truncated or foreign file, a missing or extra tensor, or a non-finite weight is one
error naming the file, and nothing is written. Only one state dict is held at a time: the check
reads each file and lets it go, and the measurement reads it again (each file is read twice), so a
folder of many checkpoints of a large model needs the memory of one. The bytes measured are the
bytes checked and hashed into the run id: a file that changes in between (a trainer still writing
to the folder) stops the command, naming it, with nothing written.

The run's id hashes the factory, the data set, the measurement settings and ``checkpoint_digest``
(a digest of every file's bytes and step, taken by the check pass), so measuring the same folder
twice finds the run done.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from pipeline.curvature.engine import CurvatureSettings
from pipeline.datasets.registry import DatasetSpec
from pipeline.datasets.run_data import run_data, run_dataset
from pipeline.errors import PipelineError
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

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
MANIFEST_NAME = "manifest.json"


class CheckpointError(PipelineError):
    """A checkpoint folder or file cannot be measured: the message names it."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def checkpoint_files(folder: str | Path) -> list[Checkpoint]:
    """The folder's checkpoints in step order (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder", field="checkpoints")
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        try:
            steps = json.loads(manifest.read_text())["steps"]
            found = [Checkpoint(int(step), folder / name) for name, step in steps.items()]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{manifest}: expected {{\"steps\": {{\"file\": step, ...}}}}: {exc}") from None
        for c in found:
            if not c.path.is_file():
                raise CheckpointError(f"{manifest}: lists {c.path.name!r}, which is not in {folder}")
    else:
        found = []
        for path in sorted(folder.iterdir()):
            if path.suffix not in CHECKPOINT_SUFFIXES:
                continue
            numbers = re.findall(r"\d+", path.stem)
            if not numbers:
                raise CheckpointError(f"{path}: no step in the file name (name it like step_100{path.suffix}, "
                                      f"or list it in {MANIFEST_NAME})")
            found.append(Checkpoint(int(numbers[-1]), path))
    if not found:
        raise CheckpointError(f"{folder} has no {'/'.join(CHECKPOINT_SUFFIXES)} files", field="checkpoints")
    steps = [c.step for c in found]
    duplicate = next((s for s in steps if steps.count(s) > 1), None)
    if duplicate is not None:
        names = [c.path.name for c in found if c.step == duplicate]
        raise CheckpointError(f"{folder}: {names[0]} and {names[1]} are both step {duplicate}")
    if min(steps) < 0:
        raise CheckpointError(f"{folder}: steps must be non-negative")
    return sorted(found, key=lambda c: c.step)


def read_state_dict(path: Path, blob: bytes | None = None) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (itself, or under ``state_dict`` / ``model``); blob: its bytes,
    when the caller has read them already."""
    try:
        obj = torch.load(io.BytesIO(blob) if blob is not None else path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of arbitrary objects, not a torch file at all
        raise CheckpointError(f"{path}: not a readable checkpoint: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return obj


class FolderDigest:
    """sha256 over every checkpoint's step and bytes, in step order; ``hexdigest()``: first 16 hex digits."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, step: int, blob: bytes) -> None:
        self._h.update(f"{step}\0".encode())
        self._h.update(blob)

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]


@dataclass(frozen=True)
class CheckedFolder:
    """What the check pass read: the folder's ``FolderDigest`` (the run id's ``checkpoint_digest``) and
    each file's sha256, in step order, which the measuring pass's second read must match."""

    digest: str
    file_hashes: tuple[bytes, ...]


def check_folder(spec: RunSpec, checkpoints: list[Checkpoint],
                 custom: dict[str, DatasetSpec] | None = None) -> CheckedFolder:
    """Read, hash and load every checkpoint into the spec's model, one at a time (the check pass):
    a file that is unreadable, foreign or not finite raises a CheckpointError naming it."""
    dataset = run_dataset(spec, custom)
    model = network_for(spec, dataset)
    digest, file_hashes = FolderDigest(), []
    for c in checkpoints:
        blob = c.path.read_bytes()
        digest.add(c.step, blob)
        file_hashes.append(hashlib.sha256(blob).digest())
        _load_into(model, read_state_dict(c.path, blob), c.path)
        del blob
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
    loss_fn = loss_function(dataset.task)
    settings = CurvatureSettings(spec.hessian_exact_limit, spec.hvp_budget, "sum", device)
    rows = empty_rows()
    margin_splits = measured_margin_splits(data, tensors)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            for k, (c, sha) in enumerate(zip(checkpoints, checked.file_hashes, strict=True)):
                blob = c.path.read_bytes()  # read again rather than kept: one state dict in memory
                if hashlib.sha256(blob).digest() != sha:
                    raise CheckpointError(f"{c.path}: changed while the folder was being measured (its bytes "
                                          "are not those checked); nothing was written")
                _load_into(model, read_state_dict(c.path, blob), c.path)
                del blob
                t = time.perf_counter()
                try:
                    row, layer_rows, snap = measure_checkpoint(model, data, tensors, loss_fn, settings, spec.seed,
                                                               c.step, True, margin_splits)
                except FloatingPointError as exc:
                    raise CheckpointError(f"{c.path}: its loss or curvature is not finite ({exc})") from None
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
