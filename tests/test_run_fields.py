"""Run ids and the ``runs`` table's columns are fixed: literals written down before the run fields were
declared in one place, so that deriving the hash rule and the columns from the declarations cannot
move a single stored run."""

from __future__ import annotations

import pytest

from pipeline.config import parse_config
from pipeline.runspec import RunSpec
from snapshot_loader.schema import TABLES

# a RunSpec and the id it has had since the field it sets was added
PINNED_IDS = [
    (RunSpec(dataset="iris"), "6d0fcf869171912f"),
    (RunSpec(dataset="wine", size="custom", widths=(8, 8), lr=0.01, seed=3, optimizer="sgd", momentum=0.9,
             dropout=0.2), "ab1fefec7c5eadb7"),
    (RunSpec(dataset="iris", regularizer="sam", rho=0.2), "2b6985bd62038faa"),
    (RunSpec(dataset="iris", regularizer="fisher_sam", rho=0.1, fisher_eta=100.0), "6320ba068dacbfaa"),
    (RunSpec(dataset="iris", augment="synthesized", coupling_probes=4, edge_budget=3, augment_at=0.5, trial_steps=5),
     "87376f97664a1c7e"),
    (RunSpec(dataset="iris", residual="every", coupling_probes=8), "a5e89b5b68886092"),
    (RunSpec(dataset="iris", family="custom", model="tests.user_models:tiny_mlp", blocks=("0", "2")),
     "09203d04468e9e21"),
    (RunSpec(dataset="iris", train_fraction=0.5, fixed_steps=True), "0ead6770c7bea6f1"),
    (RunSpec(dataset="mine", dataset_digest="0123456789abcdef", checkpoint_digest="fedcba9876543210"),
     "2281dd6e6b645c49"),
]


@pytest.mark.parametrize(("spec", "run_id"), PINNED_IDS, ids=[i for _, i in PINNED_IDS])
def test_run_ids_are_pinned(spec: RunSpec, run_id: str) -> None:
    assert spec.run_id == run_id


def test_config_expansion_keeps_its_run_ids() -> None:
    """The reset rules (unused strengths, synthesis settings without augment, a custom model's
    architecture fields) decide ids too."""
    regularizers = ["none", "sam", "grad_norm", "fisher_sam"]
    raw = {"run": {"rho": 0.2, "penalty": 0.5, "edge_budget": 4},
           "study": [{"name": "s", "grid": {"dataset": "iris", "regularizer": regularizers,
                                            "augment": ["none", "random"], "coupling_probes": 4}},
                     {"name": "c", "grid": {"dataset": "iris", "model": "tests.user_models:tiny_mlp",
                                            "activation": ["relu", "tanh"], "widths": [[4], [8]]}}]}
    assert [r.run_id for r in parse_config(raw).runs()] == [
        "8b42d5a0eb0399eb", "2868544a368fdc44", "763611fe9f4a5a44", "39b603bcfac3b18a", "4f2dd81d652d4052",
        "71717baa8d926956", "41c87ff50ede4fb9", "b65ec83038d2e6cf", "19705db97d2eda4e"]


#: The ``runs`` table as schema version 8 declares it.
RUNS_COLUMNS = [
    ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("task", "VARCHAR"),
    ("train_fraction", "DOUBLE"), ("label_noise", "DOUBLE"),
    ("family", "VARCHAR"), ("size", "VARCHAR"), ("widths", "INTEGER[]"), ("depth", "INTEGER"),
    ("activation", "VARCHAR"), ("norm", "VARCHAR"), ("dropout", "DOUBLE"), ("init", "VARCHAR"),
    ("optimizer", "VARCHAR"), ("lr", "DOUBLE"), ("momentum", "DOUBLE"), ("weight_decay", "DOUBLE"),
    ("batch_size", "INTEGER"), ("epochs", "INTEGER"), ("regularizer", "VARCHAR"), ("penalty", "DOUBLE"),
    ("rho", "DOUBLE"), ("fisher_eta", "DOUBLE"), ("metric_checkpoints", "INTEGER"),
    ("spectral_snapshots", "INTEGER"), ("probe_size", "INTEGER"), ("hessian_exact_limit", "INTEGER"),
    ("hvp_budget", "INTEGER"), ("seed", "INTEGER"), ("residual", "VARCHAR"), ("coupling_probes", "INTEGER"),
    ("augment", "VARCHAR"), ("augment_at", "DOUBLE"), ("edge_budget", "INTEGER"), ("trial_steps", "INTEGER"),
    ("device", "VARCHAR"), ("model", "VARCHAR"), ("blocks", "VARCHAR[]"), ("checkpoint_dir", "VARCHAR"),
    ("config_json", "VARCHAR"), ("n_params", "BIGINT"), ("n_train", "INTEGER"), ("n_test", "INTEGER"),
    ("n_probe", "INTEGER"), ("n_noisy", "INTEGER"), ("total_steps", "INTEGER"), ("final_step", "INTEGER"),
    ("status", "VARCHAR"), ("diverged_step", "INTEGER"), ("torch_version", "VARCHAR"),
    ("wall_seconds", "DOUBLE"),
]


