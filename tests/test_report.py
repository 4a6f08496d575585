"""The report's contents: every stage has a section, and text from the database is HTML-escaped."""

from __future__ import annotations

import re
import shutil

import duckdb

from analyses.kit.runner import STAGES
from reports.builder import build_report

HOSTILE = '<script>alert("x")</script> & <b>'
#: Appended to every data set and study name: mathtext, format strings, HTML and quotes, drawn and printed literally.
NAME_TAIL = " $x {y 5%$ <i>'q"


def _markup(html: str) -> str:
    """The page without its script elements (Bokeh's library holds '(?<b>' in its regular expressions)."""
    return re.sub(r"<script\b.*?</script>", "", html, flags=re.S)


def _plotted_strings(db) -> set[str]:
    """Every string in the data sources of the interactive figures drawn from ``db``."""
    from bokeh.models import ColumnDataSource

    from analyses.kit.runner import all_figures
    from snapshot_loader.database import connect_readonly

    found: set[str] = set()
    con = connect_readonly(db)
    try:
        for figure in all_figures().values():
            made = figure.interactive(con.cursor()) if figure.interactive else None
            for model in made.layout.references() if made else ():
                if isinstance(model, ColumnDataSource):
                    found |= {v for col in model.data.values() for v in col if isinstance(v, str)}
    finally:
        con.close()
    return found


def test_database_text_is_escaped_in_the_report(built_corpus, tmp_path):
    db = tmp_path / "corpus.duckdb"
    shutil.copy(built_corpus["db"], db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE datasets SET description = ?", [HOSTILE])
    con.execute("UPDATE analysis_overview SET optimizer = ? WHERE run_id = (SELECT min(run_id) FROM runs)", [HOSTILE])
    con.execute("UPDATE analysis_verdicts SET detail = ?, claim = ?", [HOSTILE, HOSTILE])
    # every data set and study name gains a '$' (matplotlib's mathtext), braces, a '%', a tag and a quote
    for table, column in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                     "WHERE column_name IN ('dataset', 'study') AND data_type = 'VARCHAR'").fetchall():
        con.execute(f'UPDATE "{table}" SET "{column}" = "{column}" || ?', [NAME_TAIL])
    con.execute("UPDATE datasets SET name = name || ?", [NAME_TAIL])
    con.close()
    html = build_report(db, tmp_path / "report").read_text()
    assert HOSTILE not in html
    assert "<b>" not in _markup(html) and "<i>" not in _markup(html)
    assert any(s.endswith(NAME_TAIL) for s in _plotted_strings(db)), "interactive figures do not plot the names"
    assert "$x {y 5%$ &lt;i&gt;&#39;q" in html
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;"
    assert html.count(escaped) >= 3  # data sets table, runs table, verdict sentences and table


def test_a_users_csv_with_hostile_names_goes_through_all_and_figures(tmp_path, capsys):
    """A user's CSV whose data set, study, feature and target columns are named with NAME_TAIL: `pipeline
    all` (a config over it) and `pipeline figures` write the report and every figure; the page prints each
    name literally (HTML-escaped), a figure draws the data set's name as written, and the database keeps
    the column names as the file gives them."""
    import csv
    import json

    import matplotlib.text
    import numpy as np
    from markupsafe import escape

    from analyses.kit.runner import all_figures
    from pipeline.cli import main
    from snapshot_loader.database import connect_literal_text

    dataset, study, target = "mine" + NAME_TAIL, "study" + NAME_TAIL, "y" + NAME_TAIL
    features = [f"x{i}{NAME_TAIL}" for i in range(3)]
    rng = np.random.default_rng(0)
    with open(tmp_path / "data.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*features, target])
        for x in rng.normal(size=(60, 3)):
            writer.writerow([*(f"{v:.4f}" for v in x), int(x[0] + 0.3 * x[1] > 0)])
    config = tmp_path / "c.toml"  # JSON's strings are TOML basic strings
    config.write_text(f"""
[[dataset]]
name = {json.dumps(dataset)}
path = "data.csv"
target = {json.dumps(target)}
task = "classification"

[run]
epochs = 2
metric_checkpoints = 4
spectral_snapshots = 2
probe_size = 32

[[study]]
name = {json.dumps(study)}
[study.grid]
dataset = {json.dumps(dataset)}
activation = ["relu", "tanh"]
""")
    db = tmp_path / "corpus.duckdb"
    assert main(["all", "--config", str(config), "--db", str(db), "--shards", str(tmp_path / "shards"),
                 "--executor", "inline", "--quiet"]) == 0, capsys.readouterr().err
    assert main(["figures", "--db", str(db), "--quiet"]) == 0, capsys.readouterr().err
    html = (tmp_path / "corpus" / "report" / "index.html").read_text()
    for name in (dataset, study):
        assert str(escape(name)) in html, name
    assert "<i>" not in _markup(html) and "'q" not in _markup(html)
    written = sorted(p.name for p in (tmp_path / "corpus" / "figures").iterdir())
    assert written == sorted(f"{n}.{ext}" for n in all_figures() for ext in ("png", "pdf"))
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT name, target, feature_names FROM datasets").fetchall() == [
            (dataset, target, features)]
        assert con.execute("SELECT DISTINCT study FROM studies").fetchall() == [(study,)]
    finally:
        con.close()
    drawing = connect_literal_text(db)
    try:
        fig = all_figures()["overview_final_metric"].draw(drawing.cursor())
        drawn = [t.get_text().replace("\\$", "$") for t in fig.findobj(matplotlib.text.Text)]
        assert any(dataset in text for text in drawn), drawn
    finally:
        drawing.close()


