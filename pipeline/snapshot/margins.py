"""Normalized margins of a classifier at every representation (definition 7; Jiang et al. 2019).

For a point x with label i and logits f(x), j = argmax_{k != i} f_k(x) is the highest other class.
At a representation h of x (the input, the output of block l, or the logits themselves; for a
convolution or Transformer block its whole output, flattened) the first-order distance to the
decision boundary between i and j is

    d(x) = (f_i - f_j) / sqrt(eps + ||grad_h (f_i - f_j)||^2),      eps = MARGIN_EPS = 1e-6,

and the stored margin is d / TV(h), TV(h) = sqrt(tr Cov(h)) the total variation of h over the
split's points (population covariance, ddof = 0), which makes margins comparable across layers and
networks. At the output, grad_h (f_i - f_j) = e_i - e_j, so the denominator is sqrt(eps + 2).
d > 0 iff the point is classified correctly (ties count as wrong). Token ids have no gradient: at
the ``input`` of token data the status is ``discrete_input`` and there are no margins.

The model runs in eval mode in float64 (a copy), so every point is its own function of x (dropout
off, batch norm on its running statistics) and one backward pass of sum_n (f_i - f_j)(x_n) gives
each point's gradient at every representation at once.

Signature of a set of margins (Jiang et al.'s distribution summary): Q1, median, Q3 (numpy's
linear-interpolation percentiles), the fences Q1 - 1.5 IQR and Q3 + 1.5 IQR, mean, std (ddof 0)
and count.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.models.block_graph import block_module, block_names, output_block
from pipeline.models.mlp import MLP

MARGIN_EPS = 1e-6
#: Why a signature has no statistics (``status`` column of ``margins``).
OK, NO_POINTS, ZERO_VARIATION, SINGLE_CLASS, NOT_CLASSIFICATION, DISCRETE_INPUT, NO_OUTPUT = (
    "ok", "no_points", "zero_variation", "single_class", "not_classification", "discrete_input", "no_output")


def representation_names(n_blocks: int, output: int | None = None) -> list[str]:
    """``input``, ``h{i}`` for every block i but the output block (``h0`` .. ``h{L-2}`` when it is the
    last), ``output`` (the logits) for L blocks; ``output``: the output block's index (default L - 1)."""
    out = n_blocks - 1 if output is None else output
    return ["input", *(f"h{i}" for i in range(n_blocks) if i != out), "output"]


def representation_layer(name: str, n_blocks: int, output: int | None = None) -> int | None:
    """The ``layer_index`` of the block whose output a representation is (NULL for the input)."""
    if name == "input":
        return None
    return (n_blocks - 1 if output is None else output) if name == "output" else int(name[1:])


def _output_index(model: nn.Module) -> tuple[int, int]:
    """(number of blocks, index of the output block) of any model (an MLP's: L, L - 1)."""
    names = block_names(model)
    return len(names), output_block(names)


@dataclass(frozen=True)
class RepresentationMargins:
    """Margins of N points at one representation: ``margins`` (N,) float64 (NaN unless status is
    ok), ``correct`` (N,) bool, the total variation used to normalize, and a status."""

    name: str
    margins: np.ndarray
    correct: np.ndarray
    total_variation: float
    status: str


def representations(model: nn.Module, X: torch.Tensor) -> list[torch.Tensor | None]:
    """[x, h_0, ..., h_{L-2}, logits]: the input, every block's output but the output block's (the
    last block that is a module: :func:`pipeline.models.block_graph.output_block`), and the outputs.

    An MLP gives them itself (``representations``, residual and gated edges included); any other
    model's block outputs (:func:`pipeline.models.block_graph.block_names`) are recorded by forward
    hooks, as the tensors the rest of the forward pass reads, so gradients reach them. A block of a
    module's own parameters (a CLS token) has no output of each point: None."""
    # An MLP gives them itself: its h_i includes the residual sum z + C_i(z), which is no module's output
    if isinstance(model, MLP):
        return model.representations(X)
    names = block_names(model)
    out = output_block(names)
    hidden = [n for i, n in enumerate(names) if i != out]
    seen: dict[str, torch.Tensor] = {}
    def keep(out, name):
        if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
            out = out[0]  # nn.MultiheadAttention and the like: the first output is the representation
        seen.setdefault(name, out)

    modules = {name: block_module(model, name) for name in hidden}
    handles = [module.register_forward_hook(lambda _m, _args, out, name=name: keep(out, name))
               for name, module in modules.items() if module is not None]
    try:
        logits = model(X)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in hidden if modules[n] is not None and not isinstance(seen.get(n), torch.Tensor)]
    if missing:
        raise ValueError(f"block {missing[0]!r} returned no tensor in the forward pass: it has no margin")
    return [X, *(seen.get(n) for n in hidden), logits]


