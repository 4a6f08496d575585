"""One layer snapshot's rows of ``layer_topology`` and ``layer_topology_bars``, from its stored weight."""

from __future__ import annotations

import numpy as np

from analyses.topology import homology

#: Whether each neuron's bias is appended to its incoming weight vector in the point cloud.
INCLUDE_BIAS = False
#: H0 method of :func:`analyses.topology.homology.h0_deaths`.
METHOD: homology.Method = "auto"


def topology_rows(run_id: str, step: int, layer_index: int, weight: np.ndarray,
                  bias: np.ndarray | None, tensor: str = "linear.weight",
                  principal: bool = True, part: str = "all") -> tuple[dict, list[dict]]:
    """The ``layer_topology`` row and the ``layer_topology_bars`` rows (one per finite bar of positive
    length, birth 0) of one layer's weight W (q, d) and bias (q,) (used only with :data:`INCLUDE_BIAS`).
    ``weight_variance`` and ``weight_norm`` are the variance of W's entries and its Frobenius norm.
    ``tensor`` names the matrix (a block may have several) and ``part`` which of a packed projection's
    parts it is (``all``: the whole tensor); ``principal`` marks the block's largest."""
    summary, cloud, deaths = homology.layer_topology(weight, bias if INCLUDE_BIAS else None, METHOD)
    w = np.asarray(weight, dtype=np.float64)
    row = {"run_id": run_id, "step": step, "layer_index": layer_index, "tensor": tensor, "part": part,
           "principal": principal, "n_points": summary.n_points,
           "n_bars": summary.n_bars, "entropy": summary.entropy, "normalized_entropy": summary.normalized_entropy,
           "normalized_entropy_log_total": summary.normalized_entropy_log_total,
           "mean_lifetime": summary.mean_lifetime, "mean_lifetime_scaled": summary.mean_lifetime_scaled,
           "n_neurons": cloud.n_neurons, "n_dead": cloud.n_dead, "n_duplicates": cloud.n_duplicates,
           "total_lifetime": summary.total_lifetime, "mean_neuron_norm": summary.mean_neuron_norm,
           "weight_variance": float(w.var()), "weight_norm": float(np.linalg.norm(w)),
           "with_bias": INCLUDE_BIAS, "method": "mst" if METHOD == "auto" else METHOD}
    kept = deaths[deaths > 0]
    bars = [{"run_id": run_id, "step": step, "layer_index": layer_index, "tensor": tensor, "part": part,
             "bar_index": k, "birth": 0.0, "death": float(d)} for k, d in enumerate(kept)]
    return row, bars
