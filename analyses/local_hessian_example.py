"""The paper's Figure 1 (001): one layer's local Hessian drawn as a heatmap. In neuron order, with the
parameters of each neuron (w_j, b_j) side by side, it is block diagonal: q blocks of size d + 1, one per
neuron, because with its input held fixed neuron j's output depends on its own weights only. The
database keeps eigenvalues, not matrices, so this stage rebuilds the network from the stored weights,
recomputes the matrix on the run's probe batch and stores it, and the figure is drawn from that table.

Table ``analysis_local_hessian_example``: (run_id, dataset, activation, step, layer_index, phi,
neuron_order, n_rows, block_size, n_blocks, n_probe, max_abs, off_block_max_abs, matrix). ``matrix`` is
the local Hessian H = d^2 S / d theta^2 of S(theta) = (1/N) sum_n phi(A(norm(W z_n + b))) with phi = sum
(the paper's), z_n the probe inputs of the layer (held fixed), as a row-major DOUBLE[] of n_rows^2
entries, in neuron order (w_1, b_1, ..., w_q, b_q) when ``neuron_order`` and in torch order (vec W, b)
otherwise; both hold the same numbers permuted. ``off_block_max_abs`` is the largest |entry| outside the
q diagonal (d + 1)-blocks of the neuron order (0 for an elementwise activation without layer norm).

Choice (:func:`choose_example`): a hidden layer of a run whose activation has A'' != 0 (sigmoid first,
then tanh, then GELU), without normalization if there is one (batch norm otherwise; layer norm couples the
units and breaks the blocks), preferring a layer with NEURON_RANGE neurons and inputs + 1 in
BLOCK_RANGE (blocks large enough to see, few enough to tell apart), then the run with the most spectral
snapshots, the smallest matrix, the smallest run id; at the run's first and last spectral snapshots. A
matrix above MAX_ROWS rows keeps its first neurons (a principal submatrix, exact since neurons decouple).
With every run ReLU (A'' = 0) the local Hessian with phi = sum is exactly zero: the table stays empty and
the figure says so.
"""

from __future__ import annotations

import json

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import torch
from matplotlib.colors import SymLogNorm

from analyses.kit.stage import Figure, Stage
from analyses.kit.tables import write_table
from pipeline.curvature.activations import has_zero_second_derivative
from pipeline.curvature.local_hessian import closed_form_applies, local_hessian_closed_form, local_hessian_dense
from pipeline.curvature.objective import neuron_order
from pipeline.datasets.registry import file_spec
from pipeline.datasets.run_data import prepared_dataset, run_data
from pipeline.errors import PipelineError
from pipeline.models.mlp import MLP, build_model
from pipeline.runspec import RunSpec

#: The paper's aggregation of a block's outputs.
PHI = "sum"
#: Activations with A'' != 0, in order of preference (the paper's examples use sigmoid).
PREFERRED_ACTIVATIONS = ("sigmoid", "tanh", "gelu")
#: Normalizations in order of preference: none keeps the blocks of the bare layer; batch norm (eval mode)
#: rescales each unit and keeps them; layer norm couples the units.
PREFERRED_NORMS = ("none", "batchnorm", "layernorm")
#: Preferred number of neurons q (blocks): enough to show a pattern, few enough to tell apart.
NEURON_RANGE = (4, 16)
#: Preferred block size d + 1: large enough to show structure inside a block, small enough to draw.
BLOCK_RANGE = (5, 30)
#: Largest matrix stored (rows); a larger layer keeps its first MAX_ROWS // (d + 1) neurons.
MAX_ROWS = 512
#: The colour scale is linear within LINEAR_FRACTION x max|H| of zero and logarithmic beyond.
LINEAR_FRACTION = 1e-3

TABLES = {
    "analysis_local_hessian_example": [
        ("run_id", "VARCHAR"), ("dataset", "VARCHAR"), ("activation", "VARCHAR"), ("step", "INTEGER"),
        ("layer_index", "INTEGER"), ("phi", "VARCHAR"), ("neuron_order", "BOOLEAN"), ("n_rows", "INTEGER"),
        ("block_size", "INTEGER"), ("n_blocks", "INTEGER"), ("n_probe", "INTEGER"), ("max_abs", "DOUBLE"),
        ("off_block_max_abs", "DOUBLE"), ("matrix", "DOUBLE[]"),
    ],
}


# --- choosing the example -------------------------------------------------------------------------

