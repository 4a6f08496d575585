"""What the ``plan``, ``extract``, ``ingest`` and ``measure`` commands do, as typed functions.

Each takes plain values (paths, counts, names), validates them, does the work and returns what
happened; it prints nothing. An input at fault raises :class:`~pipeline.errors.PipelineError` whose
``field`` is the parameter's name (``workers``, ``shards``, ``data_name``, ...): the CLI
(:mod:`pipeline.cli`) maps it to the flag that set it and prints the results.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CorpusConfig, file_digest, load_config
from pipeline.datasets.registry import DatasetSpec
from pipeline.errors import DatasetError, PipelineError, StoreError
from pipeline.runspec import RunSpec, data_identity
from snapshot_loader.database import probe_database
from snapshot_loader.ingest import IngestReport, ingest_shards
from snapshot_loader.shards import ShardStore


@dataclass(frozen=True)
class Plan:
    """A config's runs and which of them the shard store holds complete."""

    config: CorpusConfig
    runs: list[RunSpec]
    done: set[str]


@dataclass(frozen=True)
class Extraction:
    """What an extraction did: counts of runs by outcome, the runs that failed twice, the seconds."""

    shards: str
    runs: int
    complete: int
    diverged: int
    skipped: int
    failures: list
    seconds: float

    @property
    def failure_message(self) -> str | None:
        """One line naming the first failure, or None when every run finished."""
        if not self.failures:
            return None
        first = self.failures[0]
        return (f"{len(self.failures)} of {self.runs} runs failed twice (first: run {first.run_id}: {first.error}); "
                f"recorded in {self.shards}/failures (ingest puts them in run_failures); the others are kept, "
                "re-run to retry")


def resolve_device(device: str) -> tuple[str, bool]:
    """The device to use, and whether ``cuda`` was asked for on a machine without a GPU (then the CPU)."""
    if device != "cuda":
        return device, False
    import torch

    return ("cuda", False) if torch.cuda.is_available() else ("cpu", True)


def check_writable(folder: Path, field: str) -> None:
    """Fail before the work, not after it, when ``folder`` cannot be written or created: a file where
    it or a folder above it should be, or a folder this process may not write. The probe is a nameless
    temporary file in the nearest folder that exists, so nothing is created and nothing is left behind."""
    folder = Path(folder)
    existing = next(p for p in [folder, *folder.parents] if p.exists())  # '.' or '/' at last
    if not existing.is_dir():
        raise StoreError(f"{folder} exists and is not a folder" if existing is folder
                         else f"cannot create {folder}: {existing} is a file", field=field)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise StoreError(f"cannot write to {folder}: {exc.strerror or exc}", field=field) from None


def check_shards(shards: str) -> None:
    """Probe a local shard store as :func:`check_writable` does, before any run is trained or measured (an
    fsspec URL is checked by its first write)."""
    if "://" not in str(shards):
        check_writable(Path(shards), "shards")


def check_database(db: Path) -> None:
    """Before work that ends by writing to ``db``: its folder can be written, and an existing ``db`` opens
    for writing (a damaged file, a database of another version or one another process holds fails now,
    not after the work). A missing one is not created here: the work's first write creates it, so a
    command that fails before then leaves no empty database behind."""
    from snapshot_loader.database import connect_writable

    check_writable(db.parent, "db")
    probe_database(db)
    if db.exists():
        connect_writable(db).close()


def plan(config: Path, shards: str) -> Plan:
    """The runs ``config`` asks for and those whose shard in ``shards`` is complete."""
    corpus = load_config(config)
    runs = corpus.runs()
    store = ShardStore(shards)
    return Plan(corpus, runs, {r.run_id for r in runs if store.is_complete(r.dataset, r.run_id)})


def custom_specs(config: CorpusConfig) -> dict[str, DatasetSpec]:
    """The data set specs of the config's ``[[dataset]]`` files, by name."""
    from pipeline.datasets.registry import file_spec

    return {c.name: file_spec(c.name, str(c.path), c.target, c.task, c.description) for c in config.custom_datasets}


