"""Curvature propagation (issue 8): block graphs, the coupling estimator against the exact Hessian,
shadows, gated edges, synthesis, and the propagation study end to end."""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pytest
import torch
from torch import nn

import pipeline.curvature.coupling as coupling_module
from pipeline.curvature.coupling import (
    block_loss,
    coupling_map,
    exact_coupling,
    global_coherence,
    kappa_with_jackknife,
)
from pipeline.curvature.objective import BlockObjective
from pipeline.curvature.shadows import find_shadows, relative_coupling
from pipeline.curvature.stochastic import GraphHVP, hutchinson_trace
from pipeline.models.block_graph import trace_block_graph
from pipeline.models.cnn import SmallCNN
from pipeline.models.gated_edge import EdgeSpec
from pipeline.models.mlp import MLP
from pipeline.models.transformer import SmallTransformer
from pipeline.training.synthesis import Candidate, candidate_edges, gentle_trial, random_edges, synthesize
from snapshot_loader.schema import SHARD_SCHEMA_VERSION
from tests.conftest import run_cli


def _loss(model: nn.Module, d_in: int, n: int = 48, regression: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    X = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    if regression:
        y, fn = torch.randn(n, 2, generator=g, dtype=torch.float64), nn.MSELoss()
    else:
        y, fn = torch.randint(0, 3, (n,), generator=g), nn.CrossEntropyLoss()
    graph = trace_block_graph(model, model.block_names())
    return graph, block_loss(model, graph, X, y, fn)


def test_block_graphs_of_the_three_families():
    torch.manual_seed(0)
    chain = MLP(4, (6, 6, 6), 3)
    assert trace_block_graph(chain, chain.block_names()).successors == ((1,), (2,), (3,), ())
    res = MLP(4, (6, 6, 6), 3, residual="every")
    g = trace_block_graph(res, res.block_names())
    assert g.successors == ((1, 2, 3), (2, 3), (3,), ())  # the residual stream skips blocks 1 and 2
    gated = MLP(4, (6, 6, 6), 3)
    gated.add_edges([EdgeSpec(0, 2), EdgeSpec(-1, 3, "adapter")], seed=0)
    g = trace_block_graph(gated, gated.block_names())
    assert g.successors == ((1, 2), (2,), (3,), ())
    assert g.pair_lengths()[0, 2] == 1 and g.pair_lengths()[2, 0] == 1
    cnn = SmallCNN(64, 10, dims=2)
    assert trace_block_graph(cnn, cnn.block_names()).successors == ((1,), (2,), ())
    tr = SmallTransformer(5, 3, layers=2)
    g = trace_block_graph(tr, tr.block_names())
    assert g.names == ("embed", "layers.0.attn", "layers.0.mlp", "layers.1.attn", "layers.1.mlp", "head")
    assert g.successors[0] == (1, 2, 3, 4, 5) and g.successors[4] == (5,)
    assert [r["name"] for r in g.rows()] == list(g.names)


@pytest.mark.parametrize("family", ["mlp", "residual", "cnn", "transformer"])
def test_kappa_from_probes_within_three_stderr_of_exact(family):
    """Every off-diagonal kappa_ij from 64 probes per block lies within 3 jackknife SE of the exact
    kappa from torch.autograd.functional.hessian (float64, fixed seeds)."""
    torch.manual_seed(1)
    model, d = {"mlp": (MLP(4, (6, 6, 6), 3, activation="tanh"), 4),
                "residual": (MLP(4, (6, 6, 6), 3, activation="tanh", residual="every"), 4),
                "cnn": (SmallCNN(8, 3, channels=(3, 3)), 8),
                "transformer": (SmallTransformer(4, 3, d_model=4, heads=2, layers=1, hidden=4), 4)}[family]
    _, loss = _loss(model, d)
    est = coupling_map(loss, 64, np.random.default_rng(0))
    exact, frob = exact_coupling(loss)
    off = ~np.eye(loss.n_blocks, dtype=bool)
    assert (est.stderr[off] > 0).all()
    z = np.abs(est.kappa - exact)[off] / est.stderr[off]
    assert z.max() < 3, (family, z.max())
    np.testing.assert_allclose(np.diag(est.kappa), 1.0)


def test_jackknife_of_a_known_square_table():
    """With identical probes the stderr is zero and kappa is the plug-in value."""
    sq = np.tile(np.array([[4.0, 1.0], [1.0, 9.0]]), (5, 1, 1))
    kappa, stderr, frob = kappa_with_jackknife(sq)
    assert kappa[0, 1] == pytest.approx(1.0 / np.sqrt(2.0 * 3.0))
    np.testing.assert_allclose(stderr, 0.0, atol=1e-15)
    np.testing.assert_allclose(frob, np.sqrt([[4, 1], [1, 9]]))


def test_coupling_map_of_twenty_blocks_costs_no_more_products_than_hutchinson_traces():
    """20 blocks x m probes: the whole map (every column block) from exactly the products the
    Hutchinson traces of the 20 diagonal blocks take at the same m (each counted as evaluated:
    rows through the vmap-ed jvp, or GraphHVP calls); its traces agree with the exact ones."""
    torch.manual_seed(0)
    model = MLP(3, (4,) * 19, 3, activation="tanh")
    graph, loss = _loss(model, 3)
    assert graph.n_blocks == 20
    m = 8
    cmap = coupling_map(loss, m, np.random.default_rng(0))
    hutchinson_products = 0
    for s in loss.slices:
        def f_block(t, s=s):
            theta = loss.theta0.detach().clone()
            theta = torch.cat([theta[: s.start], t, theta[s.stop:]])
            return loss.f(theta)
        obj = BlockObjective(f_block, loss.theta0[s].detach(), 1, s.stop - s.start - 1)
        hvp = GraphHVP(obj)
        hutchinson_trace(hvp, s.stop - s.start, m, np.random.default_rng(0))
        hutchinson_products += hvp.calls
    assert hutchinson_products == 20 * m
    assert cmap.n_hvp <= hutchinson_products
    h = torch.autograd.functional.hessian(loss.f, loss.theta0.detach()).numpy()
    exact_traces = np.array([np.trace(h[s, s]) for s in loss.slices])
    assert (np.abs(cmap.trace - exact_traces) <= 4 * cmap.trace_stderr + 1e-12).all()


def test_products_refused_by_forward_mode_are_redone_chunk_by_chunk(monkeypatch):
    """Where vmap-ed forward-over-reverse fails, the chunk is redone by reverse-over-reverse: the
    same map, and each product still counted once."""
    torch.manual_seed(0)
    _, loss = _loss(MLP(4, (6, 6), 3, activation="tanh"), 4)
    reference = coupling_map(loss, 6, np.random.default_rng(0))

    def refuse(fn):
        def batched(*args):
            raise RuntimeError("ZeroTensors are immutable (simulated)")
        return batched

    monkeypatch.setattr(coupling_module, "vmap", refuse)
    fallback = coupling_map(loss, 6, np.random.default_rng(0))
    assert fallback.n_hvp == reference.n_hvp == 3 * 6
    np.testing.assert_allclose(fallback.kappa, reference.kappa, rtol=1e-10)


@pytest.mark.parametrize("variant", ["plain", "residual", "batchnorm-train", "float32"])
def test_gate_at_zero_leaves_outputs_loss_and_hessian_unchanged(variant):
    torch.manual_seed(0)
    kw = {"residual": {"residual": "every"}, "batchnorm-train": {"norm": "batchnorm"}}.get(variant, {})
    plain = MLP(5, (8, 8, 8, 8), 3, activation="tanh", **kw)
    gated = MLP(5, (8, 8, 8, 8), 3, activation="tanh", **kw)
    gated.load_state_dict(plain.state_dict())
    gated.add_edges([EdgeSpec(0, 3), EdgeSpec(-1, 2), EdgeSpec(1, 5), EdgeSpec(2, 4, "adapter")], seed=3)
    dtype = torch.float32 if variant == "float32" else torch.float64
    plain, gated = plain.to(dtype), gated.to(dtype)
    for m in (plain, gated):
        m.train(variant == "batchnorm-train")
    X = torch.randn(32, 5, dtype=dtype)
    y = torch.randint(0, 3, (32,))
    assert (plain(X) - gated(X)).abs().max().item() <= 1e-7
    fn = nn.CrossEntropyLoss()
    assert abs(fn(plain(X), y).item() - fn(gated(X), y).item()) <= 1e-7
    if variant in ("plain", "residual"):
        frob_plain = exact_coupling(block_loss(plain, trace_block_graph(plain, plain.block_names()), X, y, fn))[1]
        frob_gated = exact_coupling(block_loss(gated, trace_block_graph(gated, gated.block_names()), X, y, fn))[1]
        np.testing.assert_allclose(frob_gated, frob_plain, rtol=1e-10, atol=1e-12)


def test_a_diverged_trial_neither_wins_nor_blocks_a_finite_candidate():
    model = MLP(3, (4, 4, 4), 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    candidates = [Candidate(EdgeSpec(0, 2), 0.1), Candidate(EdgeSpec(1, 3), 0.2)]
    values = iter([0.5, float("nan"), 0.9])  # control, then the two candidates

    chosen, trials = synthesize(model, optimizer, candidates, lambda m, o: None, lambda m: next(values), budget=1,
                                seed=0)
    assert chosen == [EdgeSpec(1, 3)]
    assert [t.selected for t in trials] == [False, True]


def test_trials_leave_the_run_untouched():
    """Parameters, buffers, optimizer state and the global random state are the same after the
    trials (dropout in the trials draws from their own stream)."""
    torch.manual_seed(0)
    model = MLP(4, (8, 8, 8), 3, norm="batchnorm", dropout=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    for _ in range(3):  # a non-empty Adam state
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        optimizer.step()
    state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = torch.random.get_rng_state()

    def train_steps(m, opt):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(X), y).backward()
            opt.step()

    synthesize(model, optimizer, [Candidate(EdgeSpec(0, 2), 0.1), Candidate(EdgeSpec(1, 3), 0.2)], train_steps,
               lambda m: float(m(X).std()), budget=2, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    after = optimizer.state_dict()
    assert after["param_groups"] == opt_state["param_groups"]
    for k, v in opt_state["state"].items():
        assert all(torch.equal(t, after["state"][k][n]) for n, t in v.items())


def test_random_edges_match_the_kinds_synthesis_chose():
    edges = random_edges(["skip", "adapter", "skip"], 6, np.random.default_rng(0))
    assert sorted(e.kind for e in edges) == ["adapter", "skip", "skip"] and len(set(edges)) == 3
    for e in edges:
        e.validate(6)
        assert e.kind == "adapter" or e.dst < 6


def test_relative_coupling_and_shadow_window():
    lengths = np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]])
    kappa = np.array([[1, .8, .1, .2], [.8, 1, .9, .6], [.1, .9, 1, .7], [.2, .6, .7, 1]], float)
    rel = relative_coupling(kappa, lengths)
    assert rel[0, 2] == pytest.approx(.1 / .35) and rel[1, 3] == pytest.approx(.6 / .35)
    assert np.isnan(rel[0, 0]) and rel[0, 3] == 1.0  # alone at its length: never a shadow
    assert [(s.block_i, s.block_j) for s in find_shadows([kappa, kappa], lengths)] == [(0, 2)]
    noisy = kappa.copy()
    noisy[0, 2] = noisy[2, 0] = 0.6  # the dip does not persist over the window
    assert find_shadows([kappa, noisy], lengths) == []