def choose_example(candidates: pl.DataFrame) -> dict | None:
    """The layer to draw, or None when no layer has a nonzero local Hessian.

    candidates: one row per layer with run_id, dataset, activation, norm, layer_index, in_features,
    out_features, is_output, n_spectral (spectral snapshots with stored weights). Order: layers with
    NEURON_RANGE neurons and BLOCK_RANGE block size first, then PREFERRED_ACTIVATIONS, PREFERRED_NORMS,
    most snapshots, fewest rows q (d + 1), run id, layer index.
    """
    act_rank = {a: i for i, a in enumerate(PREFERRED_ACTIVATIONS)}
    norm_rank = {n: i for i, n in enumerate(PREFERRED_NORMS)}
    rows = [r for r in candidates.iter_rows(named=True)
            if not r["is_output"] and r["activation"] is not None
            and not has_zero_second_derivative(r["activation"]) and (r["n_spectral"] or 0) > 0]
    if not rows:
        return None

    def key(r: dict) -> tuple:
        q, b = r["out_features"], r["in_features"] + 1
        fits = NEURON_RANGE[0] <= q <= NEURON_RANGE[1] and BLOCK_RANGE[0] <= b <= BLOCK_RANGE[1]
        return (not fits, act_rank.get(r["activation"], len(act_rank)), norm_rank.get(r["norm"], len(norm_rank)),
                -r["n_spectral"], q * b, r["run_id"], r["layer_index"])

    return min(rows, key=key)


# --- rebuilding the network from the connection ---------------------------------------------------

