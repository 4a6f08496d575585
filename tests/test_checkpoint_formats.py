"""``pipeline measure`` reads checkpoints in the formats they come in: safetensors files, Lightning
``.ckpt`` dicts, Hugging Face Trainer folders, one folder per checkpoint (Ray Tune, the Model Zoos).

Each format's folder holds the same two weights (steps 0 and 10 of ``tests.user_models:tiny_mlp``) that
the reference folder holds as plain ``torch.save``d state dicts, written by the format's own library
(safetensors) or in its layout (Lightning and the Trainer are not installed: their dicts and folders
are written as they write them); measured through the CLI, every row equals the reference's apart from
the run id (the folder digest differs). The errors are one line naming the file, with nothing written.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import duckdb
import pytest
import torch
from safetensors.torch import save_file

from pipeline.extract.checkpoint_files import (
    CheckpointError,
    checkpoint_files,
    folder_weights,
    model_keys,
    read_state_dict,
)
from tests.test_user_models import _measure, _nothing_written
from tests.user_models import tied_mlp, tiny_mlp

STEPS = (0, 10)


def _weights() -> dict[int, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = tiny_mlp((4,), 3)
    states = {}
    for step in STEPS:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        states[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return states


def _rows(db: Path) -> dict[str, list[tuple]]:
    """What a measurement leaves, without the run id and the timings."""
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            "checkpoints": con.execute("SELECT * EXCLUDE (run_id, wall_seconds) FROM checkpoints ORDER BY step")
            .fetchall(),
            "hessian_spectra": con.execute("SELECT step, layer_index, kind, method, eigenvalues, trace FROM "
                                           "hessian_spectra ORDER BY step, layer_index, kind").fetchall(),
            "layer_stats": con.execute("SELECT * EXCLUDE (run_id) FROM layer_stats ORDER BY step, layer_index")
            .fetchall(),
            "runs": con.execute("SELECT final_step, n_params FROM runs").fetchall(),
        }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, list[tuple]]:
    """The two weights as plain ``.pt`` state dicts, measured."""
    tmp = tmp_path_factory.mktemp("reference")
    folder = tmp / "ckpt"
    folder.mkdir()
    for step, state in _weights().items():
        torch.save(state, folder / f"step_{step}.pt")
    assert _measure(tmp, folder) == 0
    rows = _rows(tmp / "m.duckdb")
    assert [r[0] for r in rows["checkpoints"]] == list(STEPS)
    return rows


def _measured_as_reference(tmp_path: Path, folder: Path, reference: dict[str, list[tuple]]) -> None:
    assert _measure(tmp_path, folder) == 0
    assert _rows(tmp_path / "m.duckdb") == reference


def _lightning(state: dict[str, torch.Tensor], step: int, prefix: str = "model.", **extra) -> dict:
    """A checkpoint as Lightning's Trainer writes it: the LightningModule's state dict (the user's
    network its attribute ``model``, and a loss with a buffer of its own), the loop's counters,
    plain-valued hyper-parameters, optimizer and callback states."""
    return {"epoch": step // 5, "global_step": step, "pytorch-lightning_version": "2.4.0",
            "state_dict": {**{prefix + k: v for k, v in state.items()}, "criterion.weight": torch.ones(3)},
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": step // 5}}}},
            "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {"best_model_score": torch.tensor(0.5),
                                                                              "dirpath": "/runs/ckpt"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1, 2, 3]}]}],
            "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.1, "widths": [6]},
            **extra}


def _trainer_folder(folder: Path, step: int) -> Path:
    """A Hugging Face Trainer checkpoint folder, without its weights: config.json, trainer_state.json,
    and training_args.bin (a pickled object, never read)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["TinyMLP"], "hidden_size": 6}))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 5,
                                                           "log_history": []}))
    torch.save(torch.nn.Linear(2, 2), folder / "training_args.bin")
    return folder


# -- each format measures as its plain state dicts do -----------------------------------------------