def test_every_stage_has_a_section_and_the_verdicts_are_listed(built_corpus):
    html = (built_corpus["report"] / "index.html").read_text()
    for stage in STAGES:
        if stage.name != "verdicts":
            assert f'<section id="stage-{stage.name}">' in html, stage.name
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    n_verdicts = con.execute("SELECT count(*) FROM analysis_verdicts").fetchall()[0][0]
    con.close()
    assert n_verdicts >= 10
    assert html.count('class="v-inconclusive"') + html.count('class="v-supported"') \
        + html.count('class="v-not-supported"') >= n_verdicts


def test_the_data_sets_and_runs_tables_show_each_baseline(built_corpus):
    """Beside each run's metric its data set's baseline and whether the run beats it; the data sets
    table names each trivial predictor and its test score."""
    html = (built_corpus["report"] / "index.html").read_text()
    for column in ("baseline", "baseline_test_score", "beats_baseline"):
        assert f"<th>{column}</th>" in html, column
    assert "<td>majority class</td>" in html and "<td>training mean</td>" in html


def test_the_report_shows_each_claim_with_its_confound_and_its_pair(built_corpus):
    html = (built_corpus["report"] / "index.html").read_text()
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    held = con.execute("SELECT count(*) FROM analysis_verdicts WHERE confound <> ''").fetchall()[0][0]
    pairs = con.execute("SELECT count(*) FROM analysis_verdicts WHERE reading <> ''").fetchall()[0][0]
    con.close()
    assert "<th>baseline_effect</th>" in html and "<th>verdict_adjusted</th>" in html and "<th>reading</th>" in html
    assert html.count("Held fixed: ") >= held  # one sentence per verdict that holds a confound fixed
    assert html.count("Read with its pair: ") >= pairs


