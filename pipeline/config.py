"""Corpus configs: TOML files validated on load into a list of studies of runs.

Layout of a config file::

    [corpus]                 # name and description of the corpus
    name = "default"

    [run]                    # defaults for every field of a run (see RunSpec)
    epochs = 30

    [[dataset]]              # optional: a user's own data file: a table (CSV, Parquet) or arrays
    name = "mydata"          # (.npz, .npy, Parquet with a list column; pipeline/datasets/arrays.py)
    path = "data/my.csv"
    target = "label"         # arrays: the labels' key or column, default "y"
    task = "classification"

    [[study]]                # one or more studies; each is the cartesian product of its grid
    name = "architectures"
    sample = 40              # optional: a seeded random subset of the grid (sample_seed, default 0)
    [study.grid]
    dataset = ["iris", "wine"]
    activation = ["relu", "sigmoid"]

A grid value is a list (an axis of the product) or a scalar (fixed for that study); for ``widths``
(and a custom model's ``blocks``) a flat list is one architecture and a list of lists an axis.
A user's own network: ``model = "package.module:build"`` (family ``custom``, see
pipeline/models/factory.py), optionally with ``blocks = ["layer1", "layer2", ...]``. Every error
names the file and the key, e.g. ``configs/x.toml: study[0].grid.activation: unknown ...``.
"""

from __future__ import annotations

import hashlib
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.curvature.shadows import SHADOW_WINDOW
from pipeline.errors import ConfigError
from pipeline.models.block_graph import DEPTH_PREFIX, block_depth
from pipeline.models.build import TRANSFORMER_HEADS
from pipeline.runspec import RUN_FIELDS, SIZE_PRESETS, Range, RunSpec

_TOP_KEYS = {"corpus", "run", "study", "dataset"}
#: Run fields a config may set (the digests are derived, never written by hand).
USER_FIELDS = {name for name, f in RUN_FIELDS.items() if f.user}
_CORPUS_KEYS = {"name", "description"}
_STUDY_KEYS = {"name", "description", "grid", "sample", "sample_seed"}
_CUSTOM_DATASET_KEYS = {"name", "path", "target", "task", "description"}
_TASKS = ("classification", "regression")


@dataclass(frozen=True)
class CustomDataset:
    """A user's data file (a table, or arrays) with a named target column (arrays: its key, default y)."""

    name: str
    path: Path
    target: str
    task: str
    description: str = ""
    digest: str = ""


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    runs: tuple[RunSpec, ...]


@dataclass(frozen=True)
class CorpusConfig:
    path: Path
    name: str
    description: str
    studies: tuple[Study, ...]
    custom_datasets: tuple[CustomDataset, ...]

    def runs(self) -> list[RunSpec]:
        """All runs of all studies, each once, in first-seen order."""
        seen: dict[str, RunSpec] = {}
        for study in self.studies:
            for spec in study.runs:
                seen.setdefault(spec.run_id, spec)
        return list(seen.values())

    def study_membership(self) -> list[tuple[str, str]]:
        """(study name, run_id) pairs; a run may belong to several studies."""
        pairs = {(s.name, r.run_id) for s in self.studies for r in s.runs}
        return sorted(pairs)


def load_config(path: str | Path) -> CorpusConfig:
    """Parse and validate a corpus config. Raises ConfigError naming the file and key."""
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read config: {exc}") from None
    return parse_config(raw, where=where, base_dir=path.parent)


