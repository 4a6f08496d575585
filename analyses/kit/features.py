"""The feature catalog: the 45 per-layer features every statistics stage reads, as SQL over the corpus
tables, with their transforms and the layer positions that compare layers across depths.

A feature is measured on one block at one spectral snapshot: measures of the weights, the gradients
and the activations, the gradient pressure and natural-gradient norm, and summaries of the spectra of
three curvature matrices of the block (the local Hessian, 001 Def. 5-6; the loss-Hessian block; the
Gauss-Newton block, 000). Curvature features are exact or NULL (:func:`exact`): a value a matrix-free
row estimated is never pooled with exact ones. The ``features`` stage (:mod:`analyses.features`)
writes the tables; the other stages read this catalog for names, groups and transforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Feature:
    name: str
    group: str
    expr: str  # SQL over the aliases s (layer_stats), l (layers), hl/hs/hg (local/loss/ggn spectra)
    log_scale: bool
    description: str


def exact(alias: str, *columns: str) -> str:
    """SQL: the ``hessian_spectra`` row ``alias`` holds each column exactly: an exact method, or a
    matrix-free row on which the column's standard error is 0 (the trace and std from a Kronecker form)
    or, for the top eigenvalue, a converged Ritz value. On matrix-free rows a NULL standard error
    counts as inexact, and columns that need the whole spectrum are never exact."""
    conds = []
    for c in columns:
        if c == "top_eigenvalue":
            conds.append(f"{alias}.converged")
        elif c in _WITH_STDERR:
            conds.append(f"coalesce({alias}.{c}_stderr = 0, false)")
    estimated_ok = " AND ".join(conds) if conds else "false"
    return f"({alias}.method <> 'lanczos' OR ({estimated_ok}))"


_WITH_STDERR = ("trace", "std", "skewness", "negative_mass", "effective_rank")


#: Per spectral snapshot, the sum of the loss-Hessian block traces (the trace of the full Hessian
#: restricted to the Linear layers), only when every block's trace is exact (else NULL).
SNAPSHOT_LOSS_TRACE_SQL = f"""
    SELECT run_id, step, CASE WHEN bool_and({exact("h", "trace")}) THEN sum(h.trace) END AS hessian_trace
    FROM hessian_spectra h WHERE h.kind = 'loss' GROUP BY run_id, step"""


def _guarded(alias: str, expr: str, *columns: str) -> str:
    return f"CASE WHEN {exact(alias, *columns)} THEN {expr} END"


def _hessian(prefix: str, alias: str, kind: str) -> list[Feature]:
    """Features of one kind's spectra, each NULL where the column it needs was estimated (see
    :func:`exact`): statistics never pool estimates with exact values."""
    g = f"{prefix}_hessian" if prefix != "ggn" else "ggn"
    what = {"local": "local Hessian (001 Def. 5-6)", "loss": "loss-Hessian block",
            "ggn": "Gauss-Newton block (000)"}[kind]
    a = alias
    return [
        Feature(f"{prefix}_trace", g, _guarded(a, f"{a}.trace", "trace"), True, f"trace of the {what}"),
        Feature(f"{prefix}_top", g, _guarded(a, f"{a}.top_eigenvalue", "top_eigenvalue"), True,
                f"largest eigenvalue of the {what}"),
        Feature(f"{prefix}_condition", g, _guarded(a, f"{a}.condition_number", "condition_number"), True,
                f"condition number max|λ|/min nonzero|λ| of the {what} (NULL without a clear gap at the noise floor)"),
        Feature(f"{prefix}_effective_rank_ratio", g,
                _guarded(a, f"{a}.effective_rank / {a}.n_params", "effective_rank"), False,
                f"effective rank Σ|λ|/max|λ| of the {what}, over its dimension"),
        Feature(f"{prefix}_std", g, _guarded(a, f"{a}.std", "std"), True,
                f"standard deviation of the {what}'s eigenvalues"),
        Feature(f"{prefix}_relative_std", g,
                _guarded(a, f"{a}.std / nullif(abs({a}.trace) / {a}.n_params, 0)", "std", "trace"), True,
                f"std of the {what}'s eigenvalues over their mean |trace|/dim"),
        Feature(f"{prefix}_skewness", g, _guarded(a, f"{a}.skewness", "skewness"), False,
                f"skewness of the {what}'s eigenvalues"),
        Feature(f"{prefix}_near_zero_fraction", g, _guarded(a, f"{a}.near_zero_fraction", "near_zero_fraction"),
                False, f"fraction of the {what}'s eigenvalues near zero (|λ| <= tol·max|λ|)"),
        Feature(f"{prefix}_bias_share_ratio", g,
                f"{a}.bias_share / {a}.bias_share_baseline", False,
                f"spectral share of bias coordinates in the {what}, over its no-structure baseline 1/(d+1)"),
    ] + ([] if kind == "ggn" else [
        Feature(f"{prefix}_negative_mass", g, _guarded(a, f"{a}.negative_mass", "negative_mass"), False,
                f"Σ_(λ<0)|λ| / Σ|λ| of the {what}"),
        Feature(f"{prefix}_symmetry", g, _guarded(a, f"{a}.symmetry", "symmetry"), False,
                f"W1(λ, -λ)/mean|λ| of the {what} (0 = symmetric about zero, the saddle marker)"),
    ])


FEATURES: tuple[Feature, ...] = (
    Feature("weight_norm", "weights", "s.weight_norm", True, "Frobenius norm of W"),
    Feature("bias_norm", "weights", "s.bias_norm", True, "Euclidean norm of b"),
    Feature("weight_rank_ratio", "weights", "s.weight_rank / least(l.in_features, l.out_features)", False,
            "numerical rank of W over min(d, q)"),
    Feature("weight_stable_rank", "weights", "s.weight_stable_rank", True, "stable rank ||W||_F²/||W||_2²"),
    Feature("weight_spectral_norm", "weights", "s.weight_spectral_norm", True, "largest singular value of W"),
    Feature("adjacent_similarity", "weights", "s.adjacent_similarity", False,
            "mean cosine of principal angles between this layer's and the next layer's singular subspaces"),
    Feature("grad_norm", "gradients", "s.grad_norm", True, "Frobenius norm of the loss gradient of W"),
    Feature("grad_rank_ratio", "gradients", "s.grad_rank / least(l.in_features, l.out_features)", False,
            "numerical rank of the gradient over min(d, q)"),
    Feature("grad_stable_rank", "gradients", "s.grad_stable_rank", True, "stable rank of the gradient"),
    Feature("alignment", "gradients", "s.alignment", False,
            "weight-gradient alignment Σσ_k(W)|u_kᵀGv_k|/(||W||_F||G||_F) (001 5.5.3)"),
    Feature("saturation_fraction", "activations", "s.saturation_fraction", False,
            "fraction of (unit, probe point) pairs with |A'(u)| below the saturation threshold"),
    Feature("dead_fraction", "activations", "s.dead_fraction", False, "fraction of ReLU units dead on every probe"),
    Feature("gradient_pressure", "ggn", "s.gradient_pressure", True,
            "gradient pressure gᵀH g/||g||² of the loss-Hessian block (000)"),
    Feature("natural_gradient_norm", "ggn", "s.natural_gradient_norm", True,
            "damped natural-gradient norm gᵀ(G + λI)⁻¹g (000)"),
    *_hessian("local", "hl", "local"),
    *_hessian("loss", "hs", "loss"),
    *_hessian("ggn", "hg", "ggn"),
)

#: Quality metrics at a snapshot, by task.
METRICS = {
    "classification": ("train_loss", "test_loss", "gap_loss", "test_accuracy", "gap_accuracy", "test_f1",
                       "test_auc"),
    "regression": ("train_loss", "test_loss", "gap_loss", "test_r2", "test_mae", "test_rmse"),
}
#: The metric ``primary_metric`` holds, by task.
PRIMARY_METRIC = {"classification": "test_accuracy", "regression": "test_r2"}
ALL_METRICS = tuple(dict.fromkeys(METRICS["classification"] + METRICS["regression"]))

#: Layer positions (:func:`layer_position`), from input to output.
POSITIONS = ("first", "middle", "last", "output")


def layer_position(layer_index: np.ndarray, n_layers: np.ndarray, is_output: np.ndarray) -> np.ndarray:
    """Position label per layer (arrays of shape (m,)): 'output' if is_output, else 'first' for layer 0,
    'last' for the last hidden layer n_layers - 2 (when > 0), else 'middle'. Layer indices mean different
    things in networks of different depth; positions compare across them."""
    i, n, out = np.asarray(layer_index), np.asarray(n_layers), np.asarray(is_output, bool)
    return np.where(out, "output", np.where(i == 0, "first", np.where(i == n - 2, "last", "middle")))


def feature_names(group: str | None = None) -> list[str]:
    return [f.name for f in FEATURES if group is None or f.group == group]


def slog_sql(expr: str) -> str:
    """The transform slog(x) = sign(x) ln(1 + |x|) of a SQL expression."""
    return f"sign({expr}) * ln(1 + abs({expr}))"


def slog(x: np.ndarray) -> np.ndarray:
    """slog(x) = sign(x) ln(1 + |x|), elementwise (shape kept): the transform of ``log_scale`` features."""
    x = np.asarray(x, float)
    return np.sign(x) * np.log1p(np.abs(x))