def extract(config: Path, shards: str, *, workers: int = 1, limit: int | None = None, executor: str = "process",
            scheduler: str | None = None, device: str = "cpu", db: Path | None = None,
            show_progress: bool | None = None) -> Extraction:
    """Train and measure every run of ``config`` (its first ``limit``) not yet in ``shards``. With ``db``,
    refuse first a data set whose name another data set holds there. Runs that fail twice are recorded
    and returned, the others kept."""
    from pipeline.executors import run_extraction

    corpus = load_config(config)
    if workers < 1:
        raise PipelineError(f"must be at least 1, got {workers}", field="workers")
    if limit is not None and limit < 1:
        raise PipelineError(f"must be at least 1, got {limit}", field="limit")
    check_shards(shards)
    if db is not None:  # read only, to check names: a file that is no database fails now, not at ingest
        probe_database(db)
    runs = corpus.runs()[:limit] if limit is not None else corpus.runs()
    custom = custom_specs(corpus)
    check_custom_data({(r.dataset, r.preprocess): custom[r.dataset] for r in runs if r.dataset in custom})
    check_custom_models(runs, custom)
    check_run_inputs(runs, custom, config)
    if db is not None:  # a name another data set holds there: found now, not after the extraction, at ingest
        for dataset, digest in dict.fromkeys((r.dataset, data_identity(r.dataset_digest, r.preprocess)) for r in runs):
            where = (f"{config}: [[dataset]] name {dataset!r}" if dataset in custom
                     else f"{config}: dataset {dataset!r}")
            check_dataset_name(db, dataset, digest, where)
    started = time.perf_counter()
    outcomes, failures = run_extraction(runs, shards, custom, workers=workers, executor=executor,
                                        show_progress=show_progress, device=device, scheduler=scheduler)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("complete", "diverged", "skipped")}
    return Extraction(str(shards), len(runs), counts["complete"], counts["diverged"], counts["skipped"], failures,
                      time.perf_counter() - started)


def ingest(config: Path, db: Path, shards: str) -> IngestReport:
    """Load the complete shards of ``config``'s runs into ``db`` with its study membership; a corrupt or
    refused shard (a data set's name clash) is left out and listed in the report (:func:`ingest_problem`)."""
    corpus = load_config(config)
    studies = [(corpus.name, s, r) for s, r in corpus.study_membership()]
    return ingest_shards(db, shards, studies, only={r.run_id for r in corpus.runs()})


def ingest_problem(report: IngestReport, db: Path) -> str | None:
    """One line naming the first shard an ingest left out, or None when it took every one."""
    if report.errors:
        return (f"{len(report.errors)} shard(s) not ingested (first: {report.errors[0]}); extracting again "
                "redoes a corrupt one")
    if report.refused:
        return (f"{len(report.refused)} shard(s) refused by {db} (first: {report.refused[0]}); rename the data "
                "set in the config, or ingest into another database")
    return None


def check_custom_data(custom: dict) -> None:
    """Load every user data file before any worker starts (under each preprocessing a run asks for:
    keys ``(name, preprocess)``; a plain name: ``standard``), so a bad file is one error naming it
    rather than a failure in every run that reads it."""
    from pipeline.datasets.run_data import prepared_dataset

    for key, spec in custom.items():
        preprocess = key[1] if isinstance(key, tuple) else "standard"
        try:
            prepared_dataset(spec.name, {spec.name: spec}, preprocess)
        except DatasetError as exc:
            message = str(exc)
            raise DatasetError(message if message.startswith(str(spec.item)) else f"{spec.item}: {message}") from None


def check_custom_models(runs: list[RunSpec], custom: dict[str, DatasetSpec]) -> None:
    """Build every user model the runs use once, on its data set's shapes, before any worker starts:
    a factory that cannot be imported, returns the wrong shape or is not differentiable is one error
    naming the key, not a failure in every run."""
    from pipeline.datasets.run_data import run_dataset
    from pipeline.models.build import network_for

    seen = set()
    for r in runs:
        if r.family != "custom" or (r.model, r.blocks, r.dataset, r.preprocess) in seen:
            continue
        seen.add((r.model, r.blocks, r.dataset, r.preprocess))
        network_for(r, run_dataset(r, custom))


