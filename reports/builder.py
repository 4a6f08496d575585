"""Build the self-contained HTML report (and the figure files) from the corpus database alone.

The page has the corpus overview (data sets, runs), then one section per analysis stage, in the
runner's order: the stage's intro (its module docstring's first paragraph), the sentences its
``report(con)`` generates from the numbers, its verdicts ("what this shows", generated from
``analysis_verdicts``), its tables and its figures; then every verdict in one table.

The report inlines every image as a data URI and its CSS and JavaScript in the page, so it opens
offline with no external request. Text from the database is HTML-escaped by Jinja's autoescape.
The page is written to a temporary name and renamed, so a failed build leaves the last good report.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
from tqdm import tqdm

from analyses.kit.runner import STAGES, Stage, all_figures
from pipeline.errors import PipelineError
from reports.style import apply_style, figure_png_data_uri, save_figure
from snapshot_loader.database import connect_literal_text, connect_readonly

_TEMPLATES = Path(__file__).parent / "templates"

#: Stages whose section the report leaves out (their content appears elsewhere on the page).
_NO_SECTION = {"verdicts"}


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
            "verdicts": [{"text": verdict_sentence(v), "verdict": v["verdict_adjusted"]} for v in verdicts],
            "tables": tables,
            "figures": [figures[fig.name] for fig in stage.figures if fig.name in figures]}


def build_report(db_path: Path, out_dir: Path, show_progress: bool | None = None) -> Path:
    """Write ``out_dir/index.html``; returns its path."""
    apply_style()
    con = connect_readonly(db_path)
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        missing = [t for s in STAGES for t in s.writes if t not in present]
        if missing:
            raise PipelineError(f"{db_path}: analysis table {missing[0]} missing: run `pipeline analyze` first")
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
                fig = _isolated(figure.draw, drawing)
                figures[name] = {"name": name, "title": (fig.get_suptitle() or name).replace("\\$", "$"),
                                 "caption": figure.caption, "uri": figure_png_data_uri(fig)}
                plt.close(fig)
        finally:
            drawing.close()
        sections = [_section(con, s, [v for v in verdicts if v["stage"] == s.name], figures)
                    for s in STAGES if s.name not in _NO_SECTION]
    finally:
        con.close()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    counts = {k: sum(v["verdict_adjusted"] == k for v in verdicts)
              for k in ("supported", "not supported", "inconclusive")}
    counts["unadjusted supported"] = sum(v["verdict"] == "supported" for v in verdicts)
    html = env.get_template("index.html").render(
        title="Snapshot atlas: corpus report", generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        db_path=str(db_path), summary=summary, datasets=(ds_cols, ds_rows), runs=(run_cols, run_rows),
        studies=(studies_cols, studies_rows), excluded=excluded, sections=sections,
        verdicts=(verdict_cols, verdict_rows), verdict_counts=counts)
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
