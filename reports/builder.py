"""Build the self-contained HTML report (and the figure files) from the corpus database alone.

The page is ordered as a reader asks:

1. *Summary*: the corpus in one line and every designated verdict by paper, its call, effect and
   interval (:mod:`reports.summary`);
2. *What was trained*: the corpus's counts, data sets, runs, studies, runs left out, and the overview
   stage's training curves;
3. *What holds*: one row per verdict, the call and the effect first, the generated sentence that says
   how it was reached folded under the claim;
4. *Why*: one section per analysis stage, papers in order (a stage takes the paper of its verdicts):
   its intro (its module docstring's first paragraph), the sentences its ``report(con)`` generates
   from the numbers, its verdicts in one line each, its tables and its figures;
5. *Details*: every column of ``analysis_verdicts``, folded.

A figure with an ``interactive`` version is embedded as a Bokeh plot (hover, zoom), the others as PNG
reduced to a 256-colour palette. The page inlines its images, CSS and JavaScript (Bokeh's included),
so it opens offline with no external request; :data:`SIZE_BUDGET` is the size it is meant to stay
under, and a build above it says so. Text from the database is HTML-escaped by Jinja's autoescape.
The page is written to a temporary name and renamed, so a failed build leaves the last good report.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
from bokeh.embed import components
from bokeh.resources import Resources
from markupsafe import Markup
from tqdm import tqdm

from analyses.kit.runner import STAGES, Stage, all_figures
from pipeline.errors import PipelineError
from reports.style import apply_style, figure_png_data_uri, save_figure
from reports.summary import corpus_line, entry, paper_summaries, table_order
from snapshot_loader.database import connect_literal_text, connect_readonly

_TEMPLATES = Path(__file__).parent / "templates"
log = logging.getLogger("pipeline")

#: Stages whose section the report leaves out (their content appears elsewhere on the page).
_NO_SECTION = {"verdicts"}
#: The stage shown under "What was trained" rather than among the evidence.
_TRAINED_STAGE = "overview"
#: The paper of the stages that test no claim themselves (their verdict-free sections follow that paper's).
_PAPER_OF_FIGURE_STAGES = {"local_hessian_example": "001", "features": "001", "normality": "001"}
#: Bokeh's scripts the interactive figures need: its core (no widgets, tables, WebGL or MathJax).
_BOKEH_COMPONENTS = ("bokeh",)
#: The size the page is meant to stay under (bytes); a build above it logs what takes the space.
SIZE_BUDGET = 5_000_000


def _isolated(draw, con):
    """Call a stage's ``draw(con)`` or ``report(con)`` on a cursor of its own, so a result it leaves
    unfetched cannot disturb the next stage's queries."""
    cursor = con.cursor()
    try:
        return draw(cursor)
    finally:
        cursor.close()


def _rows(con, query: str) -> tuple[list[str], list[tuple]]:
    cur = con.execute(query)
    cols = [d[0] for d in cur.description]
    return cols, cur.fetchall()


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _interval(lo, hi) -> str:
    return f"[{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else "[no interval]"


