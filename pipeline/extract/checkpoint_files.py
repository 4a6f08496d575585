"""The checkpoints of a folder, in the formats researchers' checkpoints come in, read as state dicts.

``pipeline measure --checkpoints DIR`` takes the children of DIR, names starting with ``.`` and a
trainer's ``optimizer*``, ``scheduler*``, ``lr_scheduler*``, ``rng_state*`` and ``scaler*`` files aside
(here and in a checkpoint folder):

- a **file** ending in ``.pt``, ``.pth``, ``.ckpt`` (``torch.save``) or ``.safetensors`` is one checkpoint;
- a **folder** is one checkpoint when it holds weights (:func:`folder_weights`): a Hugging Face folder
  (``model.safetensors.index.json`` and its shards, ``model.safetensors``, ``pytorch_model.bin.index.json``
  and its shards, or ``pytorch_model.bin``, first found), else its one file ending in a checkpoint suffix
  or named ``checkpoints`` / ``checkpoint`` (Ray Tune trainables, the Model Zoos of Schürholt et al.:
  ``checkpoint_000010/checkpoints``). A folder without weights (logs) is not a checkpoint, nor are
  Hugging Face weights in DIR itself (the final model a Trainer saves beside its ``checkpoint-N/``).

A checkpoint's step (:func:`checkpoint_files`) is, first found:

1. the one ``manifest.json`` gives it, ``{"steps": {"name": step, ...}}`` (names relative to DIR: a file,
   a folder, or ``folder/file``), which then lists exactly the checkpoints measured;
2. the step the checkpoint records itself: ``global_step`` of a folder's ``trainer_state.json``
   (Hugging Face Trainer), of a Lightning checkpoint (a dict with ``state_dict`` and ``global_step``), or
   ``step`` / ``global_step`` of a safetensors file's ``__metadata__``. A trainer's own count wins over the
   name it chose: Ray Train names a Lightning checkpoint's folder by its report (``checkpoint_000003``)
   while the file counts optimizer steps; Lightning's ``epoch=3-step=400.ckpt`` and the Trainer's
   ``checkpoint-500`` agree with theirs. A file's recorded step is read again with its bytes, and a
   file that records another by then (a trainer rewriting ``last.ckpt``) is refused. Lightning's
   ``last.ckpt`` of the step of another checkpoint is its copy of that one, and not measured again;
3. the last integer in the file's or folder's name (``step_0200.pt`` -> 200, ``checkpoint_000010`` -> 10).

Reading (:func:`read_state_dict`): ``torch.save`` files with ``torch.load(weights_only=True)`` (no code in a
checkpoint runs: a pickled object other than tensors and plain values is refused, naming its class),
safetensors with ``safetensors.torch.load``; a torch file may hold the state dict itself or a dict with it
under ``state_dict`` (Lightning), ``model_state_dict`` (PyTorch's tutorial) or ``model``, the first found.
The keys are matched to the model's own state dict (:func:`fit_keys`): as they are, or under the one
prefix that makes them the model's (a LightningModule's attribute, ``model.``; DistributedDataParallel's
``module.``), keys outside that prefix not read; a tied tensor stored once stands for every key sharing
it (:func:`model_keys`). Every error is a one-line :class:`CheckpointError` naming the file.

What a checkpoint's bytes are (:func:`read_blobs`, :func:`blob_digest`): a file's bytes; a folder's, each
file its weights are read from (the index and its shards), with its name relative to the folder, in
reading order. Files read only for a step (``trainer_state.json``) are covered by the step itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import PipelineError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
CHECKPOINT_SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)
MANIFEST_NAME = "manifest.json"
TRAINER_STATE = "trainer_state.json"
HF_WEIGHTS = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
              "pytorch_model.bin")
STATE_KEYS = ("state_dict", "model_state_dict", "model")  # Lightning, PyTorch's tutorial, others
LIGHTNING_LAST = re.compile(r"last(-v\d+)?\.ckpt")
BARE_NAMES = ("checkpoints", "checkpoint")  # Ray Tune trainables' torch.save without a suffix
# what trainers save beside the weights (the Trainer's optimizer.pt, scheduler.pt, rng_state.pth, scaler.pt)
NOT_WEIGHTS = re.compile(r"(optimizer|scheduler|lr_scheduler|rng_state|scaler)([-_.].*)?")
METADATA_STEP_KEYS = ("step", "global_step")
SHOWN_KEYS = 3


class CheckpointError(PipelineError):
    """A checkpoint folder or file cannot be measured: the message names it."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: its step, its path (a file, or a folder) and the files read for its weights, in
    the order they are read and hashed (``files == (path,)`` for a file)."""

    step: int
    path: Path
    files: tuple[Path, ...]
    recorded: bool = False  # the step is the one its weights file records (checked again when it is read)

    @property
    def is_folder(self) -> bool:
        return self.files != (self.path,)


# -- locating ---------------------------------------------------------------------------------------

def checkpoint_files(folder: str | Path) -> list[Checkpoint]:
    """The folder's checkpoints in step order (see the module docstring): a folder without any, a
    child without a step, or two checkpoints of one step raise a CheckpointError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder", field="checkpoints")
    own = next((name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    final = set(folder_weights(folder) or ()) if own else set()  # a Trainer output folder's final model
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        found = _from_manifest(folder, manifest)
    else:
        found = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.name == MANIFEST_NAME or path in final:
                continue
            if path.is_dir():
                files = folder_weights(path)
                if files is not None:
                    found.append(_located(path, files))
            elif path.suffix in CHECKPOINT_SUFFIXES and not NOT_WEIGHTS.fullmatch(path.name):
                found.append(_located(path, (path,)))
        found = _without_lightning_copies(found)
    if not found and own:
        raise CheckpointError(f"{folder} is one checkpoint (it holds {own}): give the folder that holds it "
                              "and its siblings", field="checkpoints")
    if not found:
        raise CheckpointError(f"{folder} has no checkpoints ({'/'.join(CHECKPOINT_SUFFIXES)} files or folders "
                              "holding one)", field="checkpoints")
    steps = [c.step for c in found]
    duplicate = next((s for s in steps if steps.count(s) > 1), None)
    if duplicate is not None:
        names = [_relative(c.path, folder) for c in found if c.step == duplicate]
        raise CheckpointError(f"{folder}: {names[0]} and {names[1]} are both step {duplicate}")
    if min(steps) < 0:
        raise CheckpointError(f"{folder}: steps must be non-negative")
    return sorted(found, key=lambda c: c.step)


def _without_lightning_copies(found: list[Checkpoint]) -> list[Checkpoint]:
    """Lightning's ``last.ckpt`` (``last-v1.ckpt``, ...) is its copy of the latest checkpoint: dropped when
    another checkpoint records the same step (kept, and measured, when it is the only one of its step)."""
    def copy(c: Checkpoint) -> bool:
        return c.recorded and LIGHTNING_LAST.fullmatch(c.files[0].name) is not None

    steps = [c.step for c in found if not copy(c)]
    return [c for c in found if not (copy(c) and c.step in steps)]


def _from_manifest(folder: Path, manifest: Path) -> list[Checkpoint]:
    try:
        steps = json.loads(manifest.read_text())["steps"]
        listed = [(folder / name, int(step)) for name, step in steps.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{manifest}: expected {{\"steps\": {{\"file\": step, ...}}}}: {exc}") from None
    found = []
    for path, step in listed:
        if path.is_dir():
            files = folder_weights(path)
            if files is None:
                raise CheckpointError(f"{manifest}: lists the folder {_relative(path, folder)!r}, which holds no "
                                      "checkpoint file")
        elif path.is_file():
            files = (path,)
        else:
            raise CheckpointError(f"{manifest}: lists {_relative(path, folder)!r}, which is not in {folder}")
        found.append(Checkpoint(step, path, files))
    return found


def folder_weights(folder: Path) -> tuple[Path, ...] | None:
    """The files a checkpoint folder's weights are read from, in reading order, or None when it holds
    none (see the module docstring); a sharded Hugging Face index: the index, then its shards in name order."""
    for name in HF_WEIGHTS:
        path = folder / name
        if path.is_file():
            return (path, *_shards(path)) if name.endswith(".index.json") else (path,)
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                        and (p.suffix in CHECKPOINT_SUFFIXES or p.name in BARE_NAMES)
                        and not NOT_WEIGHTS.fullmatch(p.name))
    if len(candidates) > 1:
        raise CheckpointError(f"{folder}: holds {len(candidates)} checkpoint files "
                              f"({', '.join(p.name for p in candidates)}): name one in {MANIFEST_NAME} as "
                              f"\"{folder.name}/{candidates[0].name}\"")
    return (candidates[0],) if candidates else None


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: expected {{\"weight_map\": {{\"tensor\": \"shard file\", ...}}}}: "
                              f"{exc}") from None
    for name in names:
        if not isinstance(name, str) or "/" in name or "\\" in name or not (index.parent / name).is_file():
            raise CheckpointError(f"{index}: lists the shard {name!r}, which is not a file beside it")
    return [index.parent / name for name in names]


def _located(path: Path, files: tuple[Path, ...]) -> Checkpoint:
    """Rules 2 and 3 of the module docstring, for a checkpoint the manifest does not list."""
    recorded, unreadable = None, None
    if path.is_dir() and (path / TRAINER_STATE).is_file():
        return Checkpoint(_trainer_state_step(path / TRAINER_STATE), path, files)
    if len(files) == 1:
        try:
            recorded = recorded_step(files[0])
        except CheckpointError as exc:  # unreadable: the check pass names what is wrong with it
            unreadable = exc
    if recorded is not None:
        return Checkpoint(recorded, path, files, recorded=True)
    numbers = re.findall(r"\d+", path.stem if path.is_file() else path.name)
    if not numbers and unreadable is not None:  # the file's own fault comes first
        raise CheckpointError(f"{path}: no step in the file name, and none read from the file: "
                              f"{str(unreadable).split(': ', 1)[-1]}")
    if not numbers:
        kind = "file" if path.is_file() else "folder"
        raise CheckpointError(f"{path}: no step in the {kind} name or the checkpoint (name it like "
                              f"step_100{path.suffix if path.is_file() else ''}, or list it in {MANIFEST_NAME})")
    return Checkpoint(int(numbers[-1]), path, files)


def _trainer_state_step(path: Path) -> int:
    try:
        step = json.loads(path.read_text())["global_step"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: expected a Trainer state with \"global_step\": {type(exc).__name__}: "
                              f"{exc}") from None
    if not isinstance(step, int) or isinstance(step, bool):
        raise CheckpointError(f"{path}: \"global_step\" is {step!r}, not an integer")
    return step


def recorded_step(path: Path) -> int | None:
    """The step a checkpoint file records itself (safetensors metadata, Lightning's ``global_step``), or
    None. Reads only what it needs: a safetensors header; a torch file's pickle, its tensors memory-mapped."""
    if path.suffix == SAFETENSORS_SUFFIX:
        with path.open("rb") as f:
            head = f.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = f.read(size) if 0 < size <= 100_000_000 else b""
        return _metadata_step(path, _safetensors_header(path, head + header))
    if path.suffix in (".json", ".bin"):  # a Hugging Face index or pytorch_model.bin: no step inside
        return None
    mmap = zipfile.is_zipfile(path)
    try:
        obj = _torch_load(path, None, mmap=mmap)
    except CheckpointError:
        if not mmap:
            raise
        obj = _torch_load(path, None)  # a file memory-mapping refuses (an older layout): read whole
    return _lightning_step(path, obj)


def _lightning_step(path: Path, obj: object) -> int | None:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "global_step" in obj:  # Lightning
        step = obj["global_step"]
        if isinstance(step, torch.Tensor) and step.numel() == 1:
            step = step.item()
        if not isinstance(step, int) or isinstance(step, bool):
            raise CheckpointError(f"{path}: global_step is {step!r}, not an integer")
        return step
    return None


def _metadata_step(path: Path, header: dict) -> int | None:
    metadata = header.get("__metadata__") or {}
    for key in METADATA_STEP_KEYS:
        if key in metadata:
            try:
                return int(metadata[key])
            except (TypeError, ValueError):
                raise CheckpointError(f"{path}: metadata {key!r} is {metadata[key]!r}, not an integer") from None
    return None


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


# -- reading ----------------------------------------------------------------------------------------

def read_blobs(checkpoint: Checkpoint) -> list[tuple[str, bytes]]:
    """Every file of the checkpoint's weights, read whole: (its name relative to the checkpoint's
    folder, or its file name, and its bytes), in reading order."""
    base = checkpoint.path if checkpoint.is_folder else checkpoint.path.parent
    try:
        return [(str(f.relative_to(base)), f.read_bytes()) for f in checkpoint.files]
    except OSError as exc:
        raise CheckpointError(f"{checkpoint.path}: cannot be read: {exc}") from None


def blob_digest(step: int, blobs: Iterable[tuple[str, bytes]], is_folder: bool, h=None):
    """Feed a checkpoint's step and bytes to the sha256 ``h`` (a new one without it) and return it: a
    file as ``step NUL bytes``; a folder's files each as ``name NUL length NUL bytes`` after the step."""
    h = h if h is not None else hashlib.sha256()
    h.update(f"{step}\0".encode())
    for name, blob in blobs:
        if is_folder:
            h.update(f"{name}\0{len(blob)}\0".encode())
        h.update(blob)
    return h


def read_state_dict(checkpoint: Checkpoint, blobs: list[tuple[str, bytes]] | None = None,
                    model_keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict; blobs: its files' bytes (:func:`read_blobs`) when the caller has read
    them already; model_keys: the model's state-dict keys, which the keys are fitted to (:func:`fit_keys`)."""
    blobs = read_blobs(checkpoint) if blobs is None else blobs
    files = checkpoint.files
    first = files[0]
    if first.name.endswith(".index.json"):
        state, step = _sharded(first, files[1:], blobs), None
    elif first.suffix == SAFETENSORS_SUFFIX:
        state = _safetensors(first, blobs[0][1])
        step = _metadata_step(first, _safetensors_header(first, blobs[0][1]))
    else:
        state, step = _torch_state(first, blobs[0][1])
    if checkpoint.recorded and step != checkpoint.step:
        raise CheckpointError(f"{first}: records step {step}, not the {checkpoint.step} it recorded when the folder "
                              "was listed: it changed; measure again")
    if model_keys is not None:
        state = fit_keys(state, model_keys, first)
    return state


def _sharded(index: Path, shards: tuple[Path, ...], blobs: list[tuple[str, bytes]]) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(blobs[0][1])["weight_map"]
        named = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: expected {{\"weight_map\": {{...}}}}: {exc}") from None
    if named != [s.name for s in shards]:
        raise CheckpointError(f"{index}: changed since its shards were listed; measure again")
    state: dict[str, torch.Tensor] = {}
    for (_, blob), shard in zip(blobs[1:], shards, strict=True):
        part = _safetensors(shard, blob) if shard.suffix == SAFETENSORS_SUFFIX else _torch_state(shard, blob)[0]
        for key in part:
            if weight_map.get(key) != shard.name:
                raise CheckpointError(f"{shard}: holds {key!r}, which {index.name} places in "
                                      f"{weight_map.get(key, 'no shard')}")
        state.update(part)
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index}: lists {len(missing)} tensors no shard holds ({', '.join(missing[:SHOWN_KEYS])}"
                              f"{', ...' if len(missing) > SHOWN_KEYS else ''})")
    return state


def _safetensors_header(path: Path, blob: bytes) -> dict:
    size = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
    try:
        if size <= 0 or len(blob) < 8 + size:
            raise ValueError("too short for its header")
        header = json.loads(blob[8:8 + size])
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {_first_line(exc)}") from None
    return header


def _safetensors(path: Path, blob: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    _safetensors_header(path, blob)
    try:
        state = load(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError on a damaged body
        raise CheckpointError(f"{path}: not a readable safetensors file: {_first_line(exc)}") from None
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return state


def _torch_state(path: Path, blob: bytes) -> tuple[dict[str, torch.Tensor], int | None]:
    """A torch file's state dict, and the step it records (Lightning's ``global_step``) or None."""
    obj = _torch_load(path, blob)
    step = _lightning_step(path, obj)
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return obj, step


def _torch_load(path: Path, blob: bytes | None, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)`` of the bytes (or the file), its failure one CheckpointError."""
    try:
        return torch.load(io.BytesIO(blob) if blob is not None else path, map_location="cpu", weights_only=True,
                          mmap=mmap if blob is None else None)
    except Exception as exc:  # truncated zip, pickle of arbitrary objects, not a torch file at all
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(_refused_global(path, blob, found.group(1))) from None
        raise CheckpointError(f"{path}: not a readable checkpoint: {type(exc).__name__}: {_first_line(exc)}") from None


def _refused_global(path: Path, blob: bytes | None, name: str) -> str:
    """The one line for a torch file whose pickle names a class weights-only loading refuses: a whole
    pickled object (``torch.save(model)``: the class is the pickle's first global) or a dict with such
    an object among its entries (a Lightning checkpoint's hyper-parameters, a callback's state)."""
    if _first_global(blob if blob is not None else path.read_bytes()) == name:
        return (f"{path}: holds a pickled {name.rsplit('.', 1)[-1]} object ({name}), not a state dict: save "
                "model.state_dict() instead (a weights-only load runs no code from a checkpoint)")
    return (f"{path}: holds a pickled {name} object beside its tensors, which a weights-only load refuses "
            "(no code in a checkpoint runs): save state dicts (model.state_dict()) and plain values only")


def _first_global(blob: bytes) -> str | None:
    """The first class a torch zip file's pickle names, read with pickletools (nothing is unpickled)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            pickle = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"))
        for opcode, arg, _ in pickletools.genops(pickle):
            if opcode.name == "GLOBAL":
                return ".".join(str(arg).split(" "))
            if opcode.name not in ("PROTO", "FRAME"):
                return None
    except Exception:  # not a zip, no data.pkl, a damaged pickle: no class to name
        return None
    return None


def model_keys(model: torch.nn.Module) -> dict[str, str]:
    """The model's state-dict keys, each mapped to the first key whose tensor it shares (itself when it
    shares none): a tied weight (an embedding and an output layer) may be stored once, as
    ``safetensors.torch.save_model`` and Hugging Face's ``save_pretrained`` store it."""
    first: dict[tuple, str] = {}
    keys = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                 tuple(tensor.stride())) if tensor.numel() else (key,)
        keys[key] = first.setdefault(ident, key)
    return keys


def fit_keys(state: dict[str, torch.Tensor], model_keys: Iterable[str] | Mapping[str, str],
             path: Path) -> dict[str, torch.Tensor]:
    """The state dict keyed as the model's: itself when its keys are the model's, else its entries under
    the one prefix P (``model.``) whose stripped keys are exactly the model's (keys outside P are not
    read: a LightningModule's other attributes). model_keys: the model's keys, or :func:`model_keys`'s
    mapping, when a tied tensor stored under one of its keys stands for all of them. Two fitting
    prefixes, or none, raise a CheckpointError: the mismatch names the first missing and unexpected keys
    (sorted) and how many of each, under the prefix that fits best."""
    alias = dict(model_keys) if isinstance(model_keys, Mapping) else {k: k for k in model_keys}
    want = set(alias)

    def completed(sub: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """sub with each tied key it lacks filled from the key it shares a tensor with, if it then fits."""
        if not set(sub) <= want:
            return None
        tied = {}
        for key in want - set(sub):
            shared = [k for k in want if alias[k] == alias[key] and k in sub]
            if not shared:
                return None
            tied[key] = sub[shared[0]]
        return {**sub, **tied}

    whole = completed(state)
    if whole is not None:
        return whole
    matched: dict[str, int] = {}
    for key in state:
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1:] in want:
                matched[key[:i + 1]] = matched.get(key[:i + 1], 0) + 1
    fitting = {}
    groups = len(set(alias.values()))  # a fitting prefix holds at least one key of each tied group
    for p in (p for p, n in matched.items() if n >= groups):
        sub = completed({k[len(p):]: v for k, v in state.items() if k.startswith(p)})
        if sub is not None:
            fitting[p] = sub
    if len(fitting) == 1:
        return next(iter(fitting.values()))
    if len(fitting) > 1:
        raise CheckpointError(f"{path}: its keys fit the model under {len(fitting)} prefixes "
                              f"({', '.join(repr(p) for p in sorted(fitting))}): keep one copy of the model's "
                              "weights in the state dict")
    best = max([("", sum(k in want for k in state)), *matched.items()], key=lambda pn: (pn[1], -len(pn[0])))[0]
    keys = {k[len(best):] for k in state if k.startswith(best)}
    missing = sorted(k for k in want - keys if not any(alias[j] == alias[k] for j in keys & want))
    unexpected = sorted(keys - want)
    parts = [f"{len(names)} {kind} key{'s' if len(names) != 1 else ''} "
             f"({', '.join(names[:SHOWN_KEYS])}{', ...' if len(names) > SHOWN_KEYS else ''})"
             for kind, names in (("missing", missing), ("unexpected", unexpected)) if names]
    where = f" (its keys under the prefix {best!r})" if best else ""
    raise CheckpointError(f"{path}: does not fit the model{where}: {'; '.join(parts)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