def test_runs_table_columns_are_unchanged() -> None:
    assert TABLES["runs"] == RUNS_COLUMNS


def test_the_derived_hash_rule_is_the_one_written_before() -> None:
    from pipeline.runspec import HASH_OMIT_AT_DEFAULT

    assert HASH_OMIT_AT_DEFAULT == {
        "dataset_digest": "", "regularizer": "none", "penalty": 0.01, "rho": 0.05, "fisher_eta": 1.0,
        "residual": "none", "coupling_probes": 0, "augment": "none", "augment_at": 0.25, "edge_budget": 2,
        "trial_steps": 10, "model": "", "blocks": [], "checkpoint_digest": "", "fixed_steps": False,
        "preprocess": "standard", "product_dtype": "float32"}


def test_runs_columns_are_the_declared_run_fields() -> None:
    from pipeline.runspec import RUN_FIELDS
    from snapshot_loader.schema import run_field_columns

    assert run_field_columns() == [c for c in RUNS_COLUMNS if c[0] in RUN_FIELDS]
    assert {n for n, f in RUN_FIELDS.items() if not f.column} == {"dataset_digest", "checkpoint_digest",
                                                                  "fixed_steps", "preprocess", "product_dtype"}


def test_the_regularizers_strengths_are_read_off_the_declarations() -> None:
    from pipeline.training.regularizers import USES

    assert USES == {"none": (), "grad_norm": ("penalty",), "hessian_trace": ("penalty",), "sam": ("rho",),
                    "fisher_sam": ("rho", "fisher_eta")}


def test_every_declaration_admits_its_default_and_names_its_group() -> None:
    from dataclasses import MISSING

    from pipeline.runspec import RUN_FIELDS

    groups = {"data", "model", "training", "measurement", "propagation"}
    for name, f in RUN_FIELDS.items():
        assert f.doc and (f.group in groups) == f.user, name
        assert f.applies is None or f.applies.on in RUN_FIELDS, name
        values = f.default if isinstance(f.default, tuple) else (f.default,)
        if f.choices:
            assert f.default in f.choices, name
        elif (r := f.range) is not None:
            assert all((v > r.lo if r.lo_open else v >= r.lo) and v <= r.hi for v in values), name
        else:  # true or false, or checked by name in pipeline/config.py
            assert f.type is bool or name in ("dataset", "model", "blocks") or not f.user, name
        assert f.default is not MISSING or name == "dataset"


def test_docs_configs_has_a_generated_row_for_every_field_a_config_sets() -> None:
    from pathlib import Path

    from pipeline.runspec import RUN_FIELDS
    from reports.docs import configs_page

    text = (Path(__file__).resolve().parents[1] / "docs" / "configs.md").read_text()
    assert text == configs_page(), "docs/configs.md is out of date: run `python -m reports.docs`"
    for name, f in RUN_FIELDS.items():
        assert (f"| `{name}` |" in text) == f.user, name


def test_a_field_added_after_runs_existed_says_since_when_and_every_omitted_field_was_added_later() -> None:
    """``since`` is the corpus schema version that added a field: one left out of the run id at its
    default must have come after the first (a field from the start enters every id), and none comes
    from a version the schema has not reached."""
    from pipeline.runspec import RUN_FIELDS
    from snapshot_loader.schema import SCHEMA_VERSION

    for name, f in RUN_FIELDS.items():
        assert 1 <= f.since <= SCHEMA_VERSION, name
        if f.omit_at_default:
            assert f.since > 1, f"{name} is omitted at its default but declared since version 1"
    assert RUN_FIELDS["fixed_steps"].since == 8 and RUN_FIELDS["dataset"].since == 1


def test_every_field_a_config_sets_has_a_check() -> None:
    """A config value is checked by its declaration: choices, a range (a number, or every item of a list
    of integers), a bool or a list of names; ``dataset`` and ``model`` by name. A new field declared with
    none of these would reach the range check with no range."""
    from pipeline.runspec import RUN_FIELDS

    for name, f in RUN_FIELDS.items():
        if not f.user or name in ("dataset", "model"):
            continue
        checked = bool(f.choices) or f.type is bool or f.type == tuple[str, ...] or f.range is not None
        assert checked, f"run field {name} declares no check (choices, range, bool)"