def verdict_sentence(v: dict) -> str:
    """One generated sentence for a verdict row: claim, test, the decisive effect with its interval, how
    the interval was made (with tau^2 and I^2 where data sets were pooled) and n, the confound and its
    own effect, the stage's own estimate, the leave-one-out ranges, the band, and the unadjusted and
    Holm-adjusted calls with the pair's reading."""
    def num(x):
        return "n/a" if x is None else f"{x:.3g}"
    role = {"paper": "the paper's test", "sharpened": "the sharpened test"}.get(v.get("role"), "")
    interval = (f"95% CI {num(v['ci_low'])} to {num(v['ci_high'])}"
                if v["ci_low"] is not None and v["ci_high"] is not None else "no interval: too little data")
    p = f", p = {v['p_value']:.2g}" if v.get("p_value") is not None else ""
    parts = [f"{v['claim']} ({v['source']}; {role}). Test: {v['test']}. {v['effect_name']} = {num(v['effect'])} "
             f"({interval}{p}; n = {v['n']} {v['n_unit']}; claim predicts {v['predicted']} vs "
             f"{num(v['null_value'])}; negligible within {num(v['negligible'])} {v.get('band_units') or ''})."]
    method = v.get("interval_method") or ""
    if v.get("tau2") is not None:
        method += f"; tau^2 = {num(v['tau2'])}, I^2 = {num(v.get('i2'))}"
    if method:
        parts.append(f"Interval: {method}" + (f" ({v['n_datasets']} data sets, {v['n_runs']} runs)."
                                              if v.get("n_datasets") else "."))
    if v.get("confound"):
        base = (f"; the confound's own effect, {v['baseline_name']} = {num(v['baseline_effect'])}"
                if v.get("baseline_name") else "")
        parts.append(f"Held fixed: {v['confound']}{base}.")
    if v.get("stage_effect") is not None:
        parts.append(f"The stage's own estimate: {num(v['stage_effect'])} "
                     f"{_interval(v.get('stage_low'), v.get('stage_high'))}.")
    if v.get("lodo_worst"):
        parts.append(f"Leaving one data set out: {num(v['lodo_low'])} to {num(v['lodo_high'])} "
                     f"(least favourable without {v['lodo_worst']}).")
    if v.get("loso_worst"):
        parts.append(f"Leaving one study out: {num(v['loso_low'])} to {num(v['loso_high'])} "
                     f"(least favourable without {v['loso_worst']}).")
    adjusted = v.get("verdict_adjusted", v["verdict"])
    holm = f"; Holm-adjusted within {v['family']} (p = {num(v.get('p_holm'))}): {adjusted}" \
        if v.get("p_holm") is not None else ""
    band = " The call changes with half or twice the negligible band." if v.get("band_sensitive") else ""
    reading = f" Read with its pair: {v['reading']}." if v.get("reading") else ""
    parts.append(f"Verdict: {v['verdict']}{holm}.{band}{reading}")
    return " ".join(parts)


#: The verdict table of the report: the call and the decisive effect first.
VERDICT_TABLE_SQL = """
    SELECT claim_id, verdict_adjusted, verdict, role, reading, round(effect, 4) AS effect,
           round(ci_low, 4) AS low, round(ci_high, 4) AS high, round(p_value, 4) AS p, round(p_holm, 4) AS p_holm,
           in_holm, exploratory, effect_name, negligible, band_units, interval_method, round(tau2, 4) AS tau2,
           round(i2, 3) AS i2, n, n_unit, n_datasets, confound, baseline_name AS baseline,
           round(baseline_effect, 4) AS baseline_effect, round(stage_effect, 4) AS stage_effect,
           round(lodo_low, 4) AS lodo_low, round(lodo_high, 4) AS lodo_high, round(loso_low, 4) AS loso_low,
           round(loso_high, 4) AS loso_high, band_sensitive, stage, source, detail
    FROM analysis_verdicts"""


#: Tables through which a stage sees curvature rows (directly, or as features built from them).
_CURVATURE_INPUTS = ("hessian_spectra", "analysis_features_layer", "analysis_features")


def estimated_curvature_note(con, reads: tuple[str, ...]) -> str | None:
    """One sentence for a stage that reads curvature: how many ``hessian_spectra`` rows were estimated
    from products (``method = 'lanczos'``) and that their estimated columns stay out of its statistics."""
    if not any(t in reads for t in _CURVATURE_INPUTS):
        return None
    total, estimated, by_kind = _curvature_counts(con)
    if not total:
        return None
    layer = ""
    if "analysis_features_layer" in reads or "analysis_features" in reads:
        n_layer, n_est = con.execute("SELECT count(*), count(*) FILTER (WHERE curvature_estimated) "
                                     "FROM analysis_features_layer").fetchone()
        layer = f"; {n_est:,} of the {n_layer:,} layer rows behind its features have at least one such kind"
    return (f"Curvature behind this stage: {estimated:,} of {total:,} hessian_spectra rows were estimated from "
            f"Hessian-vector products ({by_kind or 'none'}){layer}. Their estimated columns (nonzero standard "
            "error) are left out of its statistics; their converged Ritz values, eigenvalues to within 1e-4 of "
            "the spectral scale, are used as eigenvalues.")