def normalized_margins(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                       eps: float = MARGIN_EPS) -> list[RepresentationMargins]:
    """Margins of points X (N, d) with labels y (N,) at every representation (:func:`representations`;
    a block's output of any shape is read as one vector per point); the model is copied to float64
    and put in eval mode.
    """
    m64 = copy.deepcopy(model).double().eval()
    discrete = not X.is_floating_point()  # token ids: no gradient at the input
    X = X.detach() if discrete else X.detach().to(torch.float64)
    y = y.detach().reshape(-1).long()
    names = representation_names(*_output_index(m64))
    n = X.shape[0]
    if n == 0:
        return [RepresentationMargins(name, np.empty(0), np.empty(0, bool), math.nan, NO_POINTS) for name in names]
    reps = representations(m64, X.clone() if discrete else X.clone().requires_grad_(True))
    logits = reps[-1]
    if logits.shape[1] < 2:
        nan = np.full(n, math.nan)
        return [RepresentationMargins(name, nan, np.zeros(n, bool), math.nan, SINGLE_CLASS) for name in names]
    rows = torch.arange(n)
    others = logits.detach().clone()
    others[rows, y] = -math.inf
    j = others.argmax(dim=1)
    numerator = logits[rows, y] - logits[rows, j]
    differentiable = [r for r in reps if r is not None and r.requires_grad]
    found = iter(torch.autograd.grad(numerator.sum(), differentiable, allow_unused=True))
    grads = [next(found) if r is not None and r.requires_grad else None for r in reps]
    num = numerator.detach().numpy()
    correct = num > 0
    out = []
    for name, rep, g in zip(names, reps, grads, strict=True):
        if rep is None:  # a block of a module's own parameters
            out.append(RepresentationMargins(name, np.full(n, math.nan), correct, math.nan, NO_OUTPUT))
            continue
        if discrete and name == "input":
            out.append(RepresentationMargins(name, np.full(n, math.nan), correct, math.nan, DISCRETE_INPUT))
            continue
        g = torch.zeros_like(rep) if g is None else g
        distance = num / np.sqrt(eps + (g.detach().reshape(n, -1) ** 2).sum(dim=1).numpy())
        tv = total_variation(rep.detach().reshape(n, -1).numpy())
        if n < 2 or tv == 0:
            out.append(RepresentationMargins(name, np.full(n, math.nan), correct, tv, ZERO_VARIATION))
        else:
            out.append(RepresentationMargins(name, distance / tv, correct, tv, OK))
    return out


def total_variation(h: np.ndarray) -> float:
    """sqrt(tr Cov(h)) of points h (N, k), population covariance: sqrt(sum_k Var(h[:, k]))."""
    if h.shape[0] == 0:
        return math.nan
    return float(np.sqrt(h.var(axis=0).sum()))


def margin_signature(values: np.ndarray) -> dict:
    """Q1, median, Q3, lower/upper fence, mean, std (ddof 0), count of the finite values (m,).

    Statistics are None with no finite value (count 0)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {k: None for k in ("q1", "median", "q3", "lower_fence", "upper_fence", "mean", "std")} | {"count": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    iqr = q3 - q1
    return {"q1": float(q1), "median": float(med), "q3": float(q3), "lower_fence": float(q1 - 1.5 * iqr),
            "upper_fence": float(q3 + 1.5 * iqr), "mean": float(v.mean()), "std": float(v.std()),
            "count": int(v.size)}


def margin_rows(model: nn.Module,
                splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[dict], list[dict]]:
    """Rows of ``margins`` (signatures) and ``margin_values`` (raw margins) for each split's (X, y).

    Per split and representation: one ``margin_values`` row (margins of every point in split order,
    NULL where undefined, and whether each point is classified correctly) and two signatures, over
    all points and over correctly classified ones (``correct_only``). A set with no point gets status
    ``no_points`` and a constant representation ``zero_variation``; their statistics are NULL."""
    n_blocks, out = _output_index(model)
    signatures, values = [], []
    for split, (X, y) in splits.items():
        for rep in normalized_margins(model, X, y):
            layer = representation_layer(rep.name, n_blocks, out)
            finite = np.isfinite(rep.margins)
            values.append({"split": split, "representation": rep.name, "layer_index": layer,
                           "margins": [float(m) if f else None for m, f in zip(rep.margins, finite, strict=True)],
                           "correct": rep.correct.tolist()})
            for correct_only in (False, True):
                chosen = rep.margins[rep.correct] if correct_only else rep.margins
                status = rep.status if chosen.size else NO_POINTS
                sig = margin_signature(chosen if status == OK else np.empty(0))
                sig["count"] = int(chosen.size)
                signatures.append({"split": split, "representation": rep.name, "layer_index": layer,
                                   "correct_only": correct_only, "status": status,
                                   "total_variation": _finite_or_none(rep.total_variation),
                                   "n_points": int(rep.margins.size), **sig})
    return signatures, values


def not_classification_rows(splits: tuple[str, ...] = ("train", "test")) -> list[dict]:
    """Signature rows saying that a regression run has no margins (one per split and correct_only)."""
    empty = margin_signature(np.empty(0))
    return [{"split": s, "representation": "output", "layer_index": None, "correct_only": c,
             "status": NOT_CLASSIFICATION, "total_variation": None, "n_points": 0, **empty}
            for s in splits for c in (False, True)]


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
