"""``pipeline`` (or ``python -m pipeline``): plan, extract, ingest, analyze, report, figures, measure, datasets.

Every error the user can cause (bad config, unknown data set, corrupt shard, old database) ends in
one line ``error: <what and where>`` on stderr and exit status 2; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from pipeline.errors import PipelineError

DEFAULT_CONFIG = Path("configs/default.toml")
DEFAULT_DB = Path("build/corpus.duckdb")
DEFAULT_SHARDS = "build/shards"
SHARDS_HELP = "shard store: a folder or an fsspec URL every worker can reach (s3://bucket/corpus)"


def output_dir(db: Path, what: str) -> Path:
    """Where the report or figures of database ``db`` go by default: beside it, in a folder named after
    it (``build/corpus.duckdb`` -> ``build/corpus/report``), so two corpora never overwrite each other.
    A database not named ``*.duckdb`` gets ``<name>.outputs/`` (its stem could be a file or another corpus)."""
    return db.parent / (db.stem if db.suffix == ".duckdb" else f"{db.name}.outputs") / what


def _add_common(p: argparse.ArgumentParser, config: bool = True, db: bool = True) -> None:
    if config:
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="corpus config (TOML)")
    if db:
        p.add_argument("--db", type=Path, default=DEFAULT_DB, help="corpus database (DuckDB)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_executor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("process", "inline", "dask", "dask-local"), default="process",
                   help="process: a local pool (default); dask: a running cluster (--scheduler); "
                        "dask-local: a Dask LocalCluster of --workers processes; inline: this process")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address for --executor dask (tcp://host:port)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plan", help="list the runs a config asks for and how many are done")
    _add_common(p)
    p.add_argument("--shards", default=DEFAULT_SHARDS, help=SHARDS_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per run")

    p = sub.add_parser("extract", help="train and measure every run not yet extracted, into shards")
    _add_common(p, db=False)
    p.add_argument("--db", type=Path, default=None,
                   help="a database to check the config's data set names against before training (default: none)")
    p.add_argument("--shards", default=DEFAULT_SHARDS, help=SHARDS_HELP)
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (process, dask-local)")
    _add_executor(p)
    p.add_argument("--limit", type=int, default=None, help="extract at most this many runs (in plan order)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the optimizer steps and the curvature engine run (CPU when no GPU is present)")

    p = sub.add_parser("ingest", help="load complete shards of the config's runs into the database")
    _add_common(p)
    p.add_argument("--shards", default=DEFAULT_SHARDS, help=SHARDS_HELP)

    p = sub.add_parser("analyze", help="run the analysis stages on the database")
    _add_common(p)
    p.add_argument("--stage", action="append", help="run only this stage (repeatable); others are not run")
    p.add_argument("--force", action="store_true", help="run the stages even if their inputs are unchanged")

    p = sub.add_parser("report", help="write the self-contained HTML report")
    _add_common(p)
    p.add_argument("--out", type=Path, default=None, help="report folder (default: beside --db, DB_STEM/report)")

    p = sub.add_parser("figures", help="write every figure as PNG and PDF")
    _add_common(p)
    p.add_argument("--out", type=Path, default=None, help="figure folder (default: beside --db, DB_STEM/figures)")

    p = sub.add_parser("all", help="extract, ingest, analyze and report in one go (what `make report` runs)")
    _add_common(p)
    p.add_argument("--shards", default=DEFAULT_SHARDS, help=SHARDS_HELP)
    p.add_argument("--workers", type=int, default=2)
    _add_executor(p)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: beside --db, DB_STEM/report)")

    p = sub.add_parser("measure", help="measure a folder of existing checkpoints of a user's model as one run, "
                                       "into the shards and the database")
    _add_common(p, config=False)
    p.add_argument("--model", required=True, help="the model factory, package.module:callable "
                                                  "(called as build(input_shape, output_size))")
    p.add_argument("--checkpoints", type=Path, required=True,
                   help="folder of state_dict files (*.pt, *.pth, *.ckpt; the step in each name or manifest.json)")
    p.add_argument("--data", required=True, help="a built-in data set name, or a CSV / Parquet file (with --target)")
    p.add_argument("--target", default=None, help="target column of a --data file")
    p.add_argument("--data-name", default=None, help="name of a --data file's data set in the database "
                                                     "(default: the file's stem)")
    p.add_argument("--task", choices=("classification", "regression"), default="classification",
                   help="task of a --data file")
    p.add_argument("--blocks", default=None, help="comma-separated module paths of the blocks (default: read "
                                                  "off the graph)")
    p.add_argument("--study", default="measured", help="study name the run is listed under (studies table)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe batch")
    p.add_argument("--probe-size", type=int, default=256)
    p.add_argument("--exact-limit", type=int, default=1000, help="blocks up to this many parameters are exact")
    p.add_argument("--hvp-budget", type=int, default=320, help="products per matrix-free spectrum")
    p.add_argument("--shards", default=DEFAULT_SHARDS, help=SHARDS_HELP)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    p = sub.add_parser("datasets", help="list the built-in data sets")
    p.add_argument("--config", type=Path, default=None, help="also list this config's custom data sets")
    p.add_argument("--json", action="store_true")
    return parser


def _custom_specs(config) -> dict:
    from pipeline.datasets.registry import file_spec

    return {c.name: file_spec(c.name, str(c.path), c.target, c.task, c.description) for c in config.custom_datasets}


def _check_custom_data(config, used: set[str]) -> None:
    """Load every user data file the plan uses before any worker starts, so a bad file is one error
    naming it rather than a failure in every run that reads it."""
    _check_custom_data_specs({name: spec for name, spec in _custom_specs(config).items() if name in used})


def _check_custom_models(runs, custom: dict) -> None:
    """Build every user model the plan uses once, on its data set's shapes, before any worker starts:
    a factory that cannot be imported, returns the wrong shape or is not differentiable is one error
    naming the key, not a failure in every run."""
    from pipeline.datasets.run_data import prepared_dataset
    from pipeline.models.factory import build_factory_model

    seen = set()
    for r in runs:
        if r.family != "custom" or (r.model, r.blocks, r.dataset) in seen:
            continue
        seen.add((r.model, r.blocks, r.dataset))
        d = prepared_dataset(r.dataset, custom)
        build_factory_model(r.model, (d.X.shape[1],), d.output_dim, r.seed, r.blocks)


def cmd_plan(args) -> None:
    from pipeline.config import load_config
    from pipeline.extract.shards import ShardStore

    config = load_config(args.config)
    runs = config.runs()
    store = ShardStore(args.shards)
    done = {r.run_id for r in runs if store.is_complete(r.dataset, r.run_id)}
    if args.json:
        for r in runs:
            print(json.dumps({"run_id": r.run_id, "extracted": r.run_id in done, **r.to_dict()}))
        return
    print(f"corpus {config.name!r}: {len(runs)} runs, {len(done)} extracted, {len(runs) - len(done)} to do")
    for study in config.studies:
        n_done = sum(r.run_id in done for r in study.runs)
        print(f"  study {study.name!r}: {len(study.runs)} runs ({n_done} extracted)")


def cmd_extract(args) -> None:
    failed = _extract(args)
    if failed:
        raise PipelineError(failed)


def _extract(args) -> str | None:
    """Extract; returns the one-line error when some runs failed twice (the others are kept)."""
    from pipeline.config import load_config
    from pipeline.executors import run_extraction

    config = load_config(args.config)
    if args.workers < 1:
        raise PipelineError(f"--workers: must be at least 1, got {args.workers}")
    if args.limit is not None and args.limit < 1:
        raise PipelineError(f"--limit: must be at least 1, got {args.limit}")
    if "://" not in args.shards and Path(args.shards).exists() and not Path(args.shards).is_dir():
        raise PipelineError(f"--shards: {args.shards} exists and is not a folder")
    runs = config.runs()[: args.limit] if args.limit is not None else config.runs()
    _check_custom_data(config, {r.dataset for r in runs})
    _check_custom_models(runs, _custom_specs(config))
    if args.db is not None:  # a name another data set holds there: found now, not after the extraction, at ingest
        for dataset, digest in dict.fromkeys((r.dataset, r.dataset_digest) for r in runs):
            field = f"{args.config}: [[dataset]] name {dataset!r}" if digest else f"{args.config}: dataset {dataset!r}"
            _check_dataset_name(args.db, dataset, digest, field)
    device = args.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("extract: --device cuda but no GPU is present: training and the engine run on the CPU",
                  file=sys.stderr)
            device = "cpu"
    t0 = time.perf_counter()
    outcomes, failures = run_extraction(runs, args.shards, _custom_specs(config), workers=args.workers,
                                        executor=args.executor, show_progress=False if args.quiet else None,
                                        device=device, scheduler=args.scheduler)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("complete", "diverged", "skipped")}
    print(f"extract: {counts['complete']} complete, {counts['diverged']} diverged, {counts['skipped']} already "
          f"done, {len(failures)} failed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for f in failures:
        print(f"  run {f.run_id} failed: {f.error}", file=sys.stderr)
    if failures:
        return (f"{len(failures)} of {len(runs)} runs failed twice (first: run {failures[0].run_id}: "
                f"{failures[0].error}); recorded in {args.shards}/failures (ingest puts them in run_failures); "
                "the others are kept, re-run to retry")
    return None


def cmd_ingest(args) -> None:
    from pipeline.config import load_config
    from snapshot_loader.ingest import ingest_shards

    config = load_config(args.config)
    runs = config.runs()
    studies = [(config.name, s, r) for s, r in config.study_membership()]
    report = ingest_shards(args.db, args.shards, studies, only={r.run_id for r in runs})
    failed = f", {report.failed_runs} recorded as failed" if report.failed_runs else ""
    print(f"ingest: {len(report.ingested)} runs added, {report.already_present} already present{failed} "
          f"-> {args.db}", file=sys.stderr)
    for kind, lines in (("corrupt", report.errors), ("refused", report.refused)):
        for e in lines:
            print(f"  {kind}: {e}", file=sys.stderr)
    if report.errors:
        raise PipelineError(f"{len(report.errors)} shard(s) not ingested (first: {report.errors[0]}); "
                            "`pipeline extract` redoes a corrupt one")
    if report.refused:
        raise PipelineError(f"{len(report.refused)} shard(s) refused by {args.db} (first: {report.refused[0]}); "
                            "rename the data set in the config, or ingest into another database")


def cmd_analyze(args) -> None:
    from pipeline.stages import run_stages

    done = run_stages(args.db, args.stage, force=args.force, show_progress=False if args.quiet else None)
    ran = ", ".join(done["ran"]) or "nothing"
    skipped = f"; skipped {len(done['skipped'])} with unchanged inputs" if done["skipped"] else ""
    print(f"analyze: ran {ran}{skipped}", file=sys.stderr)


def _check_writable(folder: Path, flag: str) -> None:
    """Fail before the work, not after it, when the output folder cannot be written."""
    import tempfile

    from pipeline.errors import StoreError

    existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):  # the folder, or where it will be created
            pass
    except OSError as exc:
        raise StoreError(f"{flag}: cannot write to {folder}: {exc.strerror or exc}") from None


def cmd_report(args) -> None:
    args.out = args.out or output_dir(args.db, "report")
    from reports.builder import build_report

    _check_writable(args.out, "--out")
    path = build_report(args.db, args.out)
    print(f"report: {path}", file=sys.stderr)


def cmd_figures(args) -> None:
    args.out = args.out or output_dir(args.db, "figures")
    from reports.builder import write_figures

    _check_writable(args.out, "--out")
    paths = write_figures(args.db, args.out)
    print(f"figures: {len(paths)} files in {args.out}", file=sys.stderr)


def cmd_all(args) -> None:
    args.out = args.out or output_dir(args.db, "report")
    args.limit = None
    _check_writable(args.out, "--out")  # before the extraction, not after it
    _check_writable(args.db.parent, "--db")
    failed = _extract(args)  # runs that failed twice are recorded; the report is built from the others
    cmd_ingest(args)
    args.stage, args.force = None, False
    cmd_analyze(args)
    cmd_report(args)
    if failed:
        raise PipelineError(failed)


def _measure_dataset(args) -> tuple[str, dict, str]:
    """(data set name, custom specs, digest) of ``--data``: a built-in name or a user's file."""
    from pipeline.config import file_digest
    from pipeline.datasets.registry import REGISTRY, file_spec

    path = Path(args.data)
    if path.suffix.lower() in (".csv", ".parquet"):
        if not path.is_file():
            raise PipelineError(f"--data: {path}: file not found")
        if not args.target:
            raise PipelineError("--target: a --data file needs its target column")
        name = args.data_name or path.stem
        if name in REGISTRY:
            raise PipelineError(f"--data-name: {name!r} is a built-in data set's name; give the file's data set "
                                "another one")
        custom = {name: file_spec(name, str(path.resolve()), args.target, args.task)}
        _check_custom_data_specs(custom)
        return name, custom, file_digest(path, args.target, args.task)
    if args.data_name:
        raise PipelineError("--data-name: names a --data file's data set; a built-in one keeps its name")
    if args.data not in REGISTRY:
        raise PipelineError(f"--data: unknown dataset {args.data!r} (a built-in name, see `pipeline datasets`, or "
                            "a .csv / .parquet file)")
    return args.data, {}, ""