def _curvature_counts(con) -> tuple[int, int, str]:
    rows = con.execute("SELECT kind, count(*) FILTER (WHERE method = 'lanczos'), count(*) FROM hessian_spectra "
                       "GROUP BY kind ORDER BY kind").fetchall()
    estimated = sum(r[1] for r in rows)
    return sum(r[2] for r in rows), estimated, ", ".join(f"{r[1]:,} {r[0]}" for r in rows if r[1])


def _section(con, stage: Stage, verdicts: list[dict], figures: dict[str, dict]) -> dict:
    extra = _isolated(stage.report, con) if stage.report is not None else {}
    note = estimated_curvature_note(con, stage.reads)
    tables = []
    for t in extra.get("tables", []):
        cols, rows = _rows(con, t["sql"])
        tables.append({"caption": t["caption"], "cols": cols, "rows": rows})
    return {"id": stage.name, "title": stage.title, "intro": stage.intro,
            "paragraphs": list(extra.get("paragraphs", [])) + ([note] if note else []),
            "verdicts": [{"entry": entry(v), "text": verdict_sentence(v)} for v in table_order(verdicts)],
            "tables": tables,
            "figures": [figures[fig.name] for fig in stage.figures if fig.name in figures]}


def reader_order(stages: list[Stage], verdicts: list[dict]) -> list[Stage]:
    """The evidence sections in paper order: a stage takes the lowest paper among its verdicts (the map of
    figure-only stages otherwise); stages whose verdicts are all exploratory go last; ties keep the
    runner's order."""
    papers: dict[str, list[str]] = {}
    exploratory: dict[str, bool] = {}
    for v in verdicts:
        papers.setdefault(v["stage"], []).append(v["family"] or "999")
        exploratory[v["stage"]] = exploratory.get(v["stage"], True) and bool(v.get("exploratory"))

    def key(item: tuple[int, Stage]) -> tuple:
        i, stage = item
        paper = min(papers.get(stage.name, [_PAPER_OF_FIGURE_STAGES.get(stage.name, "999")]))
        return exploratory.get(stage.name, False), paper, i

    return [s for _, s in sorted(enumerate(stages), key=key)]


def _figure(figure, con, drawing) -> dict:
    """One figure of the page: the interactive version where the stage declares one (read from ``con``:
    Bokeh draws data as plain text), else the PNG (drawn from ``drawing``, whose views escape each '$'
    that matplotlib would read as mathtext)."""
    made = _isolated(figure.interactive, con) if figure.interactive is not None else None
    if made is not None:
        return {"name": figure.name, "title": made.title, "caption": figure.caption, "uri": None,
                "layout": made.layout, "div": None}
    fig = _isolated(figure.draw, drawing)
    try:
        return {"name": figure.name, "title": (fig.get_suptitle() or figure.name).replace("\\$", "$"),
                "caption": figure.caption, "uri": figure_png_data_uri(fig), "layout": None, "div": None}
    finally:
        plt.close(fig)


def _verdict_rows(verdicts: list[dict], titles: dict[str, str]) -> list[dict]:
    """The "What holds" table: each verdict's entry, sentence, n, source and the section with its evidence."""
    rows = []
    for v in table_order(verdicts):
        e = entry(v)
        status = "designated" if e.designated else ("exploratory" if e.exploratory else "not designated")
        rows.append({"entry": e, "text": verdict_sentence(v), "source": v["source"], "status": status,
                     "n": f"{v['n']} {v['n_unit']}" if v.get("n") is not None else "—",
                     "section": f"stage-{v['stage']}", "section_title": titles.get(v["stage"], v["stage"])})
    return rows