def check_run_inputs(runs: list[RunSpec], custom: dict[str, DatasetSpec], config: Path) -> None:
    """Prepare, before any worker starts, every data set of arrays and every data set under another
    preprocessing than ``standard`` (a table of the default corpus is not read here), and check that
    each built-in family can read its rows (an MLP cannot read images): one error, not a failure in
    every run."""
    from pipeline.datasets.registry import get_spec
    from pipeline.datasets.run_data import run_dataset
    from pipeline.errors import ConfigError
    from pipeline.models.build import family_problem

    seen = set()
    for r in runs:
        key = (r.family, r.dataset, r.preprocess)
        if key in seen or (r.dataset not in custom and r.preprocess == "standard"
                           and not get_spec(r.dataset).holds_arrays):
            continue
        seen.add(key)
        try:
            d = run_dataset(r, custom)
        except DatasetError as exc:
            raise ConfigError(f"{config}: run {r.run_id}: {exc}") from None
        problem = None if r.family == "custom" else family_problem(r.family, d.input_shape, d.vocab_size, r.dataset)
        if problem:
            raise ConfigError(f"{config}: run {r.run_id}: {problem}")


def check_dataset_name(db: Path, name: str, digest: str, where: str | None = None, field: str | None = None) -> None:
    """Refuse, before measuring, a data set whose name another data set holds in ``db``; the error names
    ``where`` (a config key) or carries ``field`` (the argument that renames it). A database that cannot
    be read now (locked, an older schema, damaged past its header: :func:`probe_database` refuses the rest)
    is not checked here: ingest checks every shard again."""
    import duckdb

    from snapshot_loader.database import connect_readonly
    from snapshot_loader.ingest import dataset_conflict

    if not db.is_file():
        return
    try:
        con = connect_readonly(db)
    except PipelineError:
        return  # an older schema or a damaged file: ingest migrates it or names what is wrong
    try:
        reason = dataset_conflict(con, name, digest)
    except duckdb.Error:
        reason = None  # ingest checks again
    finally:
        con.close()
    if reason:
        raise PipelineError(f"{where}: {reason}" if where else reason, field=field)


#: Suffixes of the data files ``pipeline measure --data`` takes: tables and arrays.
DATA_SUFFIXES = (".csv", ".parquet", ".npz", ".npy")


def measured_dataset(data: str, target: str | None = None, data_name: str | None = None,
                     task: str = "classification",
                     preprocess: str = "standard") -> tuple[str, dict[str, DatasetSpec], str]:
    """(data set name, custom specs, digest) of ``data``: a built-in data set's name or a user's file
    (a table, or arrays: pipeline/datasets/arrays.py), checked under ``preprocess``."""
    from pipeline.datasets.arrays import is_array_file
    from pipeline.datasets.registry import REGISTRY, file_spec

    path = Path(data)
    if path.suffix.lower() in DATA_SUFFIXES:
        if not path.is_file():
            raise PipelineError(f"{path}: file not found", field="data")
        arrays = is_array_file(path)
        if not target and not arrays:
            raise PipelineError("a data file needs its target column", field="target")
        target = target or "y"
        name = data_name or path.stem
        if name in REGISTRY:
            raise PipelineError(f"{name!r} is a built-in data set's name; give the file's data set another one",
                                field="data_name")
        custom = {name: file_spec(name, str(path.resolve()), target, task)}
        check_custom_data({(name, preprocess): custom[name]})
        return name, custom, file_digest(path, target, task)
    if data_name:
        raise PipelineError("names a data file's data set; a built-in one keeps its name", field="data_name")
    if data not in REGISTRY:
        raise PipelineError(f"unknown dataset {data!r} (a built-in name, see `pipeline datasets`, or a "
                            f"{' / '.join(DATA_SUFFIXES)} file)", field="data")
    check_custom_data({(data, preprocess): REGISTRY[data]})
    return data, {}, ""