def run_spec(con: duckdb.DuckDBPyConnection, run_id: str) -> RunSpec:
    rows = con.execute("SELECT config_json FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not rows:
        raise PipelineError(f"no run {run_id!r} in the database")
    return RunSpec.from_dict(json.loads(rows[0][0]))


def _dataset(con: duckdb.DuckDBPyConnection, name: str, preprocess: str = "standard"):
    rows = con.execute("SELECT source, item, target, task, description FROM datasets WHERE name = ?",
                       [name]).fetchall()
    custom = None
    if rows and rows[0][0] == "file":
        custom = {name: file_spec(name, rows[0][1], rows[0][2], rows[0][3], rows[0][4])}
    return prepared_dataset(name, custom, preprocess)


def probe_inputs(con: duckdb.DuckDBPyConnection, spec: RunSpec) -> torch.Tensor:
    """The run's probe batch X (N, d_in) in float64, regenerated from its spec and checked against the
    stored probe rows (as ``snapshot_loader.Corpus.probe_batch`` does)."""
    data = run_data(spec, _dataset(con, spec.dataset, spec.preprocess))
    stored = con.execute("SELECT rows FROM splits WHERE run_id = ? AND split = 'probe'", [spec.run_id]).fetchall()
    if not stored or not np.array_equal(np.asarray(stored[0][0]), data.probe_rows):
        raise PipelineError(f"run {spec.run_id}: the regenerated probe batch differs from the stored one "
                            "(the data set or its preprocessing changed since extraction)")
    return data.tensors("probe")[0].double()


def load_model(con: duckdb.DuckDBPyConnection, spec: RunSpec, step: int) -> MLP:
    """The network at a spectral snapshot from the stored tensors, in float64 and eval mode (as
    ``snapshot_loader.Corpus.model`` does, on this connection)."""
    dataset = _dataset(con, spec.dataset, spec.preprocess)
    with torch.random.fork_rng():  # build_model seeds torch; leave the caller's generator as it was
        model = build_model(spec, dataset.X.shape[1], dataset.output_dim)
    rows = con.execute('SELECT layer_index, tensor, shape, "values" FROM weights WHERE run_id = ? AND step = ?',
                       [spec.run_id, step]).fetchall()
    if not rows:
        raise PipelineError(f"run {spec.run_id} has no stored weights at step {step}")
    state = model.state_dict()
    for layer_index, tensor, shape, values in rows:
        key = f"blocks.{layer_index}.{tensor}"
        state[key] = torch.tensor(np.asarray(values, dtype=np.float32)).reshape(shape).to(state[key].dtype)
    model.load_state_dict(state)
    return model.double().eval()


# --- the matrices ---------------------------------------------------------------------------------

def local_hessian_matrices(block: torch.nn.Module, z: torch.Tensor, phi: str = PHI,
                           max_rows: int = MAX_ROWS) -> tuple[np.ndarray, np.ndarray, int]:
    """(H in neuron order, H in torch order, number of neurons kept) for a Block in eval mode and its
    input z (N, d), float64. Both are (k (d + 1), k (d + 1)) for the first k = min(q, max_rows // (d + 1))
    neurons (k = q for a small layer): the principal submatrix of the full H on their parameters, in
    the respective order (torch order: their weights row-major, then their biases)."""
    q, d = block.linear.weight.shape
    if closed_form_applies(block):
        neuron = local_hessian_closed_form(block, z, phi).dense("neuron")
    else:
        torch_full = local_hessian_dense(block, z, phi)
        perm = torch.as_tensor(neuron_order(q, d))
        neuron = torch_full[perm][:, perm]
    k = max(1, min(q, max_rows // (d + 1)))
    neuron = neuron[: k * (d + 1), : k * (d + 1)]
    # torch position of the kept parameters, listed in torch order: W[j, :] for j < k, then b_j for j < k
    kept_torch = np.concatenate([np.arange(k * d), q * d + np.arange(k)])
    full_perm = neuron_order(q, d)  # neuron position p holds torch index full_perm[p]
    position = {int(t): p for p, t in enumerate(full_perm[: k * (d + 1)])}
    to_neuron = torch.as_tensor([position[int(t)] for t in kept_torch])
    torch_order = neuron[to_neuron][:, to_neuron]
    return neuron.detach().cpu().numpy(), torch_order.detach().cpu().numpy(), k


def off_block_max_abs(h_neuron: np.ndarray, block_size: int) -> float:
    """max |H_ab| over entries outside the diagonal block_size x block_size blocks (neuron order)."""
    n = h_neuron.shape[0]
    owner = np.arange(n) // block_size
    mask = owner[:, None] != owner[None, :]
    return float(np.abs(h_neuron[mask]).max()) if mask.any() else 0.0


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Choose the layer, rebuild the network at the first and last spectral snapshot, write the table
    (empty when no layer has a nonzero local Hessian)."""
    write_table(con, "analysis_local_hessian_example", example_rows(con))


def example_rows(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The rows of ``analysis_local_hessian_example``: the chosen layer's local Hessian in neuron and in
    torch order at each of its run's first and last spectral snapshots (no rows without a choice)."""
    candidates = con.sql("""
        WITH snaps AS (
            SELECT c.run_id, count(DISTINCT c.step) AS n_spectral FROM checkpoints c
            WHERE c.is_spectral AND EXISTS (SELECT 1 FROM weights w WHERE w.run_id = c.run_id AND w.step = c.step)
            GROUP BY c.run_id)
        SELECT r.run_id, r.dataset, r.activation, r.norm, l.layer_index, l.in_features, l.out_features, l.is_output,
               coalesce(s.n_spectral, 0) AS n_spectral
        FROM runs r JOIN layers l USING (run_id) LEFT JOIN snaps s USING (run_id)
        WHERE r.status <> 'diverged' AND r.family = 'mlp'
        ORDER BY r.run_id, l.layer_index""").pl()
    choice = choose_example(candidates) if candidates.height else None
    if choice is None:
        return pl.DataFrame()
    run_id, layer = choice["run_id"], choice["layer_index"]
    steps = [r[0] for r in con.execute("""
        SELECT DISTINCT c.step FROM checkpoints c JOIN weights w USING (run_id, step)
        WHERE c.run_id = ? AND c.is_spectral ORDER BY c.step""", [run_id]).fetchall()]
    steps = sorted({steps[0], steps[-1]})
    spec = run_spec(con, run_id)
    X = probe_inputs(con, spec)
    rows = []
    for step in steps:
        model = load_model(con, spec, step)
        with torch.no_grad():
            z = model.intermediates(X).inputs[layer]
        neuron, torch_order, k = local_hessian_matrices(model.blocks[layer], z, PHI)
        block_size = choice["in_features"] + 1
        off = off_block_max_abs(neuron, block_size)
        for is_neuron, h in ((True, neuron), (False, torch_order)):
            rows.append([run_id, choice["dataset"], choice["activation"], step, layer, PHI, is_neuron, h.shape[0],
                         block_size, k, int(X.shape[0]), float(np.abs(h).max()), off, h.reshape(-1).tolist()])
    # write_table casts each column to its declared type
    return pl.DataFrame(rows, schema=[c for c, _ in TABLES["analysis_local_hessian_example"]], orient="row")


# --- figure and report ----------------------------------------------------------------------------

def _matrices(con: duckdb.DuckDBPyConnection) -> list[dict]:
    cur = con.execute("SELECT * FROM analysis_local_hessian_example ORDER BY step, neuron_order DESC")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def figure_1(con: duckdb.DuckDBPyConnection) -> plt.Figure:
    """Heatmaps of the stored local Hessians: one row per snapshot, neuron order (block boundaries drawn)
    beside torch order; a diverging map centred at 0, linear near 0 and logarithmic beyond, shared by
    the panels of a row."""
    rows = _matrices(con)
    if not rows:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.axis("off")
        ax.text(0.5, 0.5, "No layer with a nonzero local Hessian in this corpus: with phi = sum it is exactly zero\n"
                "for ReLU and identity activations (A'' = 0), and every run here uses them.",
                ha="center", va="center", transform=ax.transAxes, wrap=True)
        fig.suptitle("Figure 1 (001): local Hessian heatmap — nothing to draw")
        return fig
    steps = sorted({r["step"] for r in rows})
    fig, axes = plt.subplots(len(steps), 2, figsize=(11, 5.2 * len(steps)), squeeze=False)
    for i, step in enumerate(steps):
        pair = [r for r in rows if r["step"] == step]
        vmax = max(r["max_abs"] for r in pair) or 1.0
        norm = SymLogNorm(linthresh=LINEAR_FRACTION * vmax, vmin=-vmax, vmax=vmax, base=10)
        for j, is_neuron in enumerate((True, False)):
            ax = axes[i, j]
            found = [r for r in pair if r["neuron_order"] == is_neuron]
            if not found:
                ax.axis("off")
                continue
            r = found[0]
            n, b = r["n_rows"], r["block_size"]
            h = np.asarray(r["matrix"], dtype=float).reshape(n, n)
            im = ax.imshow(h, cmap="RdBu_r", norm=norm, interpolation="nearest")
            if is_neuron:
                for e in range(b, n, b):
                    ax.axhline(e - 0.5, color="0.3", lw=0.5)
                    ax.axvline(e - 0.5, color="0.3", lw=0.5)
                ax.set_xlabel(f"parameter index, neuron order (w_j, b_j): {r['n_blocks']} blocks of d+1 = {b}")
            else:
                ax.set_xlabel("parameter index, torch order (vec W row-major, then b)")
            ax.set_ylabel("parameter index")
            order = "neuron order" if is_neuron else "torch order"
            ax.set_title(f"{r['dataset']} ({r['activation']}), run {r['run_id'][:8]}, layer {r['layer_index']}, "
                         f"step {step}\n{order}", fontsize=9)
            ticks = [s * vmax * 10.0**-e for s in (-1, 1) for e in range(3)] + [0.0]
            fig.colorbar(im, ax=ax, shrink=0.8, label="H entry (symmetric log scale)", ticks=sorted(ticks),
                         format="%.1e")
    fig.suptitle(f"Figure 1 (001): local Hessian (phi = {rows[0]['phi']}) of one layer — block diagonal in "
                 "neuron order")
    fig.tight_layout()
    return fig


def report(con: duckdb.DuckDBPyConnection) -> dict:
    """Sentences from the stored matrices."""
    rows = [r for r in _matrices(con) if r["neuron_order"]]
    if not rows:
        return {"paragraphs": ["Every run in this corpus has a zero local Hessian (ReLU or identity activations "
                               "with phi = sum), so there is no Figure 1 to draw."], "tables": []}
    r0 = rows[0]
    text = (f"Layer {r0['layer_index']} of run {r0['run_id']} ({r0['dataset']}, {r0['activation']}): "
            f"{r0['n_blocks']} neurons, blocks of d + 1 = {r0['block_size']}, {r0['n_probe']} probe points.")
    for r in rows:
        h = np.asarray(r["matrix"], dtype=float).reshape(r["n_rows"], r["n_rows"])
        eig = np.linalg.eigvalsh(h)
        text += (f" At step {r['step']}: largest |entry| {r['max_abs']:.3g}, largest |entry| outside the blocks "
                 f"{r['off_block_max_abs']:.3g}, eigenvalues from {eig[0]:.3g} to {eig[-1]:.3g} "
                 f"({int((np.abs(eig) <= 1e-3 * max(np.abs(eig).max(), 1e-300)).sum())} of {len(eig)} within "
                 "10⁻³ of the largest |λ|).")
    return {"paragraphs": [text],
            "tables": [{"caption": "Stored local-Hessian matrices",
                        "sql": """SELECT run_id, dataset, activation, step, layer_index, phi, neuron_order, n_rows,
                                         block_size, n_blocks, n_probe, round(max_abs, 6) AS max_abs,
                                         off_block_max_abs FROM analysis_local_hessian_example
                                  ORDER BY step, neuron_order DESC"""}]}


STAGE = Stage(
    name="local_hessian_example", title="Figure 1: a local Hessian in neuron order", doc=__doc__,
    reads=("runs", "weights", "checkpoints", "layers", "splits", "datasets"), tables=TABLES, run=run,
    figures=[Figure("local_hessian_example", figure_1,
                    "The local Hessian d²S/dθ² of one layer with its input fixed, S = mean over the probe batch of "
                    "the sum of the layer's activations (paper 001, Figure 1), at the run's first and last spectral "
                    "snapshots. Left: neuron order, grid lines between neurons' (w_j, b_j) blocks; right: the same "
                    "matrix in torch order (vec W, b), where the blocks are scattered. Diverging colours centred at "
                    "0, linear within 10⁻³ of the largest |entry| and logarithmic beyond.")],
    report=report,
)
