"""Config validation: every malformed config is a one-line error naming the key, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError
from pipeline.runspec import RunSpec
from tests.conftest import TINY_CONFIG, run_cli

STUDY = '[[study]]\nname = "s"\n[study.grid]\ndataset = ["iris"]\n'

# (config text, the key the message must name, a fragment of the message)
MALFORMED = [
    ("[corpus]\nname = 'x'\n[run]\nepochs = 3\n" + STUDY + "bogus = 1\n", "study[0].grid.bogus", "unknown key"),
    ("[run]\nepochz = 3\n" + STUDY, "run.epochz", "unknown key"),
    ("[corpus]\nnmae = 'x'\n" + STUDY, "corpus.nmae", "unknown key"),
    ("[run]\nepochs = 'ten'\n" + STUDY, "run.epochs", "expected an integer"),
    ("[run]\nlr = -0.1\n" + STUDY, "run.lr", "out of range"),
    ("[run]\ntrain_fraction = 1.5\n" + STUDY, "run.train_fraction", "out of range"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = []\n', "study[0].grid.dataset", "empty list"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = ["mnist_not_here"]\n', "study[0].grid.dataset",
     "unknown dataset 'mnist_not_here'"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\noptimizer = ["adamw"]\n', "study[0].grid.optimizer",
     "unknown optimizer 'adamw'"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nactivation = "swish"\n', "study[0].grid.activation",
     "unknown activation 'swish'"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nsize = "small"\nwidths = [8, 8]\n',
     "study[0].grid.widths", "contradicts size"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nwidths = [8, -1]\n', "study[0].grid.widths",
     "positive integers"),
    ("[run]\nepochs = 3\n", "study", "no [[study]] tables"),
    (STUDY + STUDY, "study[1].name", "duplicate study name"),
    ('[[study]]\nname = "s"\n[study.grid]\nseed = [0, 1]\n', "study[0].grid.dataset", "missing"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nmetric_checkpoints = 5\nspectral_snapshots = 9\n',
     "study[0].grid.spectral_snapshots", "must not exceed"),
    ('[[dataset]]\nname = "mine"\npath = "nowhere.csv"\ntarget = "y"\ntask = "classification"\n' + STUDY,
     "dataset[0].path", "file not found"),
    ("[run\nepochs = 3\n", "invalid TOML", "line 1"),
    ("[run]\nbatch_size = true\n" + STUDY, "run.batch_size", "expected an integer"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nnorm = "batchnorm"\nbatch_size = 1\n',
     "study[0].grid.batch_size", "batch norm needs batches of at least 2"),
    ("[run]\ndataset_digest = 'x'\n" + STUDY, "run.dataset_digest", "unknown key"),
    ("[run]\nhvp_budget = 5\n" + STUDY, "run.hvp_budget", "out of range"),
    ('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nregularizer = "dropconnect"\n',
     "study[0].grid.regularizer", "unknown regularizer 'dropconnect'"),
    ("[run]\nrho = 0\n" + STUDY, "run.rho", "out of range"),
    ("[run]\npenalty = -1.0\n" + STUDY, "run.penalty", "out of range"),
    ('[[study]]\nname = "s"\nsample = 5\n[study.grid]\ndataset = ["iris", "wine"]\n', "study[0].sample",
     "more than the grid's 2 distinct runs"),
    ('[[study]]\nname = "s"\nsample = 0\n[study.grid]\ndataset = "iris"\n', "study[0].sample",
     "positive integer"),
    ('[[study]]\nname = "s"\nsample_seed = 3\n[study.grid]\ndataset = "iris"\n', "study[0].sample_seed",
     "without sample"),
]


@pytest.mark.parametrize("text,key,fragment", MALFORMED, ids=[m[1] + ":" + m[2][:20] for m in MALFORMED])
def test_malformed_config_names_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert key in message and fragment in message


def test_cli_rejects_bad_config_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nactivation = "swish"\n')
    shards, db = tmp_path / "shards", tmp_path / "out" / "c.duckdb"
    for command in ("extract", "ingest", "plan"):
        proc = run_cli(command, "--config", str(bad), "--shards", str(shards), "--db", str(db))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "study[0].grid.activation" in lines[0]
    assert not shards.exists() and not db.parent.exists()


def test_grid_expansion_and_defaults(tiny_config: Path) -> None:
    config = load_config(tiny_config)
    runs = config.runs()
    assert len(runs) == 4 + 2 + 3 + 4 + 2 + 1
    mix = config.studies[0].runs
    assert {(r.dataset, r.activation) for r in mix} == {(d, a) for d in ("iris", "diabetes")
                                                         for a in ("relu", "sigmoid")}
    assert all(r.epochs == 3 and r.widths == (16,) for r in mix)
    norms = config.studies[1].runs
    assert {r.norm for r in norms} == {"batchnorm", "layernorm"} and all(r.widths == (64, 64) for r in norms)


def test_duplicate_runs_across_studies_are_planned_once() -> None:
    raw = {"study": [{"name": "a", "grid": {"dataset": "iris"}}, {"name": "b", "grid": {"dataset": ["iris"]}}]}
    config = parse_config(raw)
    assert len(config.runs()) == 1
    assert len(config.study_membership()) == 2


def test_run_id_is_stable_and_depends_on_every_field() -> None:
    spec = RunSpec(dataset="iris")
    # A literal: if this changes, every stored corpus loses track of its finished runs. (It last changed
    # with shard schema 5, whose default hvp_budget of 320 came with curvature estimates that carry
    # standard errors; older shards are re-extracted anyway.)
    assert spec.run_id == RunSpec(dataset="iris").run_id == "6d0fcf869171912f"
    assert RunSpec(dataset="iris", seed=1).run_id != spec.run_id
    assert RunSpec(dataset="iris", lr=0.0011).run_id != spec.run_id
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_the_scale_config_reaches_the_papers_nine_million_parameters() -> None:
    """configs/scale.toml: a width ladder whose largest model has 8-10M parameters (paper 001's 9M)."""
    from pipeline.datasets.run_data import prepared_dataset
    from pipeline.models.build import build_network
    from pipeline.models.mlp import count_parameters

    runs = load_config(Path(__file__).resolve().parents[1] / "configs" / "scale.toml").runs()
    data = prepared_dataset("digits")
    sizes = sorted(count_parameters(build_network(r, data.X.shape[1], data.output_dim, data.feature_names))
                   for r in runs)
    assert len(sizes) == 3 and sizes[0] < sizes[1] < sizes[2]
    assert 8_000_000 <= sizes[-1] <= 10_000_000, sizes


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    default = load_config(root / "default.toml")
    assert len(default.runs()) >= 30
    paper = load_config(root / "paper.toml")
    datasets = {r.dataset for r in paper.runs()}
    from pipeline.datasets.registry import REGISTRY

    tasks = [REGISTRY[d].task for d in datasets]
    assert tasks.count("classification") == 22 and tasks.count("regression") == 15
    assert len(paper.runs()) >= 147
    gap = load_config(root / "gap.toml").runs()
    assert len(gap) >= 377 and {r.dataset for r in gap} and all(REGISTRY[r.dataset].task == "classification"
                                                                for r in gap)
    for field in ("widths", "lr", "batch_size", "weight_decay", "dropout", "train_fraction", "label_noise"):
        assert len({getattr(r, field) for r in gap}) >= 2, field
    regs = load_config(root / "regularizers.toml").runs()
    per = {}
    for r in regs:
        per.setdefault(r.regularizer, set()).add((r.dataset, r.seed))
    assert set(per) == {"none", "grad_norm", "hessian_trace", "sam", "fisher_sam"}
    assert all(len({d for d, _ in v}) >= 5 and len({s for _, s in v}) >= 3 for v in per.values())
    assert {r.optimizer for r in paper.runs()} == {"adam", "sgd", "rmsprop"}
    assert {r.activation for r in paper.runs()} >= {"relu", "sigmoid", "tanh"}
    assert {r.size for r in paper.runs()} == {"small", "medium", "large"}
    assert len({r.init for r in paper.runs()}) >= 3


def test_regularizer_fields_keep_old_run_ids_and_unused_strengths_are_reset() -> None:
    import tomllib

    # the new fields at their defaults leave the id of every earlier run as it was
    assert RunSpec(dataset="iris", regularizer="none", rho=0.05).run_id == "6d0fcf869171912f"
    cfg = parse_config(tomllib.loads('[run]\nrho = 0.2\npenalty = 0.5\n[[study]]\nname = "s"\n[study.grid]\n'
                                     'dataset = "iris"\nregularizer = ["none", "sam", "grad_norm"]\n'))
    by_reg = {r.regularizer: r for r in cfg.runs()}
    assert by_reg["none"].run_id == RunSpec(dataset="iris").run_id  # rho and penalty unused: reset
    assert (by_reg["sam"].rho, by_reg["sam"].penalty) == (0.2, RunSpec.penalty)
    assert (by_reg["grad_norm"].penalty, by_reg["grad_norm"].rho) == (0.5, RunSpec.rho)


def test_study_sample_is_a_seeded_subset_of_the_grid() -> None:
    import tomllib

    text = '[[study]]\nname = "s"\nsample = 4\nsample_seed = {seed}\n[study.grid]\ndataset = ["iris", "wine"]\n' \
           'seed = [0, 1, 2, 3, 4]\n'
    a = parse_config(tomllib.loads(text.format(seed=0))).runs()
    assert len(a) == 4 and len({r.run_id for r in a}) == 4
    assert [r.run_id for r in a] == [r.run_id for r in parse_config(tomllib.loads(text.format(seed=0))).runs()]
    assert {r.run_id for r in a} != {r.run_id for r in parse_config(tomllib.loads(text.format(seed=1))).runs()}


def test_tiny_config_text_is_a_valid_config() -> None:
    import tomllib

    assert parse_config(tomllib.loads(TINY_CONFIG)).name == "tiny"


def test_widths_list_is_one_architecture_and_list_of_lists_an_axis() -> None:
    one = parse_config({"study": [{"name": "a", "grid": {"dataset": "iris", "widths": [8, 4]}}]})
    assert [r.widths for r in one.runs()] == [(8, 4)] and one.runs()[0].size == "custom"
    axis = parse_config({"study": [{"name": "a", "grid": {"dataset": "iris", "widths": [[8], [8, 8]]}}]})
    assert sorted(r.widths for r in axis.runs()) == [(8,), (8, 8)]


def _custom_config(tmp_path: Path, target: str = "y", task: str = "regression", twice: bool = False) -> Path:
    entry = f'[[dataset]]\nname = "mine"\npath = "d.csv"\ntarget = "{target}"\ntask = "{task}"\n'
    path = tmp_path / "c.toml"
    path.write_text(entry * (2 if twice else 1) + '[[study]]\nname = "s"\n[study.grid]\ndataset = "mine"\n')
    return path


def test_custom_dataset_identity_enters_the_run_id(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,y,z\n" + "".join(f"{i},{i % 3},{i * 2}\n" for i in range(30)))
    base = load_config(_custom_config(tmp_path)).runs()[0].run_id
    assert load_config(_custom_config(tmp_path)).runs()[0].run_id == base
    assert load_config(_custom_config(tmp_path, target="z")).runs()[0].run_id != base
    assert load_config(_custom_config(tmp_path, task="classification")).runs()[0].run_id != base
    (tmp_path / "d.csv").write_text("a,y,z\n" + "".join(f"{i},{i % 4},{i * 2}\n" for i in range(30)))
    assert load_config(_custom_config(tmp_path)).runs()[0].run_id != base
    with pytest.raises(ConfigError, match=r"dataset\[1\]\.name: duplicate dataset name 'mine'"):
        load_config(_custom_config(tmp_path, twice=True))


def test_cli_limit_must_be_positive(tiny_config: Path, tmp_path: Path) -> None:
    proc = run_cli("extract", "--config", str(tiny_config), "--shards", str(tmp_path / "s"), "--limit", "0")
    assert proc.returncode == 2 and "--limit: must be at least 1" in proc.stderr
    (tmp_path / "file").write_text("")
    proc = run_cli("extract", "--config", str(tiny_config), "--shards", str(tmp_path / "file"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_fixed_steps_scales_the_epochs_of_a_subsample_and_keeps_old_ids(tmp_path) -> None:
    """``fixed_steps`` trains a subsample for the steps of the whole split (epochs / train_fraction, rounded
    up); at its default it stays out of the run id; at train_fraction 1 it still enters it (the sweep's own
    full-data run)."""
    assert RunSpec(dataset="iris", epochs=40, train_fraction=0.25, fixed_steps=True).epochs_run == 160
    assert RunSpec(dataset="iris", epochs=40, train_fraction=0.3, fixed_steps=True).epochs_run == 134
    assert RunSpec(dataset="iris", epochs=40, train_fraction=0.25).epochs_run == 40
    assert RunSpec(dataset="iris", fixed_steps=False).run_id == "6d0fcf869171912f"
    assert RunSpec(dataset="iris", train_fraction=0.5, fixed_steps=True).run_id != \
        RunSpec(dataset="iris", train_fraction=0.5).run_id
    path = tmp_path / "c.toml"
    path.write_text('[corpus]\nname = "c"\n[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\n'
                    'train_fraction = [0.5, 1.0]\nfixed_steps = [false, true]\n')
    runs = load_config(path).runs()
    assert sorted((r.train_fraction, r.fixed_steps) for r in runs) == [(0.5, False), (0.5, True), (1.0, False),
                                                                       (1.0, True)]
    path.write_text('[corpus]\nname = "c"\n[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\nfixed_steps = 1\n')
    with pytest.raises(ConfigError, match="fixed_steps: expected true or false"):
        load_config(path)