def _size_report(html: str, figures: dict[str, dict], bokeh_js: str) -> str:
    """Where the page's bytes go, for the log line of a build over :data:`SIZE_BUDGET`."""
    total, script = len(html.encode("utf-8")), len(bokeh_js.encode("utf-8"))
    pngs = sum(len(f["uri"]) for f in figures.values() if f["uri"])  # base64: ASCII, a byte a character
    return (f"{total / 1e6:.1f} MB: still figures {pngs / 1e6:.1f} MB, Bokeh's script {script / 1e6:.1f} MB, "
            f"the rest (tables, text, plot data) {(total - pngs - script) / 1e6:.1f} MB")


def build_report(db_path: Path, out_dir: Path, show_progress: bool | None = None) -> Path:
    """Write ``out_dir/index.html``; returns its path."""
    apply_style()
    con = connect_readonly(db_path)
    try:
        check_analysis_tables(con, db_path)
        summary = _summary(con)
        ds_cols, ds_rows = _rows(con, """
            SELECT name, task, source, item, n_rows, n_features, n_classes, n_train, n_test,
                   baseline_name AS baseline, baseline_metric AS baseline_test_score, description
            FROM datasets WHERE name IN (SELECT DISTINCT dataset FROM runs) ORDER BY task, name""")
        run_cols, run_rows = _rows(con, """
            SELECT run_id, dataset, task, size, activation, optimizer, norm, init, train_fraction AS frac, seed,
                   n_params, status, final_step AS steps, train_loss, test_loss, primary_metric_name AS metric,
                   primary_metric AS value, baseline,
                   CASE beats_baseline WHEN true THEN 'yes' WHEN false THEN 'no' END AS beats_baseline
            FROM analysis_overview ORDER BY dataset, size, activation, optimizer, seed""")
        studies_cols, studies_rows = _rows(con, """
            SELECT corpus, study, count(*) AS runs FROM studies GROUP BY ALL ORDER BY corpus, study""")
        excluded = _rows(con, """
            SELECT run_id, dataset, 'diverged' AS status, diverged_step AS at_step,
                   'snapshots up to step ' || final_step || ' kept; left out of analyses of the trained state'
                       AS note
            FROM runs WHERE status = 'diverged'
            UNION ALL
            SELECT run_id, dataset, 'failed', NULL, 'not extracted after ' || attempts || ' attempts: ' || error
            FROM run_failures ORDER BY status, dataset, run_id""")
        full_cols, full_rows = _rows(con, "SELECT * FROM analysis_verdicts")
        verdicts = [dict(zip(full_cols, r, strict=True)) for r in full_rows]
        verdict_cols, verdict_rows = _rows(con, VERDICT_TABLE_SQL)
        figures = {}
        drawing = connect_literal_text(db_path)
        try:
            for name, figure in tqdm(all_figures().items(), desc="figures", unit="fig",
                                     disable=None if show_progress is None else not show_progress):
                figures[name] = _figure(figure, con, drawing)
        finally:
            drawing.close()
        interactive = {n: f["layout"] for n, f in figures.items() if f["layout"] is not None}
        bokeh_js, plots = "", {}
        if interactive:
            script, divs = components(interactive)
            bokeh_js = Resources(mode="inline", components=list(_BOKEH_COMPONENTS)).render_js()
            plots = {"script": Markup(script), **{n: Markup(d) for n, d in divs.items()}}
        for n in interactive:
            figures[n]["div"] = plots[n]
        shown = [s for s in STAGES if s.name not in _NO_SECTION]
        by_stage = {s.name: [v for v in verdicts if v["stage"] == s.name] for s in shown}
        trained = [_section(con, s, by_stage[s.name], figures) for s in shown if s.name == _TRAINED_STAGE]
        sections = [_section(con, s, by_stage[s.name], figures)
                    for s in reader_order([s for s in shown if s.name != _TRAINED_STAGE], verdicts)]
        corpus = corpus_line(con)
    finally:
        con.close()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    counts = {k: sum(v["verdict_adjusted"] == k for v in verdicts)
              for k in ("supported", "not supported", "inconclusive")}
    counts["unadjusted supported"] = sum(v["verdict"] == "supported" for v in verdicts)
    counts["designated"] = sum(bool(v["in_holm"]) for v in verdicts)
    titles = {s.name: s.title for s in STAGES}
    html = env.get_template("index.html").render(
        title="Snapshot atlas: corpus report", generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        db_path=str(db_path), db_name=db_path.name, corpus_line=corpus, papers=paper_summaries(verdicts),
        summary=summary,
        datasets=(ds_cols, ds_rows), runs=(run_cols, run_rows), studies=(studies_cols, studies_rows),
        excluded=excluded, trained=trained, sections=sections, verdict_rows=_verdict_rows(verdicts, titles),
        verdicts=(verdict_cols, verdict_rows), verdict_counts=counts, bokeh_js=Markup(bokeh_js),
        bokeh_script=plots.get("script", ""))
    if len(html.encode("utf-8")) > SIZE_BUDGET:
        log.warning("report: %s is over its budget of %.0f MB (%s)", out_dir / "index.html", SIZE_BUDGET / 1e6,
                    _size_report(html, figures, bokeh_js))
    target = out_dir / "index.html"
    tmp = out_dir / ".index.html.tmp"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, target)  # a reader never sees half a report
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PipelineError(f"{target}: cannot write the report: {exc.strerror or exc}") from None
    return target