def test_safetensors_files_step_from_the_name_or_the_metadata(tmp_path: Path, reference) -> None:
    """The file name's last integer, or the metadata's ``step`` / ``global_step``, which wins over it."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    states = _weights()
    save_file(states[0], folder / "init.safetensors", metadata={"step": "0"})
    save_file(states[10], folder / "weights_7.safetensors", metadata={"global_step": "10", "format": "pt"})
    assert [(c.step, c.path.name) for c in checkpoint_files(folder)] == [(0, "init.safetensors"),
                                                                         (10, "weights_7.safetensors")]
    save_file(states[10], folder / "weights_7.safetensors", metadata={"format": "pt"})
    assert [c.step for c in checkpoint_files(folder)] == [0, 7]
    save_file(states[10], folder / "weights_10.safetensors")
    (folder / "weights_7.safetensors").unlink()
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer_10.pt")  # a trainer's, not weights
    _measured_as_reference(tmp_path, folder, reference)


def test_lightning_checkpoints_step_from_global_step_and_the_prefix_stripped(tmp_path: Path, reference) -> None:
    """``epoch=0-step=0.ckpt`` and ``last.ckpt``: the keys under ``model.`` are the network's (the loss's
    buffer beside them is not read), the step is ``global_step``; a ``last.ckpt`` of another
    checkpoint's step is not measured."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    states = _weights()
    torch.save(_lightning(states[0], 0), folder / "epoch=0-step=0.ckpt")
    torch.save(_lightning(states[10], 10), folder / "last.ckpt")
    found = checkpoint_files(folder)
    assert [(c.step, c.path.name, c.recorded) for c in found] == [(0, "epoch=0-step=0.ckpt", True),
                                                                  (10, "last.ckpt", True)]
    _measured_as_reference(tmp_path, folder, reference)
    # a file rewritten after it was listed (a trainer still writing last.ckpt) says so when it is read
    torch.save(_lightning(states[10], 20), folder / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"last.ckpt: records step 20, not the 10 it recorded when the folder "
                                              "was listed: it changed; measure again"):
        read_state_dict(found[1])
    # save_last: last.ckpt beside the checkpoint of its step is Lightning's copy of it, not measured twice
    torch.save(_lightning(states[10], 10), folder / "last.ckpt")
    torch.save(_lightning(states[10], 10), folder / "epoch=1-step=10.ckpt")
    assert [c.path.name for c in checkpoint_files(folder)] == ["epoch=0-step=0.ckpt", "epoch=1-step=10.ckpt"]


def test_hugging_face_trainer_folders_whole_sharded_and_bin(tmp_path: Path, reference) -> None:
    """An output folder of ``checkpoint-N/`` folders (the step: trainer_state.json's global_step), their
    weights in ``model.safetensors`` or sharded by ``model.safetensors.index.json``; ``pytorch_model.bin``
    read as a torch file. Other entries of the output folder (runs/, a README, the final model that
    ``save_model`` writes into it) are not checkpoints."""
    out = tmp_path / "out"
    states = _weights()
    first = _trainer_folder(out / "checkpoint-0", 0)
    save_file(states[0], first / "model.safetensors", metadata={"format": "pt"})
    second = _trainer_folder(out / "checkpoint-10", 10)
    shards = {"model-00001-of-00002.safetensors": ["0.weight", "0.bias"],
              "model-00002-of-00002.safetensors": ["2.weight", "2.bias"]}
    for name, keys in shards.items():
        save_file({k: states[10][k] for k in keys}, second / name, metadata={"format": "pt"})
    (second / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {k: name for name, keys in shards.items() for k in keys}}))
    (out / "runs").mkdir()
    (out / "README.md").write_text("a model card")
    save_file(states[10], out / "model.safetensors")  # the final model save_model writes: not a checkpoint
    (out / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"checkpoint-0 is one checkpoint \(it holds model.safetensors\): give "
                                              "the folder that holds it"):
        checkpoint_files(first)
    found = checkpoint_files(out)
    assert [(c.step, c.path.name, [f.name for f in c.files]) for c in found] == [
        (0, "checkpoint-0", ["model.safetensors"]),
        (10, "checkpoint-10", ["model.safetensors.index.json", *shards])]
    _measured_as_reference(tmp_path, out, reference)
    # a folder with pytorch_model.bin reads as the same state dict
    bin_folder = _trainer_folder(tmp_path / "bin" / "checkpoint-10", 10)
    torch.save(states[10], bin_folder / "pytorch_model.bin")
    assert folder_weights(bin_folder) == (bin_folder / "pytorch_model.bin",)
    (c,) = checkpoint_files(tmp_path / "bin")
    assert c.step == 10
    state = read_state_dict(c, model_keys=list(states[10]))
    assert state.keys() == states[10].keys() and all(torch.equal(state[k], states[10][k]) for k in state)


