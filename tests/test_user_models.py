"""A user's own model (family ``custom``) and a folder of a user's checkpoints (``pipeline measure``).

The end-to-end path runs in the shared tiny corpus (tests/conftest.py): a factory model trained by a
study of the config, and a residual CNN trained by the fixture's own loop and measured from its
checkpoints, both through ingest, every analysis stage and the report. Here: what they leave in the
database, and the one-line errors of bad factories, bad blocks and bad checkpoint files.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from pipeline import cli
from pipeline.config import file_digest, parse_config
from pipeline.errors import ConfigError
from pipeline.extract.measure import CheckpointError, checkpoint_files
from pipeline.models.factory import FactoryError, build_factory_model
from pipeline.runspec import RunSpec
from tests.user_models import fixed_batch, residual_cnn, tiny_mlp


@pytest.mark.parametrize(("ref", "message"), [
    ("tests.user_models", "expected 'package.module:callable'"),
    ("tests.no_such_module:build", "cannot import 'tests.no_such_module'"),
    ("tests.user_models:missing", "has no attribute 'missing'"),
    ("tests.user_models:bad_shape", r"outputs of shape \(2, 4\) for a batch of 2, expected \(2, 3\)"),
    ("tests.user_models:bad_argmax", "do not depend differentiably"),
    ("tests.user_models:not_a_module", "returned a str, not a torch.nn.Module"),
])
def test_a_bad_factory_is_one_error_naming_the_key(ref: str, message: str) -> None:
    with pytest.raises(FactoryError, match=rf"^model = {ref!r}: .*{message}"):
        build_factory_model(ref, (4,), 3)


def test_blocks_must_be_submodules_and_default_to_the_modules_with_parameters() -> None:
    with pytest.raises(FactoryError, match=r"^blocks: 'nope' is not a submodule"):
        build_factory_model("tests.user_models:tiny_mlp", (4,), 3, blocks=["nope"])
    model = build_factory_model("tests.user_models:residual_cnn", (61,), 10)
    assert model.atlas_block_names == ["stem", "res.conv1", "res.bn1", "res.conv2", "head"]
    named = build_factory_model("tests.user_models:residual_cnn", (61,), 10, blocks=["stem", "res", "head"])
    assert named.atlas_block_names == ["stem", "res", "head"]


def test_the_models_own_parameters_are_a_block_and_blocks_can_be_a_depth() -> None:
    """A CLS token and a positional embedding held by the model itself form the block ``(own)``;
    ``depth=1`` takes a ResNet's top-level children; a block inside a module fx cannot trace into,
    a malformed depth or a module without parameters of its own is one error naming the key."""
    vit = build_factory_model("tests.user_models:tabular_vit", (4,), 3)
    assert vit.atlas_block_names == ["tokens", "(own)", "encoder", "head"]
    resnet = build_factory_model("tests.user_models:small_resnet", (61,), 10, blocks=["depth=1"])
    assert resnet.atlas_block_names == ["conv1", "bn1", "layer1", "layer2", "fc"]
    deeper = build_factory_model("tests.user_models:small_resnet", (61,), 10, blocks=["depth=3"])
    assert deeper.atlas_block_names[:7] == ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2",
                                            "layer1.0.bn2", "layer2.0.conv1"]
    assert "layer2.0.downsample" in deeper.atlas_block_names  # depth 3 is the Sequential; its children are leaves
    named = build_factory_model("tests.user_models:tabular_vit", (4,), 3, blocks=["tokens", "(own)", "encoder"])
    assert named.atlas_block_names == ["tokens", "(own)", "encoder"]
    with pytest.raises(FactoryError, match=r"^blocks: 'depth=0': a depth is one entry 'depth=K', K >= 1"):
        build_factory_model("tests.user_models:small_resnet", (61,), 10, blocks=["depth=0"])
    with pytest.raises(FactoryError, match=r"^blocks: 'depth=1': a depth is one entry"):
        build_factory_model("tests.user_models:small_resnet", (61,), 10, blocks=["depth=1", "fc"])
    with pytest.raises(FactoryError, match=r"^blocks: 'encoder.\(own\)': 'encoder' is not a module .* with "
                                           r"parameters of its own"):
        build_factory_model("tests.user_models:tabular_vit", (4,), 3, blocks=["encoder.(own)"])
    with pytest.raises(FactoryError, match=r"block 'encoder.layers.0' is inside 'encoder' \(TransformerEncoder\), "
                                           r"which torch.fx cannot trace into: name 'encoder'"):
        build_factory_model("tests.user_models:tabular_vit", (4,), 3, blocks=["tokens", "encoder.layers.0"])
    (spec,) = parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "blocks": "depth=1",
                                                            "model": "tests.user_models:small_resnet"}}]}).runs()
    assert spec.blocks == ("depth=1",)
    with pytest.raises(ConfigError, match=r"study\[0\]\.grid\.blocks: 'depth=x': a depth is one entry"):
        parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "blocks": ["depth=x"],
                                                       "model": "tests.user_models:small_resnet"}}]})


def test_lists_of_modules_read_weights_tied_weights_and_a_scale_used_last() -> None:
    """A ModuleList is not a level of ``depth``; a module whose weight the model reads (its forward
    never runs) is its own-parameter block; a tied weight is one block's; a logit scale held by the
    model and used last is not the output block; a block list out of forward order is refused."""
    from pipeline.models.block_graph import output_block

    model = build_factory_model("tests.user_models:tied_stack", (4,), 3)
    assert model.atlas_block_names == ["tokens", "pos.(own)", "layers.0", "layers.1", "unembed", "head", "(own)"]
    assert output_block(model.atlas_block_names) == 5
    deep = build_factory_model("tests.user_models:tied_stack", (4,), 3, blocks=["depth=1"])
    assert deep.atlas_block_names == model.atlas_block_names
    with pytest.raises(FactoryError, match=r"^blocks: \['head', 'tokens'\] are not in forward order: the traced "
                                           r"forward pass first uses them as \['tokens', 'head'\]"):
        build_factory_model("tests.user_models:tied_stack", (4,), 3, blocks=["head", "tokens"])

    from pipeline.extract.run import train_and_measure

    spec = RunSpec(dataset="iris", family="custom", model="tests.user_models:tied_stack", epochs=1,
                   metric_checkpoints=2, spectral_snapshots=1, probe_size=16)
    rows = train_and_measure(spec)
    assert [r["is_output"] for r in rows["layers"]] == [False] * 5 + [True, False]
    reps = {r["representation"]: (r["layer_index"], r["status"]) for r in rows["margins"] if not r["correct_only"]}
    assert reps["output"] == (5, "ok") and reps["h6"] == (6, "no_output") and reps["h1"] == (1, "no_output")
    assert "h5" not in reps


def test_a_vit_with_a_cls_token_is_measured_in_every_table() -> None:
    """The root's own parameters are a block of every per-block table: curvature (its local Hessian,
    of a block with no inputs, is the identity reading: exactly zero under phi = sum), spectra of its
    matrices, its stored tensors, and a margin row saying it has no output of each point."""
    from pipeline.extract.run import train_and_measure

    spec = RunSpec(dataset="iris", family="custom", model="tests.user_models:tabular_vit", epochs=1,
                   metric_checkpoints=2, spectral_snapshots=1, probe_size=16)
    rows = train_and_measure(spec)
    kinds = {(r["layer_index"], r["kind"]): r for r in rows["hessian_spectra"]}
    assert set(kinds) == {(i, k) for i in range(4) for k in ("local", "loss", "ggn")}
    assert kinds[(1, "local")]["exactly_zero"] and kinds[(1, "loss")]["n_params"] == 4 + 5 * 4
    assert not kinds[(2, "local")]["exactly_zero"] and kinds[(2, "loss")]["method"] == "autograd"
    assert [r["name"] for r in rows["layers"]] == ["tokens", "(own)", "encoder", "head"]
    assert {r["tensor"] for r in rows["weights"] if r["layer_index"] == 1} == {"cls_token", "pos_embed"}
    status = {r["representation"]: r["status"] for r in rows["margins"] if not r["correct_only"]}
    assert status["h1"] == "no_output" and status["h0"] == status["h2"] == status["output"] == "ok"
    assert {r["block_index"]: r["name"] for r in rows["blocks"]}[1] == "(own)"


def test_the_config_ties_model_to_family_custom() -> None:
    base = {"study": [{"name": "s", "grid": {"dataset": "iris", "model": "tests.user_models:tiny_mlp"}}]}
    (spec,) = parse_config(base).runs()
    assert spec.family == "custom" and spec.model == "tests.user_models:tiny_mlp"
    with pytest.raises(ConfigError, match=r"study\[0\]\.grid\.model: family 'custom' needs model"):
        parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "family": "custom"}}]})
    with pytest.raises(ConfigError, match=r"study\[0\]\.grid\.model: is for a user's model"):
        parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "family": "mlp",
                                                       "model": "tests.user_models:tiny_mlp"}}]})
    with pytest.raises(ConfigError, match=r"study\[0\]\.grid\.model: expected 'package.module:callable'"):
        parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "model": "no_colon"}}]})
    blocks = parse_config({"study": [{"name": "s", "grid": {"dataset": "iris", "model": "tests.user_models:tiny_mlp",
                                                            "blocks": ["0", "2"]}}]}).runs()
    assert [r.blocks for r in blocks] == [("0", "2")]  # a flat list is one architecture, not an axis
    # fields the factory decides do not split one model into several run ids
    grid = {"dataset": "iris", "model": "tests.user_models:tiny_mlp", "activation": ["relu", "tanh"],
            "widths": [[4], [8]]}
    assert len(parse_config({"study": [{"name": "s", "grid": grid}]}).runs()) == 1


# -- pipeline measure: bad folders and files ------------------------------------------------------

def _save_states(folder: Path, build, input_shape, output_size, steps=(0, 10)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build(input_shape, output_size)
    for step in steps:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        torch.save({"state_dict": model.state_dict(), "step": step}, folder / f"step_{step}.pt")


def _measure(tmp_path: Path, folder: Path, model: str = "tests.user_models:tiny_mlp", data: str = "iris") -> int:
    return cli.main(["measure", "--model", model, "--checkpoints", str(folder), "--data", data,
                     "--db", str(tmp_path / "m.duckdb"), "--shards", str(tmp_path / "shards"), "--quiet",
                     "--probe-size", "32"])


def _nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "m.duckdb").exists()
    assert not list((tmp_path / "shards").glob("**/manifest.json")) if (tmp_path / "shards").exists() else True


def test_the_shard_store_and_the_database_are_probed_before_a_checkpoint_is_read(tmp_path: Path, capsys,
                                                                                monkeypatch) -> None:
    """A file where the shard store, the database or its folder should be is one line naming it, before
    any checkpoint is read or measured (a read-only shard store: tests/test_bad_input.py)."""
    from pipeline.extract import measure as measure_module

    def untouched(*_args, **_kwargs):
        raise AssertionError("a checkpoint was read before the outputs were probed")

    monkeypatch.setattr(measure_module, "check_folder", untouched)
    monkeypatch.setattr(measure_module, "measure_folder", untouched)
    folder = tmp_path / "ckpt"
    _save_states(folder, tiny_mlp, (4,), 3, steps=(0,))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (tmp_path / "m.duckdb").mkdir()
    before = sorted(tmp_path.rglob("*"))
    for db, shards, expected in (
            (tmp_path / "new.duckdb", a_file, f"--shards: {a_file} exists and is not a folder"),
            (tmp_path / "new.duckdb", a_file / "s", f"--shards: cannot create {a_file / 's'}: {a_file} is a file"),
            (a_file / "m.duckdb", tmp_path / "shards", f"--db: {a_file} exists and is not a folder"),
            (tmp_path / "m.duckdb", tmp_path / "shards",
             f"{tmp_path / 'm.duckdb'}: cannot open database: a folder, not a database file")):
        assert cli.main(["measure", "--model", "tests.user_models:tiny_mlp", "--checkpoints", str(folder),
                         "--data", "iris", "--db", str(db), "--shards", str(shards), "--quiet"]) == 2
        assert capsys.readouterr().err.strip() == f"error: {expected}"
        assert sorted(tmp_path.rglob("*")) == before


def test_a_truncated_checkpoint_stops_the_command_before_anything_is_written(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ckpt"
    _save_states(folder, tiny_mlp, (4,), 3)
    blob = (folder / "step_10.pt").read_bytes()
    (folder / "step_10.pt").write_bytes(blob[: len(blob) // 2])
    assert _measure(tmp_path, folder) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder / 'step_10.pt'}: not a readable checkpoint")
    _nothing_written(tmp_path)


def test_a_foreign_checkpoint_names_its_file_and_what_does_not_fit(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ckpt"
    _save_states(folder, tiny_mlp, (4,), 3)
    torch.save(residual_cnn((61,), 10).state_dict(), folder / "step_20.pt")
    assert _measure(tmp_path, folder) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder / 'step_20.pt'}: does not fit the model") and "\n" not in err
    _nothing_written(tmp_path)


def test_a_non_finite_checkpoint_and_a_folder_without_steps_are_refused(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ckpt"
    _save_states(folder, tiny_mlp, (4,), 3, steps=(0,))
    state = torch.load(folder / "step_0.pt", weights_only=True)["state_dict"]
    state["0.weight"][0, 0] = float("nan")
    torch.save(state, folder / "step_5.pt")
    assert _measure(tmp_path, folder) == 2
    assert "step_5.pt: tensor '0.weight' is not finite" in capsys.readouterr().err
    _nothing_written(tmp_path)
    (folder / "final.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="final.pt: no step in the file name"):
        checkpoint_files(folder)
    (folder / "manifest.json").write_text('{"steps": {"step_0.pt": 0, "final.pt": 0}}')
    with pytest.raises(CheckpointError, match="are both step 0"):
        checkpoint_files(folder)


def test_a_model_that_fails_while_it_is_measured_is_one_line_naming_the_file_and_the_block(
        tmp_path: Path, capsys, monkeypatch) -> None:
    """Any exception a user's model raises inside the engine ends as ``error: <file>: ...`` with exit
    status 2 and nothing written; one raised in a block's curvature names the block."""
    folder = tmp_path / "ckpt"
    _save_states(folder, fixed_batch, (4,), 3)
    assert _measure(tmp_path, folder, model="tests.user_models:fixed_batch") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder / 'step_0.pt'}: ValueError: Expected input batch_size (2)")
    assert "\n" not in err
    _nothing_written(tmp_path)

    from pipeline.curvature import block_engine

    def broken(*args, **kwargs):
        raise RuntimeError("derivative for aten::something is not implemented\nmore detail")

    folder = tmp_path / "ckpt2"
    _save_states(folder, tiny_mlp, (4,), 3)
    monkeypatch.setattr(block_engine, "_ggn_row", broken)
    assert _measure(tmp_path, folder) == 2
    assert capsys.readouterr().err.strip() == (f"error: {folder / 'step_0.pt'}: block '0': RuntimeError: derivative "
                                               "for aten::something is not implemented")
    _nothing_written(tmp_path)