def _planted(seed: int = 0) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    """Six tanh blocks, two regression outputs. Block 1 reaches the loss only through a gated edge
    into output 0; blocks 3-5 only through output 1; block 2's weights are shrunk 1000-fold. A path
    1 -> 2 -> 3 exists, but the coupling of (1, 3) is planted near zero."""
    torch.manual_seed(seed)
    m = MLP(4, (8,) * 5, 2, activation="tanh")
    m.add_edges([EdgeSpec(1, 6)], seed=0)
    with torch.no_grad():
        m.skips["skip_1_to_6"].gate.fill_(1.0)
        m.skips["skip_1_to_6"].proj.weight[1].zero_()
        m.blocks[5].linear.weight[0].zero_()
        m.blocks[2].linear.weight.mul_(1e-3)
    m = m.double()
    g = torch.Generator().manual_seed(seed)
    return m, torch.randn(128, 4, generator=g, dtype=torch.float64), torch.randn(128, 2, generator=g,
                                                                                 dtype=torch.float64)


def _exact_kappa(model: MLP, X, y) -> tuple[np.ndarray, np.ndarray]:
    model = model.eval()
    graph = trace_block_graph(model, model.block_names())
    return exact_coupling(block_loss(model, graph, X, y, nn.MSELoss()))[0], graph.pair_lengths()