def check_analysis_tables(con, db_path: Path) -> None:
    """Every stage's tables are present with the columns it declares, or a :class:`PipelineError` says to
    run ``pipeline analyze`` (tables written by an older version lack the newer columns)."""
    columns: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall():
        columns.setdefault(table, set()).add(column)
    for stage in STAGES:
        for table in stage.writes:
            if table not in columns:
                raise PipelineError(f"{db_path}: analysis table {table} missing: run `pipeline analyze` first")
            declared = [c for c, _ in stage.tables.get(table, ())]
            lacking = [c for c in declared if c not in columns[table]]
            if lacking:
                raise PipelineError(f"{db_path}: analysis table {table} has no column {lacking[0]} (written by an "
                                    "older version): run `pipeline analyze` first")


def _summary(con) -> dict:
    cols, rows = _rows(con, """
        SELECT (SELECT count(*) FROM runs) AS runs,
               (SELECT count(*) FROM runs WHERE status = 'diverged') AS diverged,
               (SELECT count(DISTINCT dataset) FROM runs) AS datasets,
               (SELECT count(*) FROM checkpoints) AS checkpoints,
               (SELECT count(*) FROM checkpoints WHERE is_spectral) AS spectral_snapshots,
               (SELECT count(*) FROM layer_stats) AS layer_stat_rows,
               (SELECT count(*) FROM findings) AS findings,
               (SELECT round(sum(wall_seconds), 1) FROM runs) AS extraction_seconds""")
    return dict(zip(cols, rows[0], strict=True))


def write_figures(db_path: Path, out_dir: Path, show_progress: bool | None = None) -> list[Path]:
    """Every figure as PNG and PDF into out_dir, from the database alone."""
    apply_style()
    con = connect_literal_text(db_path)
    paths: list[Path] = []
    try:
        check_analysis_tables(con, db_path)
        for name, figure in tqdm(all_figures().items(), desc="figures", unit="fig",
                                 disable=None if show_progress is None else not show_progress):
            fig = _isolated(figure.draw, con)
            try:
                paths += save_figure(fig, out_dir, name)
            except OSError as exc:
                raise PipelineError(f"{out_dir}: cannot write figure {name}: {exc.strerror or exc}") from None
            finally:
                plt.close(fig)
    finally:
        con.close()
    return paths