def parse_config(raw: dict, where: str = "<config>", base_dir: Path | None = None) -> CorpusConfig:
    """Validate an already-parsed TOML mapping (see module docstring for the layout)."""
    base_dir = base_dir or Path(".")

    def fail(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {msg}")

    _check_keys(raw, _TOP_KEYS, "", fail)
    corpus = _table(raw.get("corpus", {}), "corpus", fail)
    _check_keys(corpus, _CORPUS_KEYS, "corpus.", fail)
    name = _string(corpus.get("name", Path(where).stem), "corpus.name", fail)
    description = _string(corpus.get("description", ""), "corpus.description", fail)

    custom = _parse_custom_datasets(raw.get("dataset", []), base_dir, fail)
    known_datasets = _known_dataset_names() | {c.name for c in custom}

    run_defaults = _table(raw.get("run", {}), "run", fail)
    _check_keys(run_defaults, USER_FIELDS, "run.", fail)
    for key, value in run_defaults.items():
        _check_value(key, value, f"run.{key}", known_datasets, fail)

    studies_raw = raw.get("study")
    if studies_raw is None:
        raise fail("study", "no [[study]] tables: a corpus needs at least one study")
    if not isinstance(studies_raw, list) or not studies_raw:
        raise fail("study", "must be an array of tables ([[study]])")
    studies: list[Study] = []
    names: set[str] = set()
    for i, study_raw in enumerate(studies_raw):
        key = f"study[{i}]"
        study_raw = _table(study_raw, key, fail)
        _check_keys(study_raw, _STUDY_KEYS, f"{key}.", fail)
        if "name" not in study_raw:
            raise fail(f"{key}.name", "missing")
        sname = _string(study_raw["name"], f"{key}.name", fail)
        if sname in names:
            raise fail(f"{key}.name", f"duplicate study name {sname!r}")
        names.add(sname)
        grid = _table(study_raw.get("grid", {}), f"{key}.grid", fail)
        _check_keys(grid, USER_FIELDS, f"{key}.grid.", fail)
        runs = _expand_grid(run_defaults, grid, f"{key}.grid", known_datasets, fail,
                            {c.name: c.digest for c in custom})
        runs = _sample(runs, study_raw, key, fail)
        studies.append(Study(sname, _string(study_raw.get("description", ""), f"{key}.description", fail),
                             tuple(runs)))
    _one_preprocessing_per_name(studies, {c.name for c in custom}, fail)
    return CorpusConfig(Path(where), name, description, tuple(studies), tuple(custom))


def _one_preprocessing_per_name(studies: list[Study], files: set[str], fail) -> None:
    """The ``datasets`` table holds one row per name, and the preprocessing is part of what a data set
    is: a name asked for under two preprocessings is refused here, before anything is trained."""
    seen: dict[str, tuple[str, str]] = {}
    for i, study in enumerate(studies):
        for run in study.runs:
            first = seen.setdefault(run.dataset, (run.preprocess, study.name))
            if first[0] != run.preprocess:
                fix = ("give the file a second [[dataset]] entry of another name for the other preprocessing"
                       if run.dataset in files else "a built-in data set holds one preprocessing per database: "
                       "put the other in a corpus of its own")
                raise fail(f"study[{i}].grid.preprocess", f"dataset {run.dataset!r} is asked for under preprocess "
                           f"{first[0]!r} (study {first[1]!r}) and {run.preprocess!r}: {fix}")


def _known_dataset_names() -> set[str]:
    from pipeline.datasets.registry import REGISTRY

    return set(REGISTRY)


def _parse_custom_datasets(items, base_dir: Path, fail) -> list[CustomDataset]:
    if not isinstance(items, list):
        raise fail("dataset", "must be an array of tables ([[dataset]])")
    from pipeline.datasets.registry import REGISTRY

    out = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = f"dataset[{i}]"
        item = _table(item, key, fail)
        _check_keys(item, _CUSTOM_DATASET_KEYS, f"{key}.", fail)
        for required in ("name", "path", "task"):
            if required not in item:
                raise fail(f"{key}.{required}", "missing")
        name = _string(item["name"], f"{key}.name", fail)
        if name in REGISTRY:
            raise fail(f"{key}.name", f"{name!r} is a built-in data set; choose another name")
        if name in seen:
            raise fail(f"{key}.name", f"duplicate dataset name {name!r}")
        seen.add(name)
        task = _string(item["task"], f"{key}.task", fail)
        if task not in _TASKS:
            raise fail(f"{key}.task", f"unknown task {task!r} (choose from {', '.join(_TASKS)})")
        path = Path(_string(item["path"], f"{key}.path", fail))
        path = path if path.is_absolute() else (base_dir / path)
        if path.suffix.lower() not in (".csv", ".parquet", ".npz", ".npy"):
            raise fail(f"{key}.path", f"{path}: only .csv, .parquet (tables, or arrays in a list column), .npz and "
                       ".npy files are supported")
        if not path.is_file():
            raise fail(f"{key}.path", f"{path}: file not found")
        from pipeline.datasets.arrays import is_array_file

        if "target" not in item and not is_array_file(path):
            raise fail(f"{key}.target", "missing")
        target = _string(item.get("target", "y"), f"{key}.target", fail)
        out.append(CustomDataset(name, path.resolve(), target, task,
                                 _string(item.get("description", ""), f"{key}.description", fail),
                                 file_digest(path, target, task)))
    return out


def file_digest(path: Path, target: str, task: str) -> str:
    """What makes a user's data set itself: the file's bytes (an ``.npy``'s with its companions'), the
    target column and the task."""
    from pipeline.datasets.arrays import data_files

    h = hashlib.sha256(f"{target}\0{task}\0".encode())
    for i, part in enumerate(data_files(path)):
        if i:  # a single file's digest is as it always was
            h.update(f"\0{part.name}\0".encode())
        with part.open("rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _expand_grid(defaults: dict, grid: dict, key: str, known_datasets: set[str], fail,
                 digests: dict[str, str]) -> list[RunSpec]:
    axes: list[tuple[str, list]] = []
    for name, value in grid.items():
        if name == "blocks" and isinstance(value, str) and value.startswith(DEPTH_PREFIX):  # one value
            value = [value]
        if name in ("widths", "blocks"):  # a flat list is one architecture; a list of lists is an axis
            values = value if isinstance(value, list) and value and all(isinstance(v, list) for v in value) \
                else [value]
        else:
            values = value if isinstance(value, list) else [value]
        if not values:
            raise fail(f"{key}.{name}", "empty list: a grid axis needs at least one value")
        for v in values:
            _check_value(name, v, f"{key}.{name}", known_datasets, fail)
        axes.append((name, values))
    if "dataset" not in defaults and "dataset" not in grid:
        raise fail(f"{key}.dataset", "missing: set it in [run] or in the study's grid")
    runs = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        fields = {**defaults, **dict(zip((n for n, _ in axes), combo, strict=True))}
        fields["dataset_digest"] = digests.get(fields["dataset"], "")
        runs.append(_make_spec(fields, key, fail))
    return runs


def _sample(runs: list[RunSpec], study: dict, key: str, fail) -> list[RunSpec]:
    """The study's distinct runs, or ``sample`` of them drawn without replacement (``sample_seed``)."""
    distinct = list({r.run_id: r for r in runs}.values())
    if "sample" not in study:
        if "sample_seed" in study:
            raise fail(f"{key}.sample_seed", "given without sample")
        return distinct
    n = study["sample"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise fail(f"{key}.sample", f"expected a positive integer, got {n!r}")
    if n > len(distinct):
        raise fail(f"{key}.sample", f"{n} is more than the grid's {len(distinct)} distinct runs")
    seed = study.get("sample_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise fail(f"{key}.sample_seed", f"expected a non-negative integer, got {seed!r}")
    picked = np.sort(np.random.default_rng(seed).choice(len(distinct), size=n, replace=False))
    return [distinct[i] for i in picked]


def _make_spec(fields: dict, key: str, fail) -> RunSpec:
    fields = dict(fields)
    widths = fields.get("widths")
    size = fields.get("size")
    if widths is not None:
        if size not in (None, "custom"):
            raise fail(f"{key}.widths", f"contradicts size = {size!r}: give widths with size = 'custom'")
        fields["size"] = "custom"
        fields["widths"] = tuple(widths)
    else:
        size = size or "small"
        if size == "custom":
            raise fail(f"{key}.size", "'custom' needs explicit widths = [...]")
        fields["size"] = size
        fields["widths"] = SIZE_PRESETS[size]
    for name in fields:
        if RUN_FIELDS[name].type is float:
            fields[name] = float(fields[name])
    n_spectral = fields.get("spectral_snapshots", RUN_FIELDS["spectral_snapshots"].default)
    if n_spectral > fields.get("metric_checkpoints", RUN_FIELDS["metric_checkpoints"].default):
        raise fail(f"{key}.spectral_snapshots", "must not exceed metric_checkpoints")
    if fields.get("norm") == "batchnorm" and fields.get("batch_size", RUN_FIELDS["batch_size"].default) < 2:
        raise fail(f"{key}.batch_size", "batch norm needs batches of at least 2 rows")
    augment = fields.get("augment", "none")
    if fields.get("model") and "family" not in fields:
        fields["family"] = "custom"
    family = fields.get("family", "mlp")
    if family == "custom" and not fields.get("model"):
        raise fail(f"{key}.model", "family 'custom' needs model = 'package.module:callable'")
    if "blocks" in fields:
        blocks = fields["blocks"]
        fields["blocks"] = (blocks,) if isinstance(blocks, str) else tuple(blocks)
    _inapplicable(fields, key, fail)
    probes = fields.get("coupling_probes", 0)
    if probes == 1:
        raise fail(f"{key}.coupling_probes", "the jackknife needs at least 2 probes per block (or 0: no map)")
    if family == "transformer" and fields["widths"][0] % TRANSFORMER_HEADS:
        raise fail(f"{key}.widths", f"family 'transformer' reads widths[0] as d_model: {fields['widths'][0]} is "
                   f"not a multiple of its {TRANSFORMER_HEADS} heads")
    if augment != "none" and fields.get("residual", "none") != "none":
        raise fail(f"{key}.augment", "gated edges go on a plain network: the residual template is its own arm "
                   "(residual = 'every' with augment = 'none')")
    if augment != "none" and fields.get("metric_checkpoints", RUN_FIELDS["metric_checkpoints"].default) < \
            SHADOW_WINDOW + 1:
        raise fail(f"{key}.metric_checkpoints", f"augment = {augment!r} needs at least {SHADOW_WINDOW + 1}: a window "
                   f"of {SHADOW_WINDOW} coupling maps before synthesis and training after it")
    if augment != "none" and fields.get("coupling_probes", 0) < 2:
        raise fail(f"{key}.coupling_probes", f"augment = {augment!r} reads the coupling map: "
                   "set coupling_probes to at least 2")
    return RunSpec(**fields)


def _inapplicable(fields: dict, key: str, fail) -> None:
    """Reset every field that does not apply to the run to its default, or refuse it away from its
    default, as its :class:`~pipeline.runspec.Applies` declares."""
    for name, f in RUN_FIELDS.items():
        if f.applies is None:
            continue
        value = fields.get(f.applies.on, RUN_FIELDS[f.applies.on].default)
        if value in f.applies.values:
            continue
        if not f.applies.error:
            fields[name] = f.default
        elif fields.get(name, f.default) != f.default:
            raise fail(f"{key}.{name}", f.applies.error.format(name=name, default=f.default, value=value))


def _check_value(name: str, value, key: str, known_datasets: set[str], fail) -> None:
    """Check one value a config gives run field ``name`` against its declaration."""
    f = RUN_FIELDS[name]
    if name == "dataset":
        if not isinstance(value, str):
            raise fail(key, f"expected a data set name (string), got {type(value).__name__}")
        if value not in known_datasets:
            raise fail(key, f"unknown dataset {value!r} (see `pipeline datasets`)")
    elif name == "model":
        module, sep, attr = value.partition(":") if isinstance(value, str) else ("", "", "")
        if not (sep and module and attr):
            raise fail(key, f"expected 'package.module:callable', got {value!r}")
    elif f.choices:
        if not isinstance(value, str):
            raise fail(key, f"expected a string, got {type(value).__name__}")
        if value not in f.choices:
            raise fail(key, f"unknown {name} {value!r} (choose from {', '.join(f.choices)})")
    elif f.type is bool:
        if not isinstance(value, bool):
            raise fail(key, f"expected true or false, got {value!r}")
    elif f.type == tuple[str, ...]:
        if isinstance(value, str) and value.startswith(DEPTH_PREFIX):  # blocks = "depth=K"
            value = [value]
        if not isinstance(value, list) or not all(isinstance(b, str) and b for b in value):
            raise fail(key, "expected a list of module paths (strings), or 'depth=K'")
        try:
            block_depth(value)
        except ValueError as exc:
            raise fail(key, str(exc)) from None
    elif f.type == tuple[int, ...]:
        if not isinstance(value, list) or not value or not all(_integer(w) and _in_range(w, f.range) for w in value):
            raise fail(key, "expected a non-empty list of positive integers")
    else:
        if not (_integer(value) if f.type is int else _integer(value) or isinstance(value, float)):
            raise fail(key, f"expected {'an integer' if f.type is int else 'a number'}, got {value!r}")
        if not _in_range(value, f.range):
            raise fail(key, f"{value!r} is out of range {f.range}")


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: float, r: Range) -> bool:
    return value == value and (value > r.lo if r.lo_open else value >= r.lo) and value <= r.hi


def _check_keys(table: dict, allowed: set[str], prefix: str, fail) -> None:
    for k in table:
        if k not in allowed:
            raise fail(f"{prefix}{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _table(value, key: str, fail) -> dict:
    if not isinstance(value, dict):
        raise fail(key, f"expected a table, got {type(value).__name__}")
    return value


def _string(value, key: str, fail) -> str:
    if not isinstance(value, str):
        raise fail(key, f"expected a string, got {type(value).__name__}")
    return value