def test_verdict_tables_page_lists_every_verdict(built_corpus, tmp_path):
    from reports.verdict_tables import main

    assert main(["--db", str(built_corpus["db"]), "--name", "tiny", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "tiny.md").read_text()
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    ids = [r[0] for r in con.execute("SELECT claim_id FROM analysis_verdicts").fetchall()]
    con.close()
    assert all(f"`{i}`" in page for i in ids) and page.count("\n| `") == len(ids)
    assert main(["--db", str(tmp_path / "missing.duckdb"), "--name", "x", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "x.md").exists()


def test_figures_read_names_with_their_dollars_escaped_and_draw_them_as_written(tmp_path):
    """A data set named with two '$' reads as mathtext to matplotlib, and as invalid mathtext it crashed
    every figure that drew it; the figures' connection escapes each '$', which draws literally, while
    matplotlib's own log-axis tick labels stay mathtext."""
    import io

    import matplotlib.pyplot as plt
    import pytest

    from snapshot_loader.database import connect_literal_text, connect_writable

    name = r"x$\frac{$y {z} 5% <i>'"
    db = tmp_path / "corpus.duckdb"
    con = connect_writable(db)
    con.execute("INSERT INTO runs (run_id, dataset, blocks) VALUES ('r1', ?, [?])", [name, name])
    con.close()
    drawing = connect_literal_text(db)
    try:
        escaped, blocks = drawing.execute("SELECT dataset, blocks FROM runs").fetchall()[0]
        assert escaped == name.replace("$", r"\$") and blocks == [escaped]
        with pytest.raises(duckdb.Error):
            drawing.execute("CREATE TABLE corpus.main.runs_copy AS SELECT * FROM runs")  # the corpus is read-only
    finally:
        drawing.close()
    for title, fails in ((name, True), (escaped, False)):
        fig, ax = plt.subplots()
        ax.set_title(title)
        ax.set_yscale("log")
        ax.plot([1, 2], [1, 100])
        try:
            if fails:
                with pytest.raises(ValueError):
                    fig.savefig(io.BytesIO(), format="png")
            else:
                fig.savefig(io.BytesIO(), format="png")
                text = ax.title.get_text()
                assert text.count("$") == text.count("\\$") == 2  # every "$" escaped
                assert any("mathdefault" in t.get_text() for t in ax.get_yticklabels())
        finally:
            plt.close(fig)


def test_the_report_opens_on_its_findings(built_corpus):
    """Summary, what was trained, what holds, why, details, in that order; the summary lists every
    designated verdict and no other, each linked to its row in the verdict table."""
    from markupsafe import escape

    html = (built_corpus["report"] / "index.html").read_text()
    starts = [html.index(f'<section id="{part}">') for part in ("summary", "trained", "verdicts", "why", "details")]
    assert starts == sorted(starts)
    summary = html[starts[0]:starts[1]]
    con = duckdb.connect(str(built_corpus["db"]), read_only=True)
    rows = con.execute("SELECT claim_id, in_holm, verdict_adjusted FROM analysis_verdicts").fetchall()
    con.close()
    assert any(r[1] for r in rows) and not all(r[1] for r in rows)
    for claim, designated, call in rows:
        tag = f'data-claim="{escape(claim)}" data-call="{call}"'
        assert (tag in summary) == designated, claim
        assert (f'href="#v-{escape(claim)}"' in summary) == designated, claim
        assert f'id="v-{escape(claim)}"' in html[starts[2]:starts[3]], claim
    for section in re.findall(r'href="#(stage-[^"]+)"', html[starts[2]:starts[3]]):
        assert f'<section id="{section}">' in html, section
    assert html.index('<section id="stage-overview">') < starts[2]  # the training curves are what was trained
    for stage in STAGES:
        if stage.name not in ("verdicts", "overview"):
            assert html.index(f'<section id="stage-{stage.name}">') > starts[3], stage.name


def test_the_report_stays_within_its_size_budget_with_palette_pngs(built_corpus):
    import base64
    import io

    from PIL import Image

    from reports.builder import SIZE_BUDGET

    page = built_corpus["report"] / "index.html"
    html = page.read_text()
    assert page.stat().st_size < SIZE_BUDGET  # the tiny corpus's; docs state the default corpus's size
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert pngs
    for data in pngs:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.mode == "P" and image.width > 100 and image.height > 100


def _verdict(family: str, claim_id: str, call: str, designated: bool = True, stage: str = "s") -> dict:
    return {"family": family, "claim_id": claim_id, "stage": stage, "claim": "a claim", "verdict": call,
            "verdict_adjusted": call, "role": "paper", "effect_name": "r", "effect": 0.25, "ci_low": 0.1,
            "ci_high": 0.4, "in_holm": designated, "exploratory": family == "000", "predicted": "positive",
            "null_value": 0.0, "negligible": 0.05, "ci90_low": 0.12, "ci90_high": 0.38}


def test_a_claim_shown_negligible_shows_the_interval_that_decided_it():
    """A "not supported" reached by equivalence rests on the 90 % interval inside the band, not on the 95 %
    interval (which contains the null): the page shows the deciding one."""
    from reports.summary import entry

    row = {**_verdict("001", "s.eq", "not supported"), "effect": -0.02, "ci_low": -0.07, "ci_high": 0.03,
           "ci90_low": -0.06, "ci90_high": 0.02, "negligible": 0.1, "predicted": "negative"}
    assert entry(row).value_text == "-0.02 (90 % [-0.06, 0.02] within ±0.1)"
    against = {**row, "effect": 0.26, "ci_low": 0.06, "ci_high": 0.44, "ci90_low": 0.09, "ci90_high": 0.41}
    assert entry(against).value_text == "0.26 [0.06, 0.44]"  # excluded on the other side: the 95 % interval
    assert "the claim predicts < 0" in entry(against).effect_text


def test_report_and_figures_refuse_analysis_tables_written_by_an_older_version(built_corpus, tmp_path, capsys):
    from pipeline.cli import main

    db = tmp_path / "corpus.duckdb"
    shutil.copy(built_corpus["db"], db)
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE analysis_overview DROP COLUMN beats_baseline")
    con.close()
    for command in ("report", "figures"):
        out = tmp_path / command
        assert main([command, "--db", str(db), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {db}: analysis table analysis_overview has no column beats_baseline (written by "
                       "an older version): run `pipeline analyze` first"], err
        assert not out.exists()


def test_paper_summaries_hold_the_designated_verdicts_decided_first():
    from reports.summary import paper_summaries, predicts, table_order

    verdicts = [_verdict("003", "s.c", "inconclusive"), _verdict("001", "s.b", "not supported"),
                _verdict("001", "s.a", "inconclusive"), _verdict("001", "s.d", "supported"),
                _verdict("000", "s.e", "supported", designated=False), _verdict("001", "s.f", "supported", False)]
    papers = paper_summaries(verdicts)
    assert [p.paper for p in papers] == ["001", "003"]
    assert [e.claim_id for e in papers[0].decided] == ["s.d", "s.b"] and [e.label for e in papers[0].open] == ["a"]
    assert papers[0].counts == {"supported": 1, "not supported": 1, "inconclusive": 1}
    assert papers[0].decided[0].value_text == "0.25 [0.1, 0.4]" and papers[0].decided[0].anchor == "v-s.d"
    assert [v["claim_id"] for v in table_order(verdicts)] == ["s.d", "s.b", "s.a", "s.c", "s.e", "s.f"]
    assert predicts(verdicts[0]) == "> 0" and predicts({"predicted": "at_least", "null_value": 0.89}) == "≥ 0.89"


def test_the_evidence_follows_the_papers_in_order():
    from types import SimpleNamespace

    from reports.builder import reader_order

    stages = [SimpleNamespace(name=n) for n in ("gap", "pressure", "topology", "features", "umap", "propagation")]
    verdicts = [_verdict("004", "gap.x", "inconclusive", stage="gap"),
                _verdict("000", "pressure.x", "supported", False, stage="pressure"),
                _verdict("003", "topology.x", "inconclusive", stage="topology"),
                _verdict("001", "umap.x", "supported", stage="umap"),
                _verdict("002", "propagation.x", "inconclusive", stage="propagation")]
    assert [s.name for s in reader_order(stages, verdicts)] == [
        "features", "umap", "propagation", "topology", "gap", "pressure"]


def test_a_figure_with_nothing_to_explore_is_shown_still(tmp_path):
    """An interactive version that returns None (nothing to plot) leaves the page the still figure, which
    says why; one that returns a layout replaces the still figure."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    from bokeh.plotting import figure as bokeh_figure

    from analyses.kit.interactive import InteractiveFigure
    from reports.builder import _figure

    def draw(con):
        fig, ax = plt.subplots()
        ax.text(0.5, 0.5, "nothing to draw")
        fig.suptitle("still")
        return fig

    con = duckdb.connect()
    empty = SimpleNamespace(name="f", draw=draw, caption="c", interactive=lambda con: None)
    shown = _figure(empty, con, con)
    assert shown["uri"].startswith("data:image/png;base64,") and shown["layout"] is None
    assert shown["title"] == "still"
    made = SimpleNamespace(name="g", draw=draw, caption="c",
                           interactive=lambda con: InteractiveFigure("explore", bokeh_figure()))
    shown = _figure(made, con, con)
    assert shown["uri"] is None and shown["layout"] is not None and shown["title"] == "explore"
    con.close()