def test_one_folder_per_checkpoint_ray_tune_and_the_model_zoos(tmp_path: Path, reference) -> None:
    """``checkpoint_000000/checkpoints`` (a Ray Tune trainable's torch.save, as the Model Zoos ship it,
    beside its ``optimizer`` and Ray's hidden files): the step is the folder's number;
    ``checkpoint_000001/checkpoint.ckpt`` (Ray Train's Lightning callback): the file's global_step wins."""
    folder = tmp_path / "trial"
    states = _weights()
    zoo = folder / "checkpoint_000000"
    zoo.mkdir(parents=True)
    torch.save(states[0], zoo / "checkpoints")
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1, 2, 3]}]}, zoo / "optimizer")
    (zoo / ".tune_metadata").write_bytes(b"\x80\x04N.")
    (zoo / ".is_checkpoint").write_text("")
    ray = folder / "checkpoint_000001"
    ray.mkdir()
    torch.save(_lightning(states[10], 10), ray / "checkpoint.ckpt")
    (folder / "params.json").write_text("{}")
    (folder / "progress.csv").write_text("training_iteration\n1\n")
    assert [(c.step, c.path.name) for c in checkpoint_files(folder)] == [(0, "checkpoint_000000"),
                                                                         (10, "checkpoint_000001")]
    _measured_as_reference(tmp_path, folder, reference)


def test_a_manifest_lists_files_folders_and_files_inside_folders(tmp_path: Path) -> None:
    """Its steps win over every other rule; a folder with several candidate files is named by its file."""
    folder = tmp_path / "ckpt"
    states = _weights()
    (folder / "a").mkdir(parents=True)
    torch.save(_lightning(states[0], 400), folder / "a" / "checkpoint.ckpt")
    (folder / "b").mkdir()
    torch.save({"epoch": 1, "model_state_dict": states[10], "loss": 0.5,  # as PyTorch's tutorial saves
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1, 2, 3]}]}},
               folder / "b" / "model.pt")
    torch.save(states[10], folder / "b" / "ema.pt")
    torch.save({"state": {}, "param_groups": []}, folder / "b" / "optimizer.pt")  # never a candidate
    torch.save({}, folder / "b" / "rng_state_0.pth")
    save_file(states[10], folder / "final.safetensors", metadata={"step": "99"})
    with pytest.raises(CheckpointError, match=r"b: holds 2 checkpoint files \(ema.pt, model.pt\): name one in "
                                        r"manifest.json as \"b/ema.pt\""):
        checkpoint_files(folder)
    (folder / "manifest.json").write_text(json.dumps({"steps": {"a": 3, "b/model.pt": 5, "final.safetensors": 7}}))
    found = checkpoint_files(folder)
    assert [(c.step, str(c.path.relative_to(folder))) for c in found] == [
        (3, "a"), (5, "b/model.pt"), (7, "final.safetensors")]
    for c, step in zip(found, (0, 10, 10), strict=True):
        state = read_state_dict(c, model_keys=list(states[step]))
        assert all(torch.equal(state[k], v) for k, v in states[step].items())


def test_a_tied_weight_stored_once_fills_every_key_that_shares_it(tmp_path: Path) -> None:
    """``save_model`` (as ``save_pretrained``) keeps one of two keys sharing a tensor: the other is read
    from it; a key sharing nothing that is absent is still missing."""
    from safetensors.torch import save_model

    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.manual_seed(1)
    saved = tied_mlp((4,), 3)
    save_model(saved, str(folder / "step_3.safetensors"))
    model = tied_mlp((4,), 3)
    keys = model_keys(model)
    assert keys["b.weight"] == "a.weight" and keys["b.bias"] == "b.bias"
    (c,) = checkpoint_files(folder)
    state = read_state_dict(c, model_keys=keys)
    assert len(state) == 6
    model.load_state_dict(state, strict=True)
    for key, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor)
    # without the tie, b.weight is missing; without head.bias, it is
    with pytest.raises(CheckpointError, match=r"does not fit the model: 1 missing key \(b.weight\)$"):
        read_state_dict(c, model_keys=list(keys))
    state = {k: v for k, v in saved.state_dict().items() if k not in ("b.weight", "head.bias")}
    save_file(state, folder / "step_3.safetensors")
    with pytest.raises(CheckpointError, match=r"does not fit the model: 1 missing key \(head.bias\)$"):
        read_state_dict(c, model_keys=keys)


# -- one-line errors, nothing written ----------------------------------------------------------------

def _refused(tmp_path: Path, folder: Path, capsys, message: str) -> str:
    assert _measure(tmp_path, folder) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    assert err.startswith(f"error: {message}"), err
    _nothing_written(tmp_path)
    return err


