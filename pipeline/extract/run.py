"""One run end to end: train with both checkpoint schedules and write the run's shard.

Deterministic on CPU for a fixed spec: data split, subsample, label noise and probe batch come from
the spec's seed, the initialization and dropout from ``torch.manual_seed(seed)``, batch order from
a seeded generator, and each run computes on one thread (``torch.set_num_threads(1)``, and the BLAS
and OpenMP pools numpy and scipy use limited to one by threadpoolctl), so the order of floating-point
reductions never depends on how many workers run beside it, and two workers on two cores do not
oversubscribe them (OpenBLAS's spare threads spin while they wait).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from pipeline.curvature.engine import CurvatureSettings
from pipeline.datasets.registry import DatasetSpec, get_spec
from pipeline.datasets.run_data import RunData, prepared_dataset, run_data, run_dataset
from pipeline.extract.baseline import trivial_baseline
from pipeline.extract.checkpoint import (
    SpectralSnapshot,
    as_matrix,
    evaluate_checkpoint,
    principal_matrix,
    spectral_snapshot,
)
from pipeline.extract.coupling_tracker import CouplingTracker
from pipeline.models.block_graph import block_module, block_names, block_parameter_names, output_block, relative_name
from pipeline.models.build import network_for
from pipeline.models.mlp import count_parameters
from pipeline.runspec import RunSpec
from pipeline.training.device import move_training_state
from pipeline.training.optim import loss_function, make_optimizer
from pipeline.training.regularizers import training_step
from pipeline.training.schedule import metric_steps, spectral_steps, steps_per_epoch
from snapshot_loader.shards import ShardStore

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str  # "complete" | "diverged" | "skipped"
    seconds: float


def extract_run(spec: RunSpec, store: ShardStore | str | Path, custom: dict[str, DatasetSpec] | None = None,
                progress: ProgressFn | None = None, device: str = "cpu") -> RunOutcome:
    """Train and measure one run unless its shard is already complete; write the shard atomically."""
    run_id = spec.run_id
    store = store if isinstance(store, ShardStore) else ShardStore(store)
    if store.is_complete(spec.dataset, run_id):
        return RunOutcome(run_id, "skipped", 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            t0 = time.perf_counter()
            rows = train_and_measure(spec, custom, progress, device)
        store.write(spec.dataset, run_id, rows)
        return RunOutcome(run_id, rows["runs"][0]["status"], time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def train_and_measure(spec: RunSpec, custom: dict[str, DatasetSpec] | None = None,
                      progress: ProgressFn | None = None, device: str = "cpu") -> dict[str, list[dict]]:
    """Train the run and return its rows, table by table (see snapshot_loader.schema).

    ``device`` is where the optimizer steps and the curvature engine run; the other measurements and
    skip-connection synthesis stay on the CPU (:mod:`pipeline.training.device`). Results agree to
    float tolerance, not bitwise, across devices."""
    t_start = time.perf_counter()
    run_id = spec.run_id
    dataset = run_dataset(spec, custom)
    data = run_data(spec, dataset)
    tensors = {s: data.tensors(s) for s in ("train", "test", "probe")}
    model = network_for(spec, dataset)
    optimizer = make_optimizer(spec, model.parameters())
    loss_fn = loss_function(dataset.task)

    n_train = len(data.train_rows)
    per_epoch = steps_per_epoch(n_train, spec.batch_size)
    total = per_epoch * spec.epochs_run
    metric_at = metric_steps(total, spec.metric_checkpoints)
    spectral_at = set(spectral_steps(metric_at, spec.spectral_snapshots).tolist())
    metric_set = set(metric_at.tolist())

    settings = CurvatureSettings(spec.hessian_exact_limit, spec.hvp_budget, "sum", device, spec.product_dtype)
    rows = empty_rows()
    margin_splits = measured_margin_splits(data, tensors)
    status, diverged_step, final_step = "complete", None, 0
    propagation = CouplingTracker(spec, model, tensors["probe"], loss_fn, dataset.task, device, metric_at)

    def checkpoint(step: int) -> None:
        t = time.perf_counter()
        is_spectral = step in spectral_at
        row, layer_rows, snap = measure_checkpoint(model, data, tensors, loss_fn, settings, spec.seed, step,
                                                   is_spectral, margin_splits)
        rows["curvature_coupling"].extend({"run_id": run_id, **r}
                                          for r in propagation.at_checkpoint(step, is_spectral))
        add_checkpoint_rows(rows, run_id, step, step / per_epoch, row, layer_rows, snap, time.perf_counter() - t)

    train_device = torch.device(device)
    X_train, y_train = (t.to(train_device) for t in tensors["train"])  # the batches' source, where steps run
    generator = torch.Generator().manual_seed(spec.seed)
    probe_generator = torch.Generator().manual_seed(spec.seed + 1)  # Hutchinson probes of the trace penalty
    step, train_seconds, last_ckpt = 0, 0.0, 0
    try:
        checkpoint(0)
        move_training_state(model, optimizer, train_device)
        model.train()
        for _epoch in range(spec.epochs_run):
            order = torch.randperm(n_train, generator=generator)
            for b in range(per_epoch):
                idx = order[b * spec.batch_size:(b + 1) * spec.batch_size]
                t = time.perf_counter()
                Xb, yb = X_train[idx], y_train[idx]
                training_step(model, optimizer, lambda Xb=Xb, yb=yb: loss_fn(model(Xb), yb), spec.regularizer,
                              penalty=spec.penalty, rho=spec.rho, fisher_eta=spec.fisher_eta,
                              generator=probe_generator)
                train_seconds += time.perf_counter() - t
                step += 1
                if step in metric_set:
                    rows["timings"].append({"run_id": run_id, "step": step, "what": "train",
                                            "seconds": train_seconds})
                    train_seconds = 0.0
                    move_training_state(model, optimizer, "cpu")
                    checkpoint(step)
                    last_ckpt = step
                    synthesis_seconds = propagation.maybe_augment(step, optimizer, tensors["train"])
                    if synthesis_seconds is not None:  # the step synthesis ran at, and its cost
                        rows["timings"].append({"run_id": run_id, "step": step, "what": "synthesis",
                                                "seconds": synthesis_seconds})
                    move_training_state(model, optimizer, train_device)
                    if progress:
                        progress(step, total)
        final_step = last_ckpt
    except FloatingPointError:
        status, diverged_step, final_step = "diverged", step, last_ckpt
        rows["timings"] = [t for t in rows["timings"] if t["step"] <= last_ckpt]
    # not in a `finally`: after another error a move could raise in its place and hide it
    move_training_state(model, optimizer, "cpu")  # the rows below read the model on the CPU

    rows["runs"] = [{**run_row(spec, dataset, data, model, total, final_step, status, diverged_step,
                                time.perf_counter() - t_start), "device": device}]
    rows["layers"] = layer_rows_of(run_id, model, spec)
    rows["splits"] = [{"run_id": run_id, "split": s, "rows": r.astype(np.int32)}
                      for s, r in (("train", data.train_rows), ("test", data.test_rows), ("probe", data.probe_rows))]
    rows["datasets"] = [dataset_row(spec.dataset, custom, spec.preprocess)]
    for table, table_rows in propagation.final_rows().items():
        rows[table] = [{"run_id": run_id, **r} for r in table_rows]
    return rows


def empty_rows() -> dict[str, list[dict]]:
    """The per-checkpoint tables of a run, empty."""
    return {k: [] for k in ("checkpoints", "layer_stats", "weights", "timings", "hessian_spectra", "margins",
                            "margin_values", "sharpness", "matrix_spectra", "curvature_coupling")}


def measured_margin_splits(data: RunData, tensors: dict) -> dict | None:
    """The splits whose margins a classification run measures (None: a regression run has none)."""
    return {s: tensors[s] for s in ("train", "test")} if data.dataset.task == "classification" else None


def measure_checkpoint(model: torch.nn.Module, data: RunData, tensors: dict, loss_fn, settings: CurvatureSettings,
                       seed: int, step: int, is_spectral: bool,
                       margin_splits: dict | None) -> tuple[dict, list[dict], SpectralSnapshot | None]:
    """Metrics (and, at a spectral snapshot, everything else) of the model as it is now."""
    row, layer_rows, grads = evaluate_checkpoint(model, data, tensors, loss_fn)
    task = data.dataset.task
    snap = spectral_snapshot(model, tensors["probe"], grads, loss_fn, task, settings, seed, step,
                             margin_splits) if is_spectral else None
    return row, layer_rows, snap


def add_checkpoint_rows(rows: dict[str, list[dict]], run_id: str, step: int, epoch: float | None, row: dict,
                        layer_rows: list[dict], snap: SpectralSnapshot | None, seconds: float) -> None:
    """Append one checkpoint's rows (from :func:`measure_checkpoint`) to the run's tables."""
    rows["checkpoints"].append({"run_id": run_id, "step": step, "epoch": epoch, "is_spectral": snap is not None,
                                **row, "wall_seconds": seconds})
    for i, lr in enumerate(layer_rows):
        rows["layer_stats"].append({"run_id": run_id, "step": step, "layer_index": i, **lr,
                                    **(snap.layer_stats[i] if snap else {})})
    if snap:
        for table, table_rows in snap.tables().items():
            rows[table].extend({"run_id": run_id, "step": step, **r} for r in table_rows)
    rows["timings"].append({"run_id": run_id, "step": step, "what": "spectral" if snap else "metrics",
                            "seconds": seconds})


def run_row(spec: RunSpec, dataset, data: RunData, model: torch.nn.Module, total: int, final_step: int, status: str,
             diverged_step: int | None, seconds: float) -> dict:
    d = spec.to_dict()
    return {
        "run_id": spec.run_id, **d, "task": dataset.task,
        "depth": len(block_names(model)) if spec.family == "custom" else len(spec.widths) + 1,
        "config_json": json.dumps(d, sort_keys=True), "n_params": count_parameters(model),
        "n_train": len(data.train_rows), "n_test": len(data.test_rows), "n_probe": len(data.probe_rows),
        "n_noisy": data.n_noisy, "total_steps": total, "final_step": final_step, "status": status,
        "diverged_step": diverged_step, "torch_version": torch.__version__, "wall_seconds": seconds,
    }


def layer_rows_of(run_id: str, model: torch.nn.Module, spec: RunSpec) -> list[dict]:
    """``layers`` rows of any model: one per block (:func:`pipeline.models.block_graph.block_names`);
    in/out features are the columns and rows of its principal matrix
    (:func:`pipeline.extract.checkpoint.principal_matrix`; an MLP's block: its Linear), NULL without
    one. Activation and norm: those a block declares (``activation_name``, ``norm_name``: an MLP's
    block, identity at the output), else a built-in family's run's activation and no norm; NULL for a
    user's blocks, which have no one activation or norm."""
    names = block_names(model)
    builtin = spec.family != "custom"
    rows = []
    named = dict(model.named_parameters())
    groups = block_parameter_names(model, names)
    for i, name in enumerate(names):
        weights = [(relative_name(n, name), named[n]) for n in groups[i] if not n.endswith("bias")]
        k = principal_matrix(weights)
        matrix = None if k is None else as_matrix(weights[k][1])
        module = block_module(model, name)
        rows.append({"run_id": run_id, "layer_index": i, "name": name,
                     "in_features": None if matrix is None else matrix.shape[1],
                     "out_features": None if matrix is None else matrix.shape[0],
                     "activation": getattr(module, "activation_name", spec.activation if builtin else None),
                     "norm": getattr(module, "norm_name", "none" if builtin else None),
                     "n_params": sum(named[n].numel() for n in groups[i]),
                     "is_output": i == output_block(names)})
    return rows


def dataset_row(name: str, custom: dict[str, DatasetSpec] | None = None, preprocess: str = "standard") -> dict:
    """The ``datasets`` table row of a data set (preprocessed, so its sizes are the ones runs see), with
    its trivial predictor's test score (pipeline/extract/baseline.py)."""
    spec = get_spec(name, custom)
    d = prepared_dataset(name, custom, preprocess)
    baseline = trivial_baseline(d)
    return {
        "name": name, "task": spec.task, "source": spec.source, "item": spec.item, "target": spec.target,
        "description": spec.description, "synthetic": spec.synthetic, "max_rows": spec.max_rows,
        "n_raw_rows": d.n_raw_rows, "n_rows": len(d.y), "n_features": math.prod(d.input_shape),
        "n_classes": d.n_classes,
        "n_train": len(d.train_idx), "n_test": len(d.test_idx), "target_mean": d.target_mean,
        "target_std": d.target_std, "feature_names": list(d.feature_names), "class_names": list(d.class_names),
        "input_shape": list(d.input_shape), "preprocess": d.preprocess,
        "baseline_name": baseline.name, "baseline_metric": baseline.metric, "baseline_auc": baseline.auc,
    }