def test_measuring_holds_one_state_dict_at_a_time_and_rereads_each_file(tmp_path: Path, monkeypatch) -> None:
    """Every file is checked before any is measured, and then each is read again just before its
    snapshot: the k-th read of the measuring pass follows the (k-1)-th snapshot, no state dict
    outlives its snapshot (weak references to them are dead by the next read), and no file is read
    a third time (the check pass's digest names the run)."""
    import gc
    import weakref

    from pipeline.extract import measure as measure_module

    folder = tmp_path / "ckpt"
    _save_states(folder, tiny_mlp, (4,), 3, steps=(0, 10, 20))
    events, alive = [], []
    read, snapshot = measure_module.read_state_dict, measure_module.measure_checkpoint

    def reading(checkpoint, *args):
        gc.collect()
        events.append(("read", checkpoint.path.name, sum(r() is not None for r in alive)))
        state = read(checkpoint, *args)
        holder = type("Held", (dict,), {})(state)  # a dict subclass can be weakly referenced
        alive.append(weakref.ref(holder))
        return holder

    def measuring(model, data, tensors, loss_fn, settings, seed, step, *args):
        events.append(("snapshot", step))
        return snapshot(model, data, tensors, loss_fn, settings, seed, step, *args)

    byte_reads = []
    read_bytes = Path.read_bytes

    def counting(path: Path) -> bytes:
        if path.suffix == ".pt":
            byte_reads.append(path.name)
        return read_bytes(path)

    monkeypatch.setattr(measure_module, "read_state_dict", reading)
    monkeypatch.setattr(measure_module, "measure_checkpoint", measuring)
    monkeypatch.setattr(Path, "read_bytes", counting)
    assert _measure(tmp_path, folder) == 0
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert sorted(byte_reads) == sorted(2 * ["step_0.pt", "step_10.pt", "step_20.pt"])
    names = ["step_0.pt", "step_10.pt", "step_20.pt"]
    assert [e[:2] for e in events] == ([("read", n) for n in names]
                                       + [e for n, s in zip(names, (0, 10, 20), strict=True)
                                          for e in (("read", n), ("snapshot", s))])
    assert all(e[2] == 0 for e in events if e[0] == "read")
    with duckdb.connect(str(tmp_path / "m.duckdb"), read_only=True) as con:
        assert con.execute("SELECT list(DISTINCT step ORDER BY step) FROM hessian_spectra").fetchone()[0] == [0, 10, 20]