def _check_dataset_name(db: Path, name: str, digest: str, field: str) -> None:
    """Refuse, before measuring, a data set whose name another data set holds in ``db`` (the error
    names ``field``, what the user changes to rename it). A database that cannot be read now (locked,
    damaged, an older schema) is not checked here: ingest checks every shard again."""
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
        raise PipelineError(f"{field}: {reason}")


def _check_custom_data_specs(custom: dict) -> None:
    from pipeline.datasets.preprocess import prepare
    from pipeline.errors import DatasetError

    for spec in custom.values():
        try:
            prepare(spec)
        except DatasetError as exc:
            raise DatasetError(f"{spec.item}: {exc}") from None


def cmd_measure(args) -> None:
    from tqdm import tqdm

    from pipeline.extract.measure import check_folder, checkpoint_files, measure_folder
    from pipeline.extract.shards import ShardStore
    from pipeline.models.factory import load_factory
    from pipeline.runspec import RunSpec
    from snapshot_loader.ingest import ingest_shards

    for flag, value, low in (("--probe-size", args.probe_size, 1), ("--exact-limit", args.exact_limit, 0),
                             ("--hvp-budget", args.hvp_budget, 20), ("--seed", args.seed, 0)):
        if value < low:
            raise PipelineError(f"{flag}: must be at least {low}, got {value}")
    load_factory(args.model)  # a bad reference fails before the files are read
    checkpoints = checkpoint_files(args.checkpoints)
    name, custom, data_digest = _measure_dataset(args)
    blocks = tuple(b.strip() for b in args.blocks.split(",") if b.strip()) if args.blocks else ()
    n = len(checkpoints)
    spec = RunSpec(dataset=name, family="custom", model=args.model, blocks=blocks, seed=args.seed,
                   probe_size=args.probe_size, hessian_exact_limit=args.exact_limit, hvp_budget=args.hvp_budget,
                   metric_checkpoints=max(n, 2), spectral_snapshots=n, epochs=1, size="custom", widths=(1,),
                   dataset_digest=data_digest)
    _check_custom_models([spec], custom)
    _check_dataset_name(args.db, name, data_digest, "--data-name" if custom else "--data")
    checked = check_folder(spec, checkpoints, custom)  # the digest of the bytes checked names the run
    spec = dataclasses.replace(spec, checkpoint_digest=checked.digest)
    device = args.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("measure: --device cuda but no GPU is present: the engine runs on the CPU", file=sys.stderr)
            device = "cpu"
    _check_writable(args.db.parent, "--db")
    store = ShardStore(args.shards)
    if store.is_complete(spec.dataset, spec.run_id):
        print(f"measure: run {spec.run_id} ({n} checkpoints) is already measured", file=sys.stderr)
    else:
        bar = tqdm(total=n, desc=f"measure {spec.run_id}", unit="checkpoint", disable=True if args.quiet else None)
        try:
            rows = measure_folder(spec, checkpoints, args.checkpoints, custom, device,
                                  progress=lambda done, _total: bar.update(done - bar.n), checked=checked)
        finally:
            bar.close()
        store.write(spec.dataset, spec.run_id, rows)
    report = ingest_shards(args.db, store, [("measured", args.study, spec.run_id)], only={spec.run_id})
    if report.errors or report.refused:
        raise PipelineError(f"{args.db}: cannot ingest {(report.errors + report.refused)[0]}")
    print(f"measure: run {spec.run_id}: {n} checkpoints of {args.model} on {name} -> {args.db}", file=sys.stderr)