def test_planted_shadow_is_found_from_probes():
    model, X, y = _planted()
    graph = trace_block_graph(model.eval(), model.block_names())
    loss = block_loss(model, graph, X, y, nn.MSELoss())
    maps = [coupling_map(loss, 16, np.random.default_rng(k)).kappa for k in range(3)]
    pairs = {(s.block_i, s.block_j) for s in find_shadows(maps, graph.pair_lengths())}
    assert (1, 3) in pairs
    assert (2, 3) not in pairs and (3, 4) not in pairs


def test_chosen_edge_restores_more_coherence_than_random_edges():
    model, X, y = _planted()
    kappa, lengths = _exact_kappa(model, X, y)
    shadows = find_shadows([kappa], lengths)
    candidates = candidate_edges(shadows, [], 6)
    assert EdgeSpec(1, 3) in [c.edge for c in candidates]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = [torch.randperm(128, generator=torch.Generator().manual_seed(k))[:32] for k in range(10)]

    def train_steps(m, opt):
        for idx in batches:
            opt.zero_grad()
            nn.functional.mse_loss(m(X[idx]), y[idx]).backward()
            opt.step()

    def coherence(m):
        return global_coherence(_exact_kappa(m, X, y)[0], lengths)

    before = [p.detach().clone() for p in model.parameters()]
    chosen, trials = synthesize(model, optimizer, candidates, train_steps, coherence, budget=1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # trials are copies
    assert len(chosen) == 1 and trials[0].round == 0
    chosen_gain = max(t.gain for t in trials if t.selected)
    control = gentle_trial(model, optimizer, [], train_steps, coherence, 0)
    random_gains = [gentle_trial(model, optimizer, random_edges(["skip"], 6, np.random.default_rng(k)), train_steps,
                                 coherence, 0) - control for k in range(6)]
    assert chosen_gain > 0
    assert chosen_gain > np.mean(random_gains), (chosen, chosen_gain, random_gains)


#: Four runs of configs/propagation.toml (iris, lr 0.01, seed 0): its synthesized run gains an edge.
PROPAGATION_CONFIG = """
[corpus]
name = "prop"
[run]
epochs = 30
batch_size = 32
lr = 0.01
metric_checkpoints = 20
spectral_snapshots = 3
probe_size = 128
coupling_probes = 8
activation = "sigmoid"
size = "custom"
widths = [16, 16, 16, 16, 16, 16, 16, 16, 16, 16]
[[study]]
name = "arms"
[study.grid]
dataset = "iris"
augment = ["none", "synthesized", "random"]
[[study]]
name = "template"
[study.grid]
dataset = "iris"
residual = "every"
[[study]]
name = "families"
[study.grid]
dataset = "digits"
family = ["cnn2d", "transformer"]
widths = [[4, 4]]
epochs = 1
probe_size = 32
"""


@pytest.fixture(scope="module")
def propagation_db(tmp_path_factory):
    root = tmp_path_factory.mktemp("prop")
    (root / "prop.toml").write_text(PROPAGATION_CONFIG)
    for args in (("extract", "--workers", "2"), ("ingest",), ("analyze", "--stage", "propagation")):
        extra = ("--shards", str(root / "shards")) if args[0] != "analyze" else ()
        db = ("--db", str(root / "c.duckdb")) if args[0] != "extract" else ()
        run_cli(*args, "--config", str(root / "prop.toml"), *extra, *db, "--quiet", check=True)
    return root / "c.duckdb"


def test_propagation_study_end_to_end(propagation_db):
    con = duckdb.connect(str(propagation_db), read_only=True)
    arms = dict(con.execute("SELECT arm, count(*) FROM analysis_propagation_runs GROUP BY arm").fetchall())
    assert arms == {"plain": 1, "template": 1, "synthesized": 1, "random": 1}
    # every map holds the B(B+1)/2 pairs of its blocks, with a stderr and the probe count
    bad = con.execute("""SELECT count(*) FROM (SELECT run_id, step, count(*) AS k, any_value(b.n) AS n
                         FROM curvature_coupling JOIN (SELECT run_id, count(*) AS n FROM blocks GROUP BY run_id) b
                         USING (run_id) GROUP BY ALL) WHERE k != n * (n + 1) / 2""").fetchone()[0]
    assert bad == 0
    assert con.execute("SELECT min(n_probes), count(*) FILTER (WHERE stderr IS NULL) FROM curvature_coupling "
                       "WHERE block_i != block_j").fetchone() == (8, 0)
    assert con.execute("SELECT count(DISTINCT run_id) FROM blocks").fetchone()[0] == 6
    # synthesis ran its trials in both edge arms, identically, and the random arm added as many edges
    per = dict(con.execute("""SELECT p.arm, count(a.run_id) FROM analysis_propagation_runs p
                              LEFT JOIN augmentations a USING (run_id) GROUP BY p.arm""").fetchall())
    assert per["synthesized"] == per["random"] and per["plain"] == 0 and per["template"] == 0
    trials = con.execute("""SELECT p.arm, list(t.gain ORDER BY t.round, t.src, t.dst) FROM augmentation_trials t
                            JOIN analysis_propagation_runs p USING (run_id) GROUP BY p.arm""").fetchall()
    gains = dict(trials)
    assert gains.get("synthesized") == gains.get("random")
    # until synthesis the plain and synthesized arms are the same run
    same = con.execute("""SELECT bool_and(a.train_loss = b.train_loss) FROM checkpoints a JOIN checkpoints b
                          USING (step) JOIN analysis_propagation_runs pa ON pa.run_id = a.run_id
                          JOIN analysis_propagation_runs pb ON pb.run_id = b.run_id
                          WHERE pa.arm = 'plain' AND pb.arm = 'synthesized'
                            AND step <= coalesce((SELECT min(step) FROM augmentations), 1000000)""").fetchone()[0]
    assert same
    verdicts = con.execute("SELECT claim_id FROM analysis_propagation_verdicts ORDER BY 1").fetchall()
    assert len(verdicts) == 4
    assert con.execute("SELECT count(*) FROM analysis_propagation WHERE dataset = 'all'").fetchone()[0] == 4


def test_augmented_model_is_rebuilt_from_the_database(propagation_db):
    import snapshot_loader

    corpus = snapshot_loader.open(propagation_db)
    con = duckdb.connect(str(propagation_db), read_only=True)
    row = con.execute("""SELECT a.run_id, r.final_step FROM augmentations a JOIN runs r USING (run_id)
                         ORDER BY a.run_id LIMIT 1""").fetchone()
    assert row is not None, "the study's deep sigmoid networks are expected to gain an edge"
    run_id, step = row
    model = corpus.model(run_id, step)
    assert len(model.edges) >= 1
    X, y = corpus.probe_batch(run_id)
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(X), y).item()
    stored = con.execute("SELECT train_loss FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
    train_X, train_y = corpus.split(run_id, "train")
    with torch.no_grad():
        rebuilt = nn.functional.cross_entropy(model(train_X), train_y).item()
    assert rebuilt == pytest.approx(stored[0], rel=1e-5)  # the stored weights are float32 copies
    assert np.isfinite(loss)


@pytest.mark.parametrize(("grid", "key"), [
    ('augment = "synthesized"', "coupling_probes"),
    ("coupling_probes = 1", "coupling_probes"),
    ('augment = "synthesized"\ncoupling_probes = 4\nmetric_checkpoints = 3\nspectral_snapshots = 2',
     "metric_checkpoints"),
    ('augment = "random"\ncoupling_probes = 4\nresidual = "every"', "augment"),
    ('family = "transformer"\nsize = "custom"\nwidths = [3, 3]', "widths"),
    ('augment = "synthesized"\ncoupling_probes = 4\naugment_at = 1.0', "augment_at"),
    ('family = "resnet"', "family"),
])
def test_bad_propagation_settings_are_refused_by_name(tmp_path, grid, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[corpus]\nname = "x"\n[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\n{grid}\n')
    proc = run_cli("plan", "--config", str(cfg))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"grid.{key}" in lines[0], lines


def test_other_families_train_with_coupling_maps_and_rebuild(propagation_db):
    """A 2-D CNN on the digits images and a Transformer over the digits pixels as tokens: trained in
    the worker, blocks and maps stored, and the stored weights rebuild the model."""
    import snapshot_loader

    con = duckdb.connect(str(propagation_db), read_only=True)
    corpus = snapshot_loader.open(propagation_db)
    expected = {"cnn2d": ["convs.0", "convs.1", "head"],
                "transformer": ["embed", "layers.0.attn", "layers.0.mlp", "layers.1.attn", "layers.1.mlp", "head"]}
    for family, names in expected.items():
        run_id, step, loss = con.execute("""SELECT r.run_id, r.final_step, c.train_loss FROM runs r JOIN checkpoints c
                                            ON c.run_id = r.run_id AND c.step = r.final_step
                                            WHERE r.family = ?""", [family]).fetchone()
        assert [r[0] for r in con.execute("SELECT name FROM blocks WHERE run_id = ? ORDER BY block_index",
                                          [run_id]).fetchall()] == names
        assert con.execute("SELECT count(*) FROM curvature_coupling WHERE run_id = ? AND step = ? "
                           "AND kappa IS NOT NULL", [run_id, step]).fetchone()[0] == len(names) * (len(names) + 1) // 2
        model = corpus.model(run_id, step)
        X, y = corpus.split(run_id, "train")
        with torch.no_grad():
            assert nn.functional.cross_entropy(model(X), y).item() == pytest.approx(loss, rel=1e-5)


def test_digits_pixels_land_on_their_image_positions():
    from pipeline.datasets.run_data import prepared_dataset
    from pipeline.models.cnn import pixel_layout

    names = prepared_dataset("digits").feature_names
    shape, pixels = pixel_layout(names)
    assert shape == (8, 8) and len(pixels) == len(names) < 64
    assert pixels[names.index("pixel_3_5")] == 3 * 8 + 5
    cnn = SmallCNN(len(names), 10, dims=2, image_shape=shape, pixels=pixels)
    x = torch.zeros(1, len(names))
    x[0, names.index("pixel_3_5")] = 1.0
    assert torch.equal((x @ cnn.scatter).reshape(8, 8).nonzero(), torch.tensor([[3, 5]]))
    assert pixel_layout(["age", "bmi"]) is None


def test_mlp_options_refused_for_other_families(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[corpus]\nname = "x"\n[[study]]\nname = "s"\n[study.grid]\ndataset = "iris"\n'
                   'family = "transformer"\nresidual = "every"\n')
    proc = run_cli("plan", "--config", str(cfg))
    assert proc.returncode != 0 and "residual" in proc.stderr and "family" in proc.stderr


def test_parquet_view_equals_database_for_the_propagation_tables(propagation_db):
    import snapshot_loader
    from snapshot_loader.schema import PRIMARY_KEYS, TABLES, WALL_TIME_COLUMNS

    shards = propagation_db.parent / "shards"
    with snapshot_loader.open(shards) as view, snapshot_loader.open(propagation_db) as db:
        for table in ("runs", "blocks", "curvature_coupling", "augmentations", "augmentation_trials", "weights"):
            keep = ", ".join(f'"{c}"' for c, _ in TABLES[table] if (table, c) not in WALL_TIME_COLUMNS)
            sql = f"SELECT {keep} FROM {table} ORDER BY {', '.join(PRIMARY_KEYS[table])}"
            a, b = view.sql(sql), db.sql(sql)
            assert a.height > 0 and a.equals(b), table


def test_a_shard_from_before_schema_5_is_stale_and_extracted_again(propagation_db, tmp_path):
    """Shards written before schema 5 hold curvature from the old estimators (no standard errors, zeros
    by a fixed tolerance): the store does not count them complete, so `pipeline extract` runs them
    again, and reading the store names the file instead of mixing old and new rows."""
    import json
    import shutil

    from pipeline.errors import PipelineError
    from snapshot_loader.shards import ShardStore

    src = next((propagation_db.parent / "shards").glob("dataset=iris/run_id=*"))
    store = tmp_path / "shards"
    dst = store / "dataset=iris" / src.name
    shutil.copytree(src, dst)
    run_id = src.name.split("=", 1)[1]
    assert ShardStore(store).is_complete("iris", run_id)
    for version in (3, 4):
        manifest = json.loads((dst / "manifest.json").read_text())
        manifest["schema_version"] = version
        (dst / "manifest.json").write_text(json.dumps(manifest))
        assert not ShardStore(store).is_complete("iris", run_id)
        with pytest.raises(PipelineError, match=rf"manifest.json: shard has schema version {version}, this tool "
                                                f"writes {SHARD_SCHEMA_VERSION}: delete the shard and extract again"):
            ShardStore(store).complete()
    # version 5 is still read (the runs columns added by 6 read as NULL) unless it has no curvature rows:
    # a CNN or Transformer run measured before every family's blocks were
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["schema_version"] = 5
    (dst / "manifest.json").write_text(json.dumps(manifest))
    assert ShardStore(store).is_complete("iris", run_id)
    manifest["tables"]["hessian_spectra"]["rows"] = 0
    (dst / "manifest.json").write_text(json.dumps(manifest))
    assert not ShardStore(store).is_complete("iris", run_id)
    with pytest.raises(PipelineError, match="a version-5 shard without curvature rows"):
        ShardStore(store).complete()


def test_a_transformers_attention_projections_have_spectra_and_clouds_per_matrix(propagation_db):
    """The built-in Transformer's packed ``qkv.weight`` is three matrices in ``matrix_spectra`` and three
    point clouds (besides the whole) for topology, each its third of the stored tensor's rows."""
    import torch

    from analyses.topology.stage import block_matrices

    con = duckdb.connect(str(propagation_db), read_only=True)
    run_id, layer_index = con.execute("""SELECT l.run_id, l.layer_index FROM layers l JOIN runs r USING (run_id)
                                         WHERE r.family = 'transformer' AND l.name = 'layers.0.attn'""").fetchone()
    step = con.execute("SELECT max(step) FROM matrix_spectra WHERE run_id = ?", [run_id]).fetchone()[0]
    rows = con.execute("""SELECT tensor, part, rows, cols, principal, weight_sv FROM matrix_spectra
                          WHERE run_id = ? AND step = ? AND layer_index = ? ORDER BY tensor, part""",
                       [run_id, step, layer_index]).fetchall()
    tensors = {t: np.asarray(v, np.float32).reshape(shape) for t, shape, v in con.execute(
        'SELECT tensor, shape, "values" FROM weights WHERE run_id = ? AND step = ? AND layer_index = ?',
        [run_id, step, layer_index]).fetchall()}
    d = tensors["out.weight"].shape[0]
    assert [r[:5] for r in rows] == [("out.weight", "all", d, d, False), ("qkv.weight", "k", d, d, True),
                                     ("qkv.weight", "q", d, d, True), ("qkv.weight", "v", d, d, True)]
    third = {"q": 0, "k": 1, "v": 2}
    for tensor, part, *_, sv in rows:
        w = tensors[tensor] if part == "all" else tensors[tensor][third[part] * d:(third[part] + 1) * d]
        np.testing.assert_allclose(sv, torch.linalg.svdvals(torch.from_numpy(w).double()).numpy(), rtol=1e-6)
    clouds = {(n, part): (m.shape, p) for n, part, m, _, p in block_matrices(tensors)}
    assert clouds == {("qkv.weight", "all"): ((3 * d, d), True), ("out.weight", "all"): ((d, d), False),
                      **{("qkv.weight", part): ((d, d), False) for part in "qkv"}}


def test_a_version_6_shard_without_matrix_spectra_is_read_with_no_rows_of_it(propagation_db, tmp_path):
    """Shard version 7 added ``matrix_spectra``: an older shard has no file of it and reads as no rows
    (in the database and in the shard store's views); a shard of version 7 or later without it is refused."""
    import json
    import shutil

    import snapshot_loader
    from pipeline.errors import ShardError
    from snapshot_loader.ingest import ingest_shards
    from snapshot_loader.shards import ShardStore

    src = next((propagation_db.parent / "shards").glob("dataset=iris/run_id=*"))
    store = tmp_path / "shards"
    dst = store / "dataset=iris" / src.name
    shutil.copytree(src, dst)
    (dst / "matrix_spectra.parquet").unlink()
    with pytest.raises(ShardError, match=rf"matrix_spectra\.parquet: missing shard file \(the manifest of version "
                                         rf"{SHARD_SCHEMA_VERSION}"):
        ShardStore(store).read_table(ShardStore(store).refs()[0], "matrix_spectra")
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["tables"].pop("matrix_spectra")["rows"] > 0
    (dst / "manifest.json").write_text(json.dumps(manifest))
    run_id = src.name.split("=", 1)[1]
    with pytest.raises(ShardError, match="no entry for table 'matrix_spectra'"):
        ShardStore(store).read_manifest(ShardStore(store).refs()[0])
    manifest["schema_version"] = 6
    (dst / "manifest.json").write_text(json.dumps(manifest))
    assert ShardStore(store).is_complete("iris", run_id)
    report = ingest_shards(tmp_path / "c.duckdb", store)
    assert report.ingested == [run_id] and not report.errors
    for location in (tmp_path / "c.duckdb", store):
        with snapshot_loader.open(location) as corpus:
            assert corpus.sql("SELECT count(*) AS n FROM matrix_spectra")["n"][0] == 0
            assert corpus.sql("SELECT count(*) AS n FROM layer_stats WHERE weight_sv IS NOT NULL")["n"][0] > 0


def test_a_shard_without_its_coupling_file_is_refused(propagation_db, tmp_path):
    import shutil

    from pipeline.errors import ShardError
    from snapshot_loader.ingest import ingest_shards
    from snapshot_loader.shards import ShardStore

    src = next((propagation_db.parent / "shards").glob("dataset=iris/run_id=*"))
    store = tmp_path / "shards"
    shutil.copytree(src, store / "dataset=iris" / src.name)
    (store / "dataset=iris" / src.name / "curvature_coupling.parquet").unlink()
    report = ingest_shards(tmp_path / "c.duckdb", store)
    assert not report.ingested and len(report.errors) == 1 and "curvature_coupling.parquet" in report.errors[0]
    with pytest.raises(ShardError, match="curvature_coupling.parquet"):
        ShardStore(store).read_manifest(ShardStore(store).refs()[0])

def test_the_worker_finds_the_planted_shadow_and_synthesizes_over_it():
    """The tracker the training loop uses: maps at the window's checkpoints, shadows over the window,
    candidates, trials and the chosen edges entering the model at gate 0 with their rows."""
    from pipeline.extract.coupling_tracker import CouplingTracker
    from pipeline.runspec import RunSpec

    model, X, y = _planted()
    model = model.float()
    X, y = X.float(), y.float()
    spec = RunSpec(dataset="iris", augment="synthesized", coupling_probes=16, batch_size=32, trial_steps=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    tracker = CouplingTracker(spec, model, (X, y), nn.MSELoss(), "regression", "cpu", np.array([0, 5, 10, 15, 20]))
    assert (tracker.aug_step, tracker.window) == (10, [0, 5, 10])
    rows = [r for step in (0, 5, 10) for r in tracker.at_checkpoint(step, is_spectral=step == 0)]
    assert len(rows) == 3 * 6 * 7 // 2
    with torch.no_grad():
        before = model(X).clone()
    assert tracker.maybe_augment(10, optimizer, (X, y)) is not None
    trials = tracker.trial_rows
    assert (1, 3, "skip") in {(t["src"], t["dst"], t["kind"]) for t in trials if t["round"] == 0}
    chosen = [(r["src"], r["dst"]) for r in tracker.augmentation_rows]
    assert chosen and all(t["gain"] > 0 for t in trials if t["selected"])
    assert len(model.edges) == 1 + len(chosen)  # the planted edge into the output, and the new ones
    with torch.no_grad():
        assert torch.equal(model(X), before)  # gates at 0
    final = tracker.final_rows()
    assert [r["gate"] for r in final["augmentations"]] == [0.0] * len(chosen)