def test_a_checkpoint_that_changes_while_the_folder_is_measured_stops_it_with_nothing_written(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """The bytes measured are the bytes checked and hashed into the run id: a trainer overwriting a
    file after the check (here, during the first snapshot), or any file changing after the run id
    was computed, is one error naming it, and no shard or database is written."""
    from pipeline.extract import measure as measure_module

    folder = tmp_path / "ckpt"
    _save_states(folder, tiny_mlp, (4,), 3, steps=(0, 10, 20))
    snapshot = measure_module.measure_checkpoint

    def overwriting(*args):
        torch.save(tiny_mlp((4,), 3).state_dict(), folder / "step_20.pt")  # a valid file, other weights
        return snapshot(*args)

    monkeypatch.setattr(measure_module, "measure_checkpoint", overwriting)
    assert _measure(tmp_path, folder) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {folder / 'step_20.pt'}: changed while the folder was being measured (its bytes "
                   "are not those checked); nothing was written")
    _nothing_written(tmp_path)
    monkeypatch.setattr(measure_module, "measure_checkpoint", snapshot)
    # through the API, a spec whose digest is not that of the files as the check pass reads them
    spec = RunSpec(dataset="iris", family="custom", model="tests.user_models:tiny_mlp", size="custom", widths=(1,),
                   probe_size=16, checkpoint_digest="0" * 16)
    with pytest.raises(CheckpointError, match="its files changed after the run id was computed from them"):
        measure_module.measure_folder(spec, checkpoint_files(folder), folder)


def _write_csv(path: Path, shift: int, rows: int = 45) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shift)
    lines = ["a,b,c,d,y"] + [",".join(f"{v:.4f}" for v in rng.normal(shift, 1, 4)) + f",{i % 3}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _measure_file(tmp_path: Path, folder: Path, data: Path, db: str, *extra: str) -> int:
    return cli.main(["measure", "--model", "tests.user_models:tiny_mlp", "--checkpoints", str(folder), "--data",
                     str(data), "--target", "y", "--db", str(tmp_path / db), "--shards", str(tmp_path / "shards"),
                     "--quiet", "--probe-size", "16", "--exact-limit", "0", "--hvp-budget", "20", *extra])


def test_two_data_files_of_one_stem_never_share_a_datasets_row(tmp_path: Path, capsys) -> None:
    """``datasets`` keeps one row per name: a second file named like the first (or like a built-in data
    set) is refused before it is measured, by `pipeline measure`, and by ingest for a shard measured
    elsewhere; ``--data-name`` gives it a name of its own."""
    from snapshot_loader.ingest import ingest_shards

    folder = tmp_path / "ckpt"
    _save_states(folder, tiny_mlp, (4,), 3, steps=(0,))
    first, second = _write_csv(tmp_path / "a" / "train.csv", 0), _write_csv(tmp_path / "b" / "train.csv", 5, 60)
    assert _measure_file(tmp_path, folder, first, "m.duckdb") == 0
    capsys.readouterr()
    with duckdb.connect(str(tmp_path / "m.duckdb"), read_only=True) as con:
        first_run, first_digest = con.execute("SELECT run_id, json_extract_string(config_json, '$.dataset_digest') "
                                              "FROM runs").fetchone()
    second_digest = file_digest(second, "y", "classification")
    assert first_digest and second_digest and first_digest != second_digest
    clash = (f"data set 'train' (digest {second_digest}) is not the 'train' of run {first_run} already in the "
             f"database (digest {first_digest}): give one of them another name")
    assert _measure_file(tmp_path, folder, second, "m.duckdb") == 2
    assert capsys.readouterr().err.strip() == f"error: --data-name: {clash}"
    assert len(list((tmp_path / "shards").glob("**/manifest.json"))) == 1  # refused before it was measured
    # a config's [[dataset]] of that name is refused before its runs are extracted, naming the entry
    config = tmp_path / "c.toml"
    config.write_text(f'[[dataset]]\nname = "train"\npath = "{second}"\ntarget = "y"\ntask = "classification"\n'
                      '[run]\nepochs = 1\nmetric_checkpoints = 2\nspectral_snapshots = 1\nprobe_size = 16\n'
                      '[[study]]\nname = "s"\n[study.grid]\ndataset = "train"\n')
    assert cli.main(["extract", "--config", str(config), "--db", str(tmp_path / "m.duckdb"), "--shards",
                     str(tmp_path / "shards"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {config}: [[dataset]] name 'train': {clash}"
    assert len(list((tmp_path / "shards").glob("**/manifest.json"))) == 1
    # measured into another database, its shard is refused by this one's ingest, as a refusal (not corrupt)
    assert _measure_file(tmp_path, folder, second, "other.duckdb") == 0
    report = ingest_shards(tmp_path / "m.duckdb", tmp_path / "shards")
    assert len(report.ingested) == 0 and not report.errors and len(report.refused) == 1
    assert report.refused[0].endswith(clash)
    assert _measure_file(tmp_path, folder, second, "m.duckdb", "--data-name", "train_b") == 0
    with duckdb.connect(str(tmp_path / "m.duckdb"), read_only=True) as con:
        assert con.execute("SELECT name, n_rows FROM datasets ORDER BY name").fetchall() == [("train", 45),
                                                                                           ("train_b", 60)]
        assert con.execute("SELECT dataset FROM runs ORDER BY dataset").fetchall() == [("train",), ("train_b",)]
    assert _measure_file(tmp_path, folder, _write_csv(tmp_path / "iris.csv", 1), "m.duckdb") == 2
    assert capsys.readouterr().err.strip().endswith("'iris' is a built-in data set's name; give the file's data "
                                                    "set another one")


# -- the tiny corpus: a trained custom run and a measured folder -------------------------------------

def test_custom_and_measured_runs_are_in_every_per_block_table(built_corpus) -> None:
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    runs = con.execute("SELECT run_id, model, checkpoint_dir IS NOT NULL FROM runs WHERE family = 'custom' "
                       "ORDER BY 3").fetchall()
    assert [(m, measured) for _, m, measured in runs] == [("tests.user_models:tiny_mlp", False),
                                                          ("tests.user_models:residual_cnn", True)]
    measured = runs[1][0]
    names = [r[0] for r in con.execute("SELECT name FROM layers WHERE run_id = ? ORDER BY layer_index",
                                       [measured]).fetchall()]
    assert names == ["stem", "res.conv1", "res.bn1", "res.conv2", "head"]
    steps = [r[0] for r in con.execute("SELECT step FROM checkpoints WHERE run_id = ? ORDER BY step",
                                       [measured]).fetchall()]
    assert steps == [0, 20, 40]
    for run_id, _, _ in runs:
        n_blocks = con.execute("SELECT count(*) FROM layers WHERE run_id = ?", [run_id]).fetchone()[0]
        n_steps = con.execute("SELECT count(*) FROM checkpoints WHERE run_id = ? AND is_spectral",
                              [run_id]).fetchone()[0]
        kinds = con.execute("SELECT kind, count(*) FROM hessian_spectra WHERE run_id = ? GROUP BY kind ORDER BY kind",
                            [run_id]).fetchall()
        assert kinds == [(k, n_blocks * n_steps) for k in ("ggn", "local", "loss")]
        pressure = con.execute("SELECT count(gradient_pressure), count(natural_gradient_norm) FROM layer_stats "
                               "WHERE run_id = ?", [run_id]).fetchone()
        assert pressure == (n_blocks * n_steps, n_blocks * n_steps)
        reps = con.execute("SELECT count(DISTINCT representation) FROM margins WHERE run_id = ? AND status = 'ok'",
                           [run_id]).fetchone()[0]
        assert reps == n_blocks + 1  # the input, every block's output but the last, the logits
        features = con.execute("SELECT count(*) FROM analysis_features WHERE run_id = ?", [run_id]).fetchone()[0]
        assert features == n_steps
    # every weight matrix of the residual CNN is a point cloud; the principal one per block feeds the stage
    clouds = con.execute("SELECT layer_index, tensor, principal, n_neurons FROM layer_topology WHERE run_id = ? "
                         "AND step = 0 ORDER BY layer_index", [measured]).fetchall()
    assert clouds == [(0, "weight", True, 4), (1, "weight", True, 4), (3, "weight", True, 4), (4, "weight", True, 10)]
    values = con.execute("SELECT eigenvalues FROM hessian_spectra WHERE run_id = ? AND step = 0 AND layer_index = 1 "
                         "AND kind = 'loss'", [measured]).fetchone()[0]
    assert len(values) == 4 * 9 * 4 + 4 and np.isfinite(values).all()


def test_torch_attention_a_tuple_output_and_a_frozen_parameter_are_measured() -> None:
    from pipeline.extract.run import train_and_measure
    from pipeline.runspec import RunSpec

    model = build_factory_model("tests.user_models:token_attention", (4,), 3)
    assert model.atlas_block_names == ["embed", "attn", "head"]  # the root's frozen scale is in no block
    spec = RunSpec(dataset="iris", family="custom", model="tests.user_models:token_attention", epochs=1,
                   metric_checkpoints=2, spectral_snapshots=1, probe_size=16)
    rows = train_and_measure(spec)
    kinds = {(r["layer_index"], r["kind"]) for r in rows["hessian_spectra"]}
    assert kinds == {(i, k) for i in range(3) for k in ("local", "loss", "ggn")}
    attn = next(r for r in rows["hessian_spectra"] if r["layer_index"] == 1 and r["kind"] == "local")
    assert attn["method"] == "autograd" and not attn["exactly_zero"]
    assert {r["representation"] for r in rows["margins"] if r["status"] == "ok"} == {"input", "h0", "h1", "output"}
    # per-matrix spectra: the packed in_proj_weight as its Q, K and V thirds, each checked against the
    # singular values of the stored tensor's rows
    matrices = {(r["layer_index"], r["tensor"], r["part"]): r for r in rows["matrix_spectra"]}
    assert set(matrices) == {(0, "weight", "all"), (1, "out_proj.weight", "all"), (2, "weight", "all"),
                             *((1, "in_proj_weight", p) for p in "qkv")}
    stored = next(r for r in rows["weights"] if r["layer_index"] == 1 and r["tensor"] == "in_proj_weight")
    w = torch.from_numpy(stored["values"]).double().reshape(stored["shape"])
    for k, part in enumerate("qkv"):
        row = matrices[(1, "in_proj_weight", part)]
        assert (row["rows"], row["cols"], row["principal"]) == (4, 4, True)
        np.testing.assert_allclose(row["weight_sv"], torch.linalg.svdvals(w[4 * k:4 * (k + 1)]).numpy(), rtol=1e-5)
    assert not matrices[(1, "out_proj.weight", "all")]["principal"]