def cmd_datasets(args) -> None:
    from pipeline.datasets.registry import REGISTRY

    specs = list(REGISTRY.values())
    if args.config:
        from pipeline.config import load_config

        specs += list(_custom_specs(load_config(args.config)).values())
    from pipeline.datasets.preprocess import prepare

    rows = []
    for spec in specs:
        d = prepare(spec)
        rows.append({"name": spec.name, "task": spec.task, "rows": int(len(d.y)), "features": int(d.X.shape[1]),
                     "classes": d.n_classes or None, "source": f"{spec.source}:{spec.item}",
                     "synthetic": spec.synthetic, "max_rows": spec.max_rows, "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':15s} {'task':15s} {'rows':>6s} {'feat':>5s} {'cls':>4s}  source")
    for r in rows:
        print(f"{r['name']:15s} {r['task']:15s} {r['rows']:6d} {r['features']:5d} {r['classes'] or '':>4}  "
              f"{r['source']}")
    n_c = sum(r["task"] == "classification" for r in rows)
    print(f"{len(rows)} data sets: {n_c} classification, {len(rows) - n_c} regression")


COMMANDS = {"plan": cmd_plan, "extract": cmd_extract, "ingest": cmd_ingest, "analyze": cmd_analyze,
            "report": cmd_report, "figures": cmd_figures, "all": cmd_all, "datasets": cmd_datasets,
            "measure": cmd_measure}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