@dataclass(frozen=True)
class MeasurePlan:
    """A checkpoint folder checked and named as one run, ready to measure (:func:`plan_measure`)."""

    spec: RunSpec
    folder: Path
    files: list
    custom: dict[str, DatasetSpec]
    checked: object
    already_measured: bool


def plan_measure(model: str, checkpoints: Path, data: str, db: Path, shards: str, *, target: str | None = None,
                 data_name: str | None = None, task: str = "classification", blocks: tuple[str, ...] = (),
                 seed: int = 0, probe_size: int = 256, exact_limit: int = 1000,
                 hvp_budget: int = 320, preprocess: str = "standard", product_dtype: str = "float32") -> MeasurePlan:
    """Check every input of a measurement before a file is measured: the settings, the factory, the
    folder's files (read and hashed: the digest names the run), the data, the data set's name in ``db``,
    and first that ``db`` and ``shards`` can be written. Says whether ``shards`` already holds the run."""
    from pipeline.extract.measure import check_folder, checkpoint_files
    from pipeline.models.factory import load_factory

    for field, value, low in (("probe_size", probe_size, 1), ("exact_limit", exact_limit, 0),
                              ("hvp_budget", hvp_budget, 20), ("seed", seed, 0)):
        if value < low:
            raise PipelineError(f"must be at least {low}, got {value}", field=field)
    check_database(db)  # where the work ends, before a file is read
    check_shards(shards)
    from pipeline.runspec import PREPROCESSINGS, PRODUCT_DTYPE_NAMES

    if preprocess not in PREPROCESSINGS:
        raise PipelineError(f"unknown {preprocess!r} (choose from {', '.join(PREPROCESSINGS)})", field="preprocess")
    if product_dtype not in PRODUCT_DTYPE_NAMES:
        raise PipelineError(f"unknown {product_dtype!r} (choose from {', '.join(PRODUCT_DTYPE_NAMES)})",
                            field="product_dtype")
    load_factory(model)  # a bad reference fails before the files are read
    files = checkpoint_files(checkpoints)
    name, custom, data_digest = measured_dataset(data, target, data_name, task, preprocess)
    n = len(files)
    spec = RunSpec(dataset=name, family="custom", model=model, blocks=blocks, seed=seed, probe_size=probe_size,
                   hessian_exact_limit=exact_limit, hvp_budget=hvp_budget, metric_checkpoints=max(n, 2),
                   spectral_snapshots=n, epochs=1, size="custom", widths=(1,), dataset_digest=data_digest,
                   preprocess=preprocess, product_dtype=product_dtype)
    check_custom_models([spec], custom)
    check_dataset_name(db, name, data_identity(data_digest, preprocess), field="data_name" if custom else "data")
    checked = check_folder(spec, files, custom)  # the digest of the bytes checked names the run
    spec = dataclasses.replace(spec, checkpoint_digest=checked.digest)
    return MeasurePlan(spec, checkpoints, files, custom, checked,
                       ShardStore(shards).is_complete(spec.dataset, spec.run_id))


def measure(plan: MeasurePlan, db: Path, shards: str, *, study: str = "measured", device: str = "cpu",
            progress: Callable[[int, int], None] | None = None) -> None:
    """Measure a planned folder as one run into the shard store (unless it is there already), then
    ingest it into ``db``, listed under ``study``."""
    from pipeline.extract.measure import measure_folder

    store = ShardStore(shards)
    if not plan.already_measured:
        rows = measure_folder(plan.spec, plan.files, plan.folder, plan.custom, device, progress=progress,
                              checked=plan.checked)
        store.write(plan.spec.dataset, plan.spec.run_id, rows)
    report = ingest_shards(db, store, [("measured", study, plan.spec.run_id)], only={plan.spec.run_id})
    if report.errors or report.refused:
        raise PipelineError(f"{db}: cannot ingest {(report.errors + report.refused)[0]}")
