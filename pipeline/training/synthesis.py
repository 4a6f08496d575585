"""Skip-connection synthesis (002): add gated edges where the coupling map shows shadows, chosen by
the global coherence each edge restores.

1. Candidates: for each shadow pair (i, j) with j >= i + 2, the skip edge from the output of block i
   into the input of block j; for each collapsed block b, an adapter parallel to it (edge b-1 -> b+1,
   kind ``adapter``). Weakest first, at most MAX_CANDIDATES.
2. Gentle trials: an edge enters with its gate at 0, so it changes neither the function nor the
   Hessian at insertion; its effect shows only once training moves the gate. A trial copies the model
   and its optimizer state, adds the edges, trains ``trial_steps`` steps on a fixed list of batches
   and measures the global coherence C (mean kappa over path pairs) with fixed probes. The control is
   the same without the candidate, from the same state, on the same batches and probes; the gain is
   C(candidate) - C(control). The run itself never sees a trial.
3. Greedy selection: each round re-trials the remaining candidates on top of the edges already chosen
   and keeps the largest gain, while it is positive and the edge budget lasts. The chosen edges then
   enter the real model (gates at 0, the projections the trials used) and training continues.

``random_edges`` places as many gated edges of the same kinds uniformly at random (the control arm).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.curvature.shadows import Shadow
from pipeline.models.gated_edge import EdgeSpec

#: Most candidate edges tried per synthesis.
MAX_CANDIDATES = 6

TrainSteps = Callable[[torch.nn.Module, torch.optim.Optimizer], None]
Coherence = Callable[[torch.nn.Module], float]


@dataclass(frozen=True)
class Candidate:
    edge: EdgeSpec
    #: the weakest relative coupling behind it (the shadow's, or the collapsed block's)
    relative: float


def candidate_edges(shadows: list[Shadow], collapsed: list[int], n_blocks: int,
                    max_candidates: int = MAX_CANDIDATES) -> list[Candidate]:
    """Skip edges over shadow pairs and adapters at collapsed blocks, weakest coupling first."""
    out: dict[EdgeSpec, float] = {}
    for s in shadows:
        if s.block_j - s.block_i >= 2:
            out.setdefault(EdgeSpec(s.block_i, s.block_j), s.max_relative)
    for b in collapsed:
        worst = min((s.max_relative for s in shadows if s.path_length == 1 and b in (s.block_i, s.block_j)),
                    default=0.0)
        out.setdefault(EdgeSpec(b - 1, b + 1, "adapter"), worst)
    ranked = sorted(out.items(), key=lambda kv: (kv[1], kv[0]))
    return [Candidate(e, r) for e, r in ranked[:max_candidates] if _valid(e, n_blocks)]


def _valid(edge: EdgeSpec, n_blocks: int) -> bool:
    try:
        edge.validate(n_blocks)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Trial:
    round: int
    edge: EdgeSpec
    relative: float
    coherence_control: float
    coherence_trial: float
    selected: bool

    @property
    def gain(self) -> float:
        return self.coherence_trial - self.coherence_control


def gentle_trial(model: torch.nn.Module, optimizer: torch.optim.Optimizer, edges: list[EdgeSpec],
                 train_steps: TrainSteps, coherence: Coherence, seed: int) -> float:
    """C after ``train_steps`` on a copy of (model, optimizer) with ``edges`` added (gates at 0,
    projections drawn from ``seed``). The copies share parameters as the originals do."""
    trial_model, trial_optimizer = copy.deepcopy((model, optimizer))
    # the trial's own random stream (dropout masks, probes), on the CPU where trials run: the run's
    # generator never moves, and no CUDA generator is reseeded (torch.manual_seed would reseed them
    # all, and fork_rng(devices=[]) restores the CPU's only)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        if edges:
            trial_optimizer.add_param_group({"params": trial_model.add_edges(list(edges), seed)})
        trial_model.train()
        train_steps(trial_model, trial_optimizer)
        return coherence(trial_model)


def synthesize(model: torch.nn.Module, optimizer: torch.optim.Optimizer, candidates: list[Candidate],
               train_steps: TrainSteps, coherence: Coherence, budget: int, seed: int,
               progress: Callable[[], None] | None = None) -> tuple[list[EdgeSpec], list[Trial]]:
    """Greedy selection by coherence gain under ``budget`` edges; returns (chosen edges, every trial)."""
    chosen: list[EdgeSpec] = []
    remaining = list(candidates)
    trials: list[Trial] = []
    for rnd in range(budget):
        if not remaining:
            break
        control = gentle_trial(model, optimizer, chosen, train_steps, coherence, seed)
        results = []
        for cand in remaining:
            results.append((cand, gentle_trial(model, optimizer, [*chosen, cand.edge], train_steps, coherence,
                                               seed)))
            if progress:
                progress()
        # a diverged trial measures NaN: it can be neither chosen nor block a finite candidate
        finite = [r for r in results if np.isfinite(r[1] - control)]
        best_cand, best_c = (max(finite, key=lambda r: (r[1] - control, -remaining.index(r[0]))) if finite
                             else (None, np.nan))
        keep = best_cand is not None and best_c - control > 0
        trials += [Trial(rnd, c.edge, c.relative, control, value, keep and c is best_cand) for c, value in results]
        if not keep:
            break
        chosen.append(best_cand.edge)
        remaining.remove(best_cand)
    return chosen, trials


def random_edges(kinds: list[str], n_blocks: int, rng: np.random.Generator) -> list[EdgeSpec]:
    """One random edge per entry of ``kinds``, distinct, uniformly among the valid edges of that kind:
    a skip between blocks (0 <= src, src + 2 <= dst < n_blocks), or an adapter parallel to a block b
    (edge b - 1 -> b + 1), so the random arm adds what synthesis added, placed by chance."""
    pools = {"skip": [EdgeSpec(s, d) for s in range(n_blocks) for d in range(s + 2, n_blocks)],
             "adapter": [EdgeSpec(b - 1, b + 1, "adapter") for b in range(n_blocks)]}
    out: list[EdgeSpec] = []
    for kind in kinds:
        pool = [e for e in pools[kind] if e not in out]
        if pool:
            out.append(pool[int(rng.integers(len(pool)))])
    return sorted(out)
