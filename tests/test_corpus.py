"""The built corpus end to end: tables, reproduction from stored weights, report and figures."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import snapshot_loader
from pipeline.training.metrics import classification_metrics, regression_metrics
from pipeline.training.optim import loss_function
from tests.conftest import run_cli


def test_tables_hold_every_run_whole(built_corpus) -> None:
    with snapshot_loader.open(built_corpus["db"]) as corpus:
        runs = corpus.runs()
        assert runs.height == 17 and set(runs["status"]) == {"complete"}
        counts = corpus.sql("""
            SELECT r.run_id, r.depth, r.final_step,
                   (SELECT count(*) FROM checkpoints c WHERE c.run_id = r.run_id) AS n_ckpt,
                   (SELECT count(*) FROM checkpoints c WHERE c.run_id = r.run_id AND is_spectral) AS n_spec,
                   (SELECT count(*) FROM layer_stats s WHERE s.run_id = r.run_id) AS n_layer_stats,
                   (SELECT count(*) FROM layer_stats s WHERE s.run_id = r.run_id AND weight_sv IS NOT NULL) AS n_sv,
                   (SELECT count(DISTINCT step) FROM weights w WHERE w.run_id = r.run_id) AS n_weight_steps,
                   -- blocks with a weight matrix (a batch norm block of a user's model has only vectors)
                   (SELECT count(*) FROM layers l WHERE l.run_id = r.run_id AND (r.family = 'mlp'
                    OR l.in_features IS NOT NULL)) AS n_matrix_blocks
            FROM runs r""")
        for row in counts.iter_rows(named=True):
            assert row["n_spec"] == 3 and row["n_weight_steps"] == 3
            assert row["n_layer_stats"] == row["n_ckpt"] * row["depth"]
            assert row["n_sv"] == row["n_spec"] * row["n_matrix_blocks"]
        assert {"datasets", "runs", "checkpoints", "layers", "layer_stats", "schema_version"} <= set(corpus.tables())
        # spectral columns are NULL exactly off the spectral snapshots
        off = corpus.sql("SELECT count(*) AS n FROM layer_stats s JOIN checkpoints c USING (run_id, step) "
                         "WHERE NOT c.is_spectral AND s.weight_sv IS NOT NULL")["n"][0]
        assert off == 0
        sat = corpus.sql("SELECT l.activation, s.saturation_fraction, s.dead_fraction FROM layer_stats s "
                         "JOIN layers l USING (run_id, layer_index) WHERE s.weight_sv IS NOT NULL")
        hidden = sat.filter(sat["activation"] != "identity")
        assert hidden["saturation_fraction"].null_count() == 0
        assert sat.filter(sat["activation"] == "relu")["dead_fraction"].null_count() == 0


def test_reloaded_models_reproduce_stored_metrics(built_corpus) -> None:
    """Acceptance: .model() evaluated on the stored split reproduces the stored test metric to 1e-6."""
    with snapshot_loader.open(built_corpus["db"]) as corpus:
        for run in corpus.runs().iter_rows(named=True):
            X, y = corpus.split(run["run_id"], "test")
            target_std = corpus.sql("SELECT target_std FROM datasets WHERE name = ?", [run["dataset"]]).item()
            for step in corpus.steps(run["run_id"]):
                stored = corpus.sql("SELECT * FROM checkpoints WHERE run_id = ? AND step = ?",
                                    [run["run_id"], step]).row(0, named=True)
                model = corpus.model(run["run_id"], step)
                with torch.no_grad():
                    out = model(X)
                    loss = float(loss_function(run["task"])(out, y))
                assert loss == pytest.approx(stored["test_loss"], abs=1e-6, rel=1e-6)
                if run["task"] == "classification":
                    m = classification_metrics(y.numpy(), torch.softmax(out.double(), 1).numpy())
                else:
                    m = regression_metrics(y.numpy().ravel(), out.double().numpy().ravel(), target_std)
                for name, value in m.items():
                    if value is None:
                        assert stored[f"test_{name}"] is None
                    else:
                        assert value == pytest.approx(stored[f"test_{name}"], abs=1e-6), name


def test_probe_batch_is_the_stored_one(built_corpus) -> None:
    with snapshot_loader.open(built_corpus["db"]) as corpus:
        run_id = corpus.runs()["run_id"][0]
        X, y = corpus.probe_batch(run_id)
        rows = corpus.sql("SELECT rows FROM splits WHERE run_id = ? AND split = 'probe'", [run_id]).item()
        n_probe = corpus.sql("SELECT n_probe FROM runs WHERE run_id = ?", [run_id]).item()
        assert X.shape[0] == y.shape[0] == len(rows) == n_probe


def test_ingest_again_adds_nothing(built_corpus) -> None:
    before = snapshot_loader.open(built_corpus["db"])
    n_before = before.sql("SELECT count(*) AS n FROM checkpoints")["n"][0]
    before.close()
    proc = run_cli("ingest", "--config", str(built_corpus["config"]), "--db", str(built_corpus["db"]),
                   "--shards", str(built_corpus["shards"]), check=True)
    assert "0 runs added, 16 already present" in proc.stderr
    with snapshot_loader.open(built_corpus["db"]) as corpus:
        assert corpus.sql("SELECT count(*) AS n FROM checkpoints")["n"][0] == n_before


def test_report_is_self_contained(built_corpus) -> None:
    html = (built_corpus["report"] / "index.html").read_text()
    assert "<img src=\"data:image/png;base64," in html
    # Every script is inline. Bokeh's inlined library names URLs in its code (licence comments, and loaders for
    # MathJax and map tiles that run only for TeX text or map plots, which the report never draws): that no
    # request leaves the page is checked in Chromium (tests/test_report_browser.py); here, the markup.
    assert not re.search(r"<script\b[^>]*\bsrc=", html)
    markup = re.sub(r"(<script\b[^>]*>).*?</script>", r"\1</script>", html, flags=re.S)
    # no external resource: every src/href is inline data or an in-page anchor
    for attr in re.findall(r'(?:src|href)="([^"]*)"', markup):
        assert attr.startswith(("data:", "#")), attr
    assert "http://" not in markup and "https://" not in markup
    for section in ("Summary", "What was trained", "Data sets", "Runs", "Training curves", "What holds"):
        assert f">{section}</h2>" in html, section


def test_figures_written_as_png_and_pdf(built_corpus) -> None:
    names = {p.name for p in built_corpus["figures"].iterdir()}
    assert {"overview_training_curves.png", "overview_training_curves.pdf"} <= names


def test_plan_reports_progress(built_corpus) -> None:
    proc = run_cli("plan", "--config", str(built_corpus["config"]), "--shards", str(built_corpus["shards"]),
                   check=True)
    assert "16 runs, 16 extracted, 0 to do" in proc.stdout


def test_every_spectral_snapshot_has_all_three_kinds_for_every_layer(built_corpus) -> None:
    with snapshot_loader.open(built_corpus["db"]) as corpus:
        missing = corpus.sql("""
            SELECT c.run_id, c.step, l.layer_index, count(h.kind) AS kinds
            FROM checkpoints c JOIN layers l USING (run_id)
            LEFT JOIN hessian_spectra h ON h.run_id = c.run_id AND h.step = c.step
                 AND h.layer_index = l.layer_index
            WHERE c.is_spectral GROUP BY ALL HAVING count(DISTINCT h.kind) <> 3""")
        assert missing.height == 0, missing
        n = corpus.sql("SELECT count(*) AS n FROM hessian_spectra")["n"][0]
        assert n > 0
        # exact rows hold every eigenvalue; the gradient pressure is stored beside them
        bad = corpus.sql("SELECT count(*) AS n FROM hessian_spectra WHERE method <> 'lanczos' "
                         "AND len(eigenvalues) <> n_params")["n"][0]
        assert bad == 0
        pressure = corpus.sql("SELECT count(gradient_pressure) AS n FROM layer_stats WHERE weight_sv IS NOT NULL")
        assert pressure["n"][0] > 0


def test_matrix_spectra_cover_every_block_and_agree_with_layer_stats(built_corpus) -> None:
    """Every block with a weight matrix has its per-matrix rows at every spectral snapshot (the MLPs, the
    user's MLP and the measured residual CNN, whose kernels read as out_channels x (in_channels k k)), and
    the principal tensor's row is the one ``layer_stats`` describes."""
    with snapshot_loader.open(built_corpus["db"]) as corpus:
        missing = corpus.sql("""
            SELECT s.run_id, s.step, s.layer_index FROM layer_stats s
            ANTI JOIN matrix_spectra m USING (run_id, step, layer_index)
            WHERE s.weight_sv IS NOT NULL""")
        assert missing.height == 0, missing
        pairs = corpus.sql("""
            SELECT m.weight_sv AS m_sv, s.weight_sv AS s_sv, m.grad_sv AS m_g, s.grad_sv AS s_g, r.family
            FROM matrix_spectra m JOIN layer_stats s USING (run_id, step, layer_index) JOIN runs r USING (run_id)
            WHERE m.principal AND m.part = 'all'""")
        assert pairs.height > 0 and {"mlp", "custom"} <= set(pairs["family"])
        for row in pairs.iter_rows(named=True):
            np.testing.assert_allclose(row["m_sv"], row["s_sv"], rtol=1e-12)
            np.testing.assert_allclose(row["m_g"], row["s_g"], rtol=1e-12)
        conv = corpus.sql("""
            SELECT m.rows, m.cols, w.shape FROM matrix_spectra m
            JOIN weights w USING (run_id, step, layer_index, tensor) JOIN runs r USING (run_id)
            WHERE r.checkpoint_dir IS NOT NULL AND len(w.shape) = 4""")
        assert conv.height > 0
        for rows, cols, shape in conv.iter_rows():
            assert (rows, cols) == (shape[0], shape[1] * shape[2] * shape[3])
