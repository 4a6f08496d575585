"""``pipeline`` (or ``python -m pipeline``): plan, extract, ingest, analyze, report, figures, measure, datasets.

Every error the user can cause (bad config, unknown data set, corrupt shard, old database) ends in
one line ``error: <what and where>`` on stderr and exit status 2; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
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
    p.add_argument("--check-reads", action="store_true",
                   help="run each stage in a sandbox holding only the tables it declares it reads: an undeclared "
                        "read fails, naming the table (for writing a stage)")

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
                   help="folder of checkpoints: *.pt / *.pth / *.ckpt (state dicts, Lightning), *.safetensors, "
                        "or folders holding one (Hugging Face, Ray Tune); the step from manifest.json, the "
                        "checkpoint's own global_step, or the name's last integer (docs/models.md)")
    p.add_argument("--data", required=True, help="a built-in data set name, or a data file: a table (CSV / Parquet, "
                                                 "with --target) or arrays (.npz, <name>X.npy, Parquet with a list "
                                                 "column; docs/configs.md)")
    p.add_argument("--target", default=None, help="target column of a --data file (arrays: default y)")
    p.add_argument("--preprocess", choices=("standard", "none"), default="standard",
                   help="none: measure on the data exactly as given (the inputs the model was trained on)")
    p.add_argument("--data-name", default=None, help="name of a --data file's data set in the database "
                                                     "(default: the file's stem)")
    p.add_argument("--task", choices=("classification", "regression"), default="classification",
                   help="task of a --data file")
    p.add_argument("--blocks", default=None, help="comma-separated module paths of the blocks ('(own)': the "
                   "parameters the model holds itself), or depth=K: the modules K levels down (default: read off the "
                   "graph)")
    p.add_argument("--study", default="measured", help="study name the run is listed under (studies table)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe batch")
    p.add_argument("--probe-size", type=int, default=256)
    p.add_argument("--exact-limit", type=int, default=1000, help="blocks up to this many parameters are exact")
    p.add_argument("--hvp-budget", type=int, default=320, help="the most products a matrix-free spectrum spends")
    p.add_argument("--product-dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the matrix-free products (float32 where a per-row check passes; exact rows are "
                   "float64 either way)")
    p.add_argument("--shards", default=DEFAULT_SHARDS, help=SHARDS_HELP)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    p = sub.add_parser("datasets", help="list the built-in data sets")
    p.add_argument("--config", type=Path, default=None, help="also list this config's custom data sets")
    p.add_argument("--json", action="store_true")
    return parser


#: Flags whose name is not the library argument's (``--flag`` is ``field`` with "-" for "_" otherwise).
_FLAG_OF = {"stages": "--stage"}


def flag_of(field: str) -> str:
    """The command-line flag that sets the library argument ``field``."""
    return _FLAG_OF.get(field, "--" + field.replace("_", "-"))


def _warn_device(device: str, warning: str) -> str:
    """The device to use; prints ``warning`` when ``cuda`` was asked for and no GPU is present."""
    from pipeline.commands import resolve_device

    resolved, fell_back = resolve_device(device)
    if fell_back:
        print(warning, file=sys.stderr)
    return resolved


def cmd_plan(args) -> None:
    from pipeline.commands import plan

    p = plan(args.config, args.shards)
    if args.json:
        for r in p.runs:
            print(json.dumps({"run_id": r.run_id, "extracted": r.run_id in p.done, **r.to_dict()}))
        return
    print(f"corpus {p.config.name!r}: {len(p.runs)} runs, {len(p.done)} extracted, {len(p.runs) - len(p.done)} to do")
    for study in p.config.studies:
        n_done = sum(r.run_id in p.done for r in study.runs)
        print(f"  study {study.name!r}: {len(study.runs)} runs ({n_done} extracted)")


def _extract(args, limit: int | None) -> str | None:
    """Extract and print the summary; returns the one-line error when some runs failed twice."""
    from pipeline.commands import extract

    device = _warn_device(args.device, "extract: --device cuda but no GPU is present: training and the engine "
                                       "run on the CPU")
    done = extract(args.config, args.shards, workers=args.workers, limit=limit, executor=args.executor,
                   scheduler=args.scheduler, device=device, db=args.db,
                   show_progress=False if args.quiet else None)
    print(f"extract: {done.complete} complete, {done.diverged} diverged, {done.skipped} already done, "
          f"{len(done.failures)} failed in {done.seconds:.1f} s", file=sys.stderr)
    for f in done.failures:
        print(f"  run {f.run_id} failed: {f.error}", file=sys.stderr)
    return done.failure_message


def cmd_extract(args) -> None:
    failed = _extract(args, args.limit)
    if failed:
        raise PipelineError(failed)


def _ingest(config: Path, db: Path, shards: str) -> None:
    from pipeline.commands import ingest, ingest_problem

    report = ingest(config, db, shards)
    failed = f", {report.failed_runs} recorded as failed" if report.failed_runs else ""
    print(f"ingest: {len(report.ingested)} runs added, {report.already_present} already present{failed} "
          f"-> {db}", file=sys.stderr)
    for kind, lines in (("corrupt", report.errors), ("refused", report.refused)):
        for line in lines:
            print(f"  {kind}: {line}", file=sys.stderr)
    problem = ingest_problem(report, db)
    if problem:
        raise PipelineError(problem)


def cmd_ingest(args) -> None:
    _ingest(args.config, args.db, args.shards)


def _analyze(db: Path, stages: list[str] | None, force: bool, quiet: bool, check_reads: bool = False) -> None:
    from analyses.kit.runner import run_stages

    done = run_stages(db, stages, force=force, show_progress=False if quiet else None, check_reads=check_reads)
    ran = ", ".join(done["ran"]) or "nothing"
    skipped = f"; skipped {len(done['skipped'])} with unchanged inputs" if done["skipped"] else ""
    print(f"analyze: ran {ran}{skipped}", file=sys.stderr)


def cmd_analyze(args) -> None:
    _analyze(args.db, args.stage, args.force, args.quiet, args.check_reads)


def _report(db: Path, out: Path | None) -> None:
    from pipeline.commands import check_writable
    from reports.builder import build_report

    out = out or output_dir(db, "report")
    check_writable(out, "out")
    print(f"report: {build_report(db, out)}", file=sys.stderr)


def cmd_report(args) -> None:
    _report(args.db, args.out)


def cmd_figures(args) -> None:
    from pipeline.commands import check_writable
    from reports.builder import write_figures

    out = args.out or output_dir(args.db, "figures")
    check_writable(out, "out")
    paths = write_figures(args.db, out)
    print(f"figures: {len(paths)} files in {out}", file=sys.stderr)


def cmd_all(args) -> None:
    from pipeline.commands import check_database, check_shards, check_writable

    # every output is probed before the extraction, not found unwritable after it; nothing is created yet
    check_writable(args.out or output_dir(args.db, "report"), "out")
    check_database(args.db)
    check_shards(args.shards)
    failed = _extract(args, None)  # runs that failed twice are recorded; the report is built from the others
    _ingest(args.config, args.db, args.shards)
    _analyze(args.db, None, False, args.quiet)
    _report(args.db, args.out)
    if failed:
        raise PipelineError(failed)


def cmd_measure(args) -> None:
    from tqdm import tqdm

    from pipeline.commands import measure, plan_measure

    blocks = tuple(b.strip() for b in args.blocks.split(",") if b.strip()) if args.blocks else ()
    plan = plan_measure(args.model, args.checkpoints, args.data, args.db, args.shards, target=args.target,
                        data_name=args.data_name, task=args.task, blocks=blocks, seed=args.seed,
                        probe_size=args.probe_size, exact_limit=args.exact_limit, hvp_budget=args.hvp_budget,
                        preprocess=args.preprocess, product_dtype=args.product_dtype)
    device = _warn_device(args.device, "measure: --device cuda but no GPU is present: the engine runs on the CPU")
    run_id, n = plan.spec.run_id, len(plan.files)
    if plan.already_measured:
        print(f"measure: run {run_id} ({n} checkpoints) is already measured", file=sys.stderr)
    bar = tqdm(total=n, desc=f"measure {run_id}", unit="checkpoint",
               disable=True if args.quiet or plan.already_measured else None)
    try:
        measure(plan, args.db, args.shards, study=args.study, device=device,
                progress=lambda done, _total: bar.update(done - bar.n))
    finally:
        bar.close()
    print(f"measure: run {run_id}: {n} checkpoints of {args.model} on {plan.spec.dataset} -> {args.db}",
          file=sys.stderr)


def cmd_datasets(args) -> None:
    from pipeline.datasets.registry import REGISTRY

    specs = list(REGISTRY.values())
    if args.config:
        from pipeline.commands import custom_specs
        from pipeline.config import load_config

        specs += list(custom_specs(load_config(args.config)).values())
    from pipeline.datasets.preprocess import prepare

    rows = []
    for spec in specs:
        d = prepare(spec)
        rows.append({"name": spec.name, "task": spec.task, "rows": int(len(d.y)),
                     "features": int(math.prod(d.input_shape)), "shape": list(d.input_shape),
                     "classes": d.n_classes or None, "source": f"{spec.source}:{spec.item}",
                     "synthetic": spec.synthetic, "max_rows": spec.max_rows, "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':15s} {'task':15s} {'rows':>6s} {'shape':>9s} {'cls':>4s}  source")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name']:15s} {r['task']:15s} {r['rows']:6d} {shape:>9s} {r['classes'] or '':>4}  "
              f"{r['source']}")
    n_c = sum(r["task"] == "classification" for r in rows)
    print(f"{len(rows)} data sets: {n_c} classification, {len(rows) - n_c} regression")


COMMANDS = {"plan": cmd_plan, "extract": cmd_extract, "ingest": cmd_ingest, "analyze": cmd_analyze,
            "report": cmd_report, "figures": cmd_figures, "all": cmd_all, "datasets": cmd_datasets,
            "measure": cmd_measure}


class _Notices(logging.Handler):
    """The library's warnings as ``pipeline: ...`` lines on the stderr of the moment (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"pipeline: {record.getMessage()}", file=sys.stderr)


def _print_library_notices() -> None:
    """Print the library's warnings (a database another process holds, and how long it waits), once."""
    log = logging.getLogger("pipeline")
    if not any(isinstance(h, _Notices) for h in log.handlers):
        log.addHandler(_Notices())
        log.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _print_library_notices()
    try:
        COMMANDS[args.command](args)
    except PipelineError as exc:
        where = f"{flag_of(exc.field)}: " if exc.field else ""
        print(f"error: {where}{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