def _with_good_first(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save(_weights()[0], folder / "step_0.pt")
    return folder


def test_a_pickled_whole_model_is_refused_naming_its_class(tmp_path: Path, capsys) -> None:
    folder = _with_good_first(tmp_path)
    torch.save(tiny_mlp((4,), 3), folder / "step_10.pt")
    _refused(tmp_path, folder, capsys, f"{folder / 'step_10.pt'}: holds a pickled Sequential object "
             "(torch.nn.modules.container.Sequential), not a state dict: save model.state_dict() instead")


def test_a_lightning_checkpoint_holding_an_object_names_its_global(tmp_path: Path, capsys) -> None:
    """Hyper-parameters holding an object a weights-only load refuses: the global is named, the file is
    not unpickled any further."""
    from pathlib import PurePosixPath

    folder = _with_good_first(tmp_path)
    torch.save(_lightning(_weights()[10], 10, hyper_parameters={"root": PurePosixPath("/data")}),
               folder / "epoch=1-step=10.ckpt")
    _refused(tmp_path, folder, capsys, f"{folder / 'epoch=1-step=10.ckpt'}: holds a pickled pathlib.PurePosixPath "
             "object beside its tensors, which a weights-only load refuses")


@pytest.mark.parametrize("kind", ["text.safetensors", "zip.pt", "text.ckpt"])
def test_a_foreign_file_is_one_line_naming_it(tmp_path: Path, capsys, kind: str) -> None:
    folder = _with_good_first(tmp_path)
    what, suffix = kind.split(".")
    path = folder / f"step_10.{suffix}"
    if what == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "not a checkpoint")
    else:
        path.write_text("these are notes, not weights\n" * 3)
    expected = "not a readable safetensors file" if suffix == "safetensors" else "not a readable checkpoint"
    _refused(tmp_path, folder, capsys, f"{path}: {expected}")


def test_a_key_mismatch_lists_the_first_missing_and_unexpected_keys(tmp_path: Path, capsys) -> None:
    folder = _with_good_first(tmp_path)
    state = _weights()[10]
    state = {"0.weight": state["0.weight"], "0.bias": state["0.bias"], "1.weight": state["2.weight"],
             "1.bias": state["2.bias"], "extra.a": torch.zeros(1), "extra.b": torch.zeros(1)}
    save_file(state, folder / "step_10.safetensors")
    _refused(tmp_path, folder, capsys, f"{folder / 'step_10.safetensors'}: does not fit the model: 2 missing keys "
             "(2.bias, 2.weight); 4 unexpected keys (1.bias, 1.weight, extra.a, ...)")


def test_a_prefix_that_fits_twice_is_refused(tmp_path: Path, capsys) -> None:
    """A LightningModule holding the network and an EMA copy of it: which one to measure is the user's call."""
    folder = _with_good_first(tmp_path)
    state = _weights()[10]
    ckpt = _lightning(state, 10)
    ckpt["state_dict"].update({"ema." + k: v for k, v in state.items()})
    torch.save(ckpt, folder / "last.ckpt")
    _refused(tmp_path, folder, capsys, f"{folder / 'last.ckpt'}: its keys fit the model under 2 prefixes "
             "('ema.', 'model.')")


def test_formats_mix_in_one_folder_but_two_checkpoints_of_one_step_are_refused(tmp_path: Path, capsys,
                                                                               reference) -> None:
    folder = _with_good_first(tmp_path)
    save_file(_weights()[10], folder / "final.safetensors", metadata={"step": "0"})
    assert _measure(tmp_path, folder) == 2
    assert capsys.readouterr().err.strip() == f"error: {folder}: final.safetensors and step_0.pt are both step 0"
    _nothing_written(tmp_path)
    save_file(_weights()[10], folder / "final.safetensors", metadata={"step": "10"})
    _measured_as_reference(tmp_path, folder, reference)


def test_a_shard_that_changes_while_the_folder_is_measured_stops_it(tmp_path: Path, monkeypatch, capsys) -> None:
    """The digest covers every file a folder checkpoint reads: a shard rewritten after the check pass
    stops the command, naming the checkpoint; a folder's digest moves with any one of its files."""
    from pipeline.extract import measure as measure_module

    out = tmp_path / "out"
    states = _weights()
    for step in STEPS:
        folder = _trainer_folder(out / f"checkpoint-{step}", step)
        save_file({k: states[step][k] for k in ("0.weight", "0.bias")}, folder / "a.safetensors")
        save_file({k: states[step][k] for k in ("2.weight", "2.bias")}, folder / "b.safetensors")
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            "0.weight": "a.safetensors", "0.bias": "a.safetensors", "2.weight": "b.safetensors",
            "2.bias": "b.safetensors"}}))
    snapshot = measure_module.measure_checkpoint

    def rewriting(*args):
        save_file({k: 2 * states[10][k] for k in ("2.weight", "2.bias")}, out / "checkpoint-10" / "b.safetensors")
        return snapshot(*args)

    monkeypatch.setattr(measure_module, "measure_checkpoint", rewriting)
    assert _measure(tmp_path, out) == 2
    assert capsys.readouterr().err.strip() == (f"error: {out / 'checkpoint-10'}: changed while the folder was being "
                                               "measured (its bytes are not those checked); nothing was written")
    _nothing_written(tmp_path)
