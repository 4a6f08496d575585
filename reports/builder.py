"""Build the self-contained HTML report (and the figure files) from the corpus database alone.

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

from pipeline.errors import PipelineError
from pipeline.stages import all_figures
from reports.style import apply_style, figure_png_data_uri, save_figure
from snapshot_loader.database import connect_readonly

_TEMPLATES = Path(__file__).parent / "templates"

_FIGURE_CAPTIONS = {
    "overview_training_curves": "Train (dashed) and test (solid) loss over optimizer steps, log-log, one colour "
                                "per model size; the metric checkpoints are dense early and sparse late.",
    "overview_final_metric": "Test accuracy (classification) or test R² (regression) at each run's last "
                             "checkpoint; one point per run.",
}


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


def build_report(db_path: Path, out_dir: Path) -> Path:
    """Write ``out_dir/index.html``; returns its path."""
    apply_style()
    con = connect_readonly(db_path)
    try:
        has_overview = con.execute("SELECT count(*) FROM information_schema.tables "
                                   "WHERE table_name = 'analysis_overview'").fetchall()[0][0]
        if not has_overview:
            raise PipelineError(f"{db_path}: analysis tables missing: run `pipeline analyze` first")
        summary = _summary(con)
        ds_cols, ds_rows = _rows(con, """
            SELECT name, task, source, item, n_rows, n_features, n_classes, n_train, n_test, description
            FROM datasets WHERE name IN (SELECT DISTINCT dataset FROM runs) ORDER BY task, name""")
        run_cols, run_rows = _rows(con, """
            SELECT run_id, dataset, task, size, activation, optimizer, norm, init, train_fraction AS frac, seed,
                   n_params, status, final_step AS steps, train_loss, test_loss, primary_metric_name AS metric,
                   primary_metric AS value
            FROM analysis_overview ORDER BY dataset, size, activation, optimizer, seed""")
        studies_cols, studies_rows = _rows(con, """
            SELECT corpus, study, count(*) AS runs FROM studies GROUP BY ALL ORDER BY corpus, study""")
        figures = []
        for name, make in all_figures().items():
            fig = make(con)
            figures.append({"name": name, "title": fig.get_suptitle() or name,
                            "caption": _FIGURE_CAPTIONS.get(name, ""), "uri": figure_png_data_uri(fig)})
            plt.close(fig)
    finally:
        con.close()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    html = env.get_template("index.html").render(
        title="Snapshot atlas: corpus report", generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        db_path=str(db_path), summary=summary, datasets=(ds_cols, ds_rows), runs=(run_cols, run_rows),
        studies=(studies_cols, studies_rows), figures=figures)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "index.html"
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _summary(con) -> dict:
    cols, rows = _rows(con, """
        SELECT (SELECT count(*) FROM runs) AS runs,
               (SELECT count(*) FROM runs WHERE status = 'diverged') AS diverged,
               (SELECT count(DISTINCT dataset) FROM runs) AS datasets,
               (SELECT count(*) FROM checkpoints) AS checkpoints,
               (SELECT count(*) FROM checkpoints WHERE is_spectral) AS spectral_snapshots,
               (SELECT count(*) FROM layer_stats) AS layer_stat_rows,
               (SELECT round(sum(wall_seconds), 1) FROM runs) AS extraction_seconds""")
    return dict(zip(cols, rows[0], strict=True))


def write_figures(db_path: Path, out_dir: Path) -> list[Path]:
    """Every figure as PNG and PDF into out_dir, from the database alone."""
    apply_style()
    con = connect_readonly(db_path)
    paths: list[Path] = []
    try:
        for name, make in all_figures().items():
            fig = make(con)
            paths += save_figure(fig, out_dir, name)
            plt.close(fig)
    finally:
        con.close()
    return paths
