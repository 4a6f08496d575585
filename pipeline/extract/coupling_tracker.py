"""Curvature propagation inside one run: coupling maps at checkpoints, and skip-connection synthesis.

``CouplingTracker`` is the run's part of issue 8's protocol (002):
- at every spectral snapshot, and at the SHADOW_WINDOW metric checkpoints ending at the synthesis
  step, the coupling map of the loss Hessian (``coupling_probes`` Rademacher probes per block);
- at the synthesis step (the first metric checkpoint after ``augment_at`` of training), shadows
  over that window, candidate edges, gentle trials and greedy selection; ``augment = "random"``
  runs the same trials only to learn how many edges synthesis would add, then places that many at
  random. The edges enter with gates at 0 and training continues with them.

Seeds: probes of the map at step s from (seed, s, COUPLING_STREAM); the trials' batches, probes and
edge projections from their own streams at the synthesis step, so a trial never moves the run's own
random state and a re-run reproduces every number.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from pipeline.curvature.coupling import global_coherence
from pipeline.curvature.coupling_rows import coupling_rows, measure_coupling
from pipeline.curvature.shadows import SHADOW_WINDOW, collapsed_blocks, find_shadows
from pipeline.models.block_graph import block_names, trace_block_graph
from pipeline.models.mlp import MLP
from pipeline.runspec import RunSpec
from pipeline.training.regularizers import training_step
from pipeline.training.synthesis import candidate_edges, random_edges, synthesize

COUPLING_STREAM, TRIAL_STREAM, COHERENCE_STREAM, EDGE_STREAM, RANDOM_EDGE_STREAM = 2_000_003, 2_000_005, 2_000_007, \
    2_000_009, 2_000_011


def synthesis_step(spec: RunSpec, metric_at: np.ndarray) -> tuple[int | None, list[int]]:
    """(the synthesis step, the metric checkpoints of its shadow window); (None, []) without synthesis.

    The step is the first metric checkpoint at or after ``augment_at`` of training, moved later if
    fewer than SHADOW_WINDOW checkpoints precede it and earlier if none follows it. Raises
    ValueError when the run has too few checkpoints for a window and some training after it."""
    if spec.augment == "none":
        return None, []
    if len(metric_at) < SHADOW_WINDOW + 1:
        raise ValueError(f"augment = {spec.augment!r} needs at least {SHADOW_WINDOW + 1} distinct metric "
                         f"checkpoints (a window of {SHADOW_WINDOW} maps and training after it); this run has "
                         f"{len(metric_at)}: raise metric_checkpoints or epochs")
    total = int(metric_at[-1])
    idx = int(np.searchsorted(metric_at, spec.augment_at * total))
    idx = min(max(idx, SHADOW_WINDOW - 1), len(metric_at) - 2)
    return int(metric_at[idx]), [int(s) for s in metric_at[idx - SHADOW_WINDOW + 1: idx + 1]]


class CouplingTracker:
    def __init__(self, spec: RunSpec, model: MLP, probe: tuple[torch.Tensor, torch.Tensor], loss_fn, task: str,
                 device: str, metric_at: np.ndarray):
        self.spec, self.model, self.probe, self.loss_fn = spec, model, probe, loss_fn
        self.task, self.device = task, device
        self.aug_step, self.window = synthesis_step(spec, metric_at)
        self.maps: dict[int, np.ndarray] = {}
        self.lengths: np.ndarray | None = None
        self.augmentation_rows: list[dict] = []
        self.trial_rows: list[dict] = []

    @property
    def enabled(self) -> bool:
        return self.spec.coupling_probes > 0

    def measure(self, model: MLP, step: int, stream: int) -> tuple:
        rng = np.random.default_rng([self.spec.seed, step, stream])
        return measure_coupling(model, *self.probe, self.loss_fn, self.task, self.spec.coupling_probes, rng,
                                self.device)

    def at_checkpoint(self, step: int, is_spectral: bool) -> list[dict]:
        """Rows of ``curvature_coupling`` for this checkpoint (none when no map is due)."""
        if not self.enabled or not (is_spectral or step in self.window):
            return []
        graph, cmap = self.measure(self.model, step, COUPLING_STREAM)
        if self.lengths is None:
            self.lengths = graph.pair_lengths()  # the model as built: the pairs coherence is taken over
        self.maps[step] = cmap.kappa
        return [{"step": step, **r} for r in coupling_rows(graph, cmap)]

    def maybe_augment(self, step: int, optimizer: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor],
                      progress: Callable[[], None] | None = None) -> float | None:
        """At the synthesis step: find shadows, trial candidates, add the chosen (or random) edges;
        returns the seconds it took (None at every other step)."""
        if step != self.aug_step:
            return None
        t0 = time.perf_counter()
        spec, n_blocks = self.spec, len(self.model.blocks)
        kappas = [self.maps[s] for s in self.window]
        shadows = find_shadows(kappas, self.lengths)
        candidates = candidate_edges(shadows, collapsed_blocks(shadows, self.lengths), n_blocks)
        edge_seed = int(np.random.default_rng([spec.seed, step, EDGE_STREAM]).integers(2**31))
        batches = _trial_batches(len(train[0]), spec, step)

        def train_steps(m: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
            generator = torch.Generator().manual_seed(spec.seed + step)
            for idx in batches:
                Xb, yb = train[0][idx], train[1][idx]
                training_step(m, opt, lambda Xb=Xb, yb=yb: self.loss_fn(m(Xb), yb), spec.regularizer,
                              penalty=spec.penalty, rho=spec.rho, fisher_eta=spec.fisher_eta, generator=generator)

        def coherence(m: torch.nn.Module) -> float:
            _, cmap = self.measure(m, step, COHERENCE_STREAM)  # the same probes for every trial
            return global_coherence(cmap.kappa, self.lengths)

        def guarded_steps(m: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
            try:
                train_steps(m, opt)
            except FloatingPointError:
                with torch.no_grad():
                    for p in m.parameters():
                        p.fill_(float("nan"))  # a diverged trial measures NaN and is never chosen

        chosen, trials = synthesize(self.model, optimizer, candidates, guarded_steps, coherence, spec.edge_budget,
                                    edge_seed, progress)
        gains = {t.edge: t.gain for t in trials if t.selected}
        self.trial_rows = [{"step": step, "round": t.round, "src": t.edge.src, "dst": t.edge.dst, "kind": t.edge.kind,
                            "relative_coupling": t.relative, "coherence_control": _finite(t.coherence_control),
                            "coherence_trial": _finite(t.coherence_trial), "gain": _finite(t.gain),
                            "selected": t.selected} for t in trials]
        if spec.augment == "random":
            chosen = random_edges([e.kind for e in chosen], n_blocks,
                                  np.random.default_rng([spec.seed, step, RANDOM_EDGE_STREAM]))
            gains = {}
        if chosen:
            new = self.model.add_edges(chosen, edge_seed)
            optimizer.add_param_group({"params": new})
        for k, edge in enumerate(chosen):
            module = self.model.skips[edge.key]
            self.augmentation_rows.append({
                "step": step, "edge_index": k, "src": edge.src, "dst": edge.dst, "kind": edge.kind,
                "method": spec.augment, "gain": _finite(gains.get(edge)),
                "n_params": sum(p.numel() for p in module.parameters()), "gate": None})
        return time.perf_counter() - t0

    def final_rows(self) -> dict[str, list[dict]]:
        """``blocks`` of the final model, ``augmentations`` with their final gates, ``augmentation_trials``."""
        graph = trace_block_graph(self.model, block_names(self.model))
        params = dict(self.model.named_parameters())
        blocks = [{**r, "n_params": sum(params[n].numel() for n in r["parameters"])} for r in graph.rows()]
        edges = getattr(self.model, "edges", [])
        for row in self.augmentation_rows:
            edge = next(e for e in edges if (e.src, e.dst, e.kind) == (row["src"], row["dst"], row["kind"]))
            row["gate"] = float(self.model.skips[edge.key].gate.detach())
        return {"blocks": blocks, "augmentations": self.augmentation_rows, "augmentation_trials": self.trial_rows}


def _trial_batches(n_train: int, spec: RunSpec, step: int) -> list[torch.Tensor]:
    seed = int(np.random.default_rng([spec.seed, step, TRIAL_STREAM]).integers(2**31))
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(n_train, generator=generator)[: spec.batch_size] for _ in range(spec.trial_steps)]


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None
