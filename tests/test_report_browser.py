"""The HTML report renders in headless Chromium with no console errors and no network requests.

Chromium (Debian's ``chromium``) is installed by the session fixture when it is missing (as root,
``apt-get update && apt-get install -y chromium``); a machine where that fails fails these tests with
the reason, it never skips them. ``tests/browser.py`` drives the browser over the DevTools protocol.
The negative controls prove the harness sees what it must flag: an image and a fetch to remote URLs
(also a request started late, from a timer), ``console.error``, an uncaught exception and an
unhandled promise rejection; and that a clean page passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import BrowserError, install_chromium, load_page

CLEAN_BODY = '<h1>clean</h1><script>console.log("fine"); document.body.dataset.ready = "1";</script>'
CONTROLS = {
    "remote_image": ('<img src="http://example.invalid/x.png" alt="x">', "network"),
    "fetch_https": ('<script>fetch("https://example.invalid/data.json").catch(function () {});</script>', "network"),
    "late_fetch": ('<script>setTimeout(function () { fetch("https://example.invalid/late").catch(function () {}); }, '
                   '150);</script>', "network"),
    "console_error": ('<script>console.error("boom");</script>', "console"),
    "uncaught_throw": ('<script>throw new Error("kaboom");</script>', "console"),
    "unhandled_rejection": ('<script>Promise.reject(new Error("rejected"));</script>', "console"),
}

# Facts about the rendered report, evaluated in the page after it loaded.
REPORT_PROBES = {
    "ready_state": "document.readyState",
    "script_ran": "document.body.getAttribute('data-ready')",
    "duplicate_ids": """(function () { var seen = {}, dup = [];
        document.querySelectorAll('[id]').forEach(function (e) { if (seen[e.id]) { dup.push(e.id); } seen[e.id] = 1; });
        return dup; })()""",
    "sections": """Array.from(document.querySelectorAll('section')).map(function (s) {
        var h = s.querySelector('h2'); return {id: s.id, heading: h ? h.textContent.trim() : null}; })""",
    "images": """Array.from(document.images).map(function (im) {
        var src = im.getAttribute('src') || '';
        return {data: src.startsWith('data:image/'), src: src.slice(0, 40),
                decoded: im.complete && im.naturalWidth > 0};
    })""",
    "figures_without_caption": """Array.from(document.querySelectorAll('figure')).filter(function (f) {
        var c = f.querySelector('figcaption'); return !c || !c.textContent.trim(); }).length""",
    "external_resources": """Array.from(document.querySelectorAll(
        'img[src], script[src], link[href], iframe[src], source[src], source[srcset], video[src], audio[src], '
        + 'object[data], embed[src], img[srcset]')).map(function (e) {
        return e.getAttribute('src') || e.getAttribute('href') || e.getAttribute('data') || e.getAttribute('srcset');
    }).filter(function (u) { return !/^(data:|#)/i.test(u); })""",
    "broken_nav_links": """Array.from(document.querySelectorAll('a[href^="#"]')).map(function (a) {
        return a.getAttribute('href').slice(1); }).filter(function (id) {
        return id && !document.getElementById(decodeURIComponent(id)); })""",
    # The page's script makes tables sortable: clicking a header must mark it sorted.
    "tables": """Array.from(document.querySelectorAll('table')).map(function (t) {
        var th = t.querySelector('th'); var sortable = t.classList.contains('sortable');
        if (sortable && th) { th.click(); }
        return {sortable: sortable, rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
                sorted_on_click: !!(th && (th.classList.contains('sorted-asc')
                                           || th.classList.contains('sorted-desc')))};
    })""",
    "text_length": "document.body.innerText.length",
}


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        return install_chromium()
    except BrowserError as exc:
        pytest.fail(f"headless Chromium is required for the report test and could not be set up: {exc}",
                    pytrace=False)


def _page(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.html"
    path.write_text(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{name}</title></head>'
                    f"<body>{body}</body></html>", encoding="utf-8")
    return path


def test_clean_page_passes(chromium: str, tmp_path: Path) -> None:
    res = load_page(_page(tmp_path, "clean", CLEAN_BODY), {"ready": "document.body.dataset.ready || null"},
                    chromium=chromium)
    assert res.loaded
    assert res.console_errors == []
    assert res.network_requests == []
    assert res.probes["ready"] == "1", "the page's script did not run"
    assert ("log", "fine") in res.console, "console messages are not being recorded at all"
    assert res.requests == [res.url], "the page's own file: load should be the only request"


@pytest.mark.parametrize("name", list(CONTROLS))
def test_negative_control_is_flagged(chromium: str, tmp_path: Path, name: str) -> None:
    body, kind = CONTROLS[name]
    res = load_page(_page(tmp_path, name, body), chromium=chromium)
    assert res.loaded
    if kind == "network":
        assert res.network_requests, f"{name}: the remote request was not detected ({res.requests})"
        assert all("example.invalid" in u for u in res.network_requests), res.network_requests
    else:
        assert res.network_requests == [], res.network_requests
        assert res.console_errors, f"{name}: the console error was not detected ({res.console})"
        expected = {"console_error": "boom", "uncaught_throw": "kaboom", "unhandled_rejection": "rejected"}[name]
        assert any(expected in e for e in res.console_errors), res.console_errors


def test_report_renders_offline_without_errors(chromium: str, built_corpus: dict[str, Path]) -> None:
    from analyses.kit.runner import STAGES

    report = built_corpus["report"] / "index.html"
    assert report.is_file(), f"{report} was not written"
    res = load_page(report, REPORT_PROBES, chromium=chromium)
    p = res.probes
    assert res.loaded and p["ready_state"] == "complete"
    assert p["script_ran"] == "1", "the report's script did not run to the end (no data-ready on <body>)"
    assert res.console_errors == [], f"console errors: {res.console_errors}"
    assert res.network_requests == [], f"network requests: {res.network_requests}"
    assert p["external_resources"] == [], f"resources that are not inlined: {p['external_resources']}"
    headings = [s["heading"] for s in p["sections"]]
    assert None not in headings, f"a section without a heading: {p['sections']}"
    # the verdicts stage's section is "What holds", beside the summary, what was trained, why and details
    assert {"Summary", "What was trained", "What holds", "Why: the evidence, stage by stage", "Details"} \
        <= set(headings)
    missing = [s.title for s in STAGES if s.name != "verdicts" and s.title not in headings]
    assert not missing, f"no section for stages titled {missing}; sections: {headings}"
    images = p["images"]
    assert sum(im["data"] for im in images) > 0, "no inlined (data:) images"
    assert [im["src"] for im in images if not im["data"]] == [], "images whose src is not a data: URI"
    assert all(im["decoded"] for im in images), "an inlined image did not decode"
    assert p["figures_without_caption"] == 0
    assert p["broken_nav_links"] == [], f"links to missing sections: {p['broken_nav_links']}"
    assert p["duplicate_ids"] == [], f"element ids used twice (links to them are ambiguous): {p['duplicate_ids']}"
    assert p["tables"], "no tables"
    assert all(t["sortable"] and t["sorted_on_click"] for t in p["tables"]), f"tables not sortable: {p['tables']}"
    assert p["text_length"] > 1000


#: Where each designated verdict of the summary sits on the first screen.
SUMMARY_PROBE = """Array.from(document.querySelectorAll('#summary .summary-verdict')).map(function (e) {
    var r = e.getBoundingClientRect();
    return {claim: e.dataset.claim, call: e.dataset.call,
            visible: r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight
                     && r.right <= window.innerWidth}; })"""
#: How far the verdict table and the page run past the window's width (<= 0: they fit).
WIDTH_PROBE = """(function () { var t = document.querySelector('#verdicts table.vt');
    return {table: t.scrollWidth - t.parentElement.clientWidth,
            page: document.documentElement.scrollWidth - window.innerWidth,
            call_column_right: t.tHead.rows[0].cells[0].getBoundingClientRect().right}; })()"""
#: Every string column of every Bokeh data source on the page.
BOKEH_DATA_PROBE = """(function () { var out = [];
    Bokeh.documents.forEach(function (d) { d.all_models.forEach(function (m) {
        if (m.data && typeof m.data === 'object' && !Array.isArray(m.data)) {
            Object.keys(m.data).forEach(function (k) { var col = m.data[k];
                if (col && col.length && typeof col[0] === 'string') { out = out.concat(Array.from(col)); } }); }
    }); });
    return out; })()"""
#: Scrolls to the verdict section; its top is then just under the sticky navigation bar.
SCROLL_TO_VERDICTS = """(function () { var v = document.getElementById('verdicts'); v.scrollIntoView();
    return v.getBoundingClientRect().top; })()"""
#: The default corpus's designated verdicts per paper, and how many of them were decided (2026-12-08, at
#: f2c8a4b).
DEFAULT_DESIGNATED = {"001": (31, 10), "002": (4, 0), "003": (20, 4), "004": (23, 3)}
#: Claim ids the lengths of the default corpus's (its designated ids ran from 12 to 75 characters on
#: 2026-12-08).
CLAIM_TAILS = ("bias_share_local", "s5_5_4_hessian_relative_std.beyond_time",
               "normalized_entropy.first.over_training.beyond_time",
               "fisher_sam_beats_sam.fisher_sam_rho_0.05_eta_1.vs.sam_rho_0.05", "late_only")


def _with_default_verdicts(db: Path) -> list[str]:
    """Makes the designated verdicts those of a corpus like the default one: as many per paper, as many of
    them decided, claim ids as long (copies of a real row); returns their claim ids."""
    import duckdb

    con = duckdb.connect(str(db))
    try:
        template, stage = con.execute("SELECT claim_id, stage FROM analysis_verdicts ORDER BY claim_id "
                                      "LIMIT 1").fetchone()
        con.execute("UPDATE analysis_verdicts SET in_holm = false")
        for family, (total, decided) in DEFAULT_DESIGNATED.items():
            for i in range(total):
                call = ("supported", "not supported")[i % 2] if i < decided else "inconclusive"
                claim = f"{stage}.{CLAIM_TAILS[i % len(CLAIM_TAILS)]}_{family}_{i}"
                con.execute("""INSERT INTO analysis_verdicts SELECT * REPLACE (? AS claim_id, ? AS family,
                               ? AS verdict_adjusted, true AS in_holm, false AS exploratory)
                               FROM analysis_verdicts WHERE claim_id = ?""", [claim, family, call, template])
        return [r[0] for r in con.execute("SELECT claim_id FROM analysis_verdicts WHERE in_holm").fetchall()]
    finally:
        con.close()


#: Names that Bokeh could read as TeX, or a page as markup, if they were not drawn as data.
PLOT_TAIL = " $$x^2$$ </script><i>'q {y} 5%"


@pytest.fixture(scope="module")
def reader_report(built_corpus: dict[str, Path], tmp_path_factory) -> tuple[Path, list[str]]:
    """One report, built once for the tests below, of the tiny corpus made to look like the default one to a
    reader: its designated verdicts as many (per paper, decided) and as long as the default corpus's, and
    every plotted data-set and architecture name ending in PLOT_TAIL. Returns the page and the designated ids."""
    import shutil

    import duckdb

    from reports.builder import build_report

    root = tmp_path_factory.mktemp("reader_report")
    db = root / "corpus.duckdb"
    shutil.copy(built_corpus["db"], db)
    designated = _with_default_verdicts(db)
    con = duckdb.connect(str(db))
    for table, column in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                     "WHERE column_name IN ('dataset', 'architecture') AND data_type = 'VARCHAR' "
                                     "AND table_name LIKE 'analysis_%'").fetchall():
        con.execute(f'UPDATE "{table}" SET "{column}" = "{column}" || ?', [PLOT_TAIL])
    con.close()
    return build_report(db, root / "report", show_progress=False), designated


def test_the_first_screen_at_1280_by_800_shows_every_designated_call(chromium: str, reader_report,
                                                                     tmp_path: Path) -> None:
    """At 1280 x 800, with as many designated verdicts as the default corpus has, the summary shows
    every one's call without scrolling, and the verdict table fits the width; both screens are captured."""
    from PIL import Image

    report, designated = reader_report
    assert len(designated) == sum(t for t, _ in DEFAULT_DESIGNATED.values())
    res = load_page(report, {"summary": SUMMARY_PROBE, "width": WIDTH_PROBE}, chromium=chromium,
                    viewport=(1280, 800), screenshot_dir=tmp_path / "screens",
                    screenshots={"first_screen": "", "verdicts": SCROLL_TO_VERDICTS})
    assert res.console_errors == [] and res.network_requests == []
    assert 0 <= res.probes["verdicts:setup"] < 100, "the verdict section is not at the top of its screenshot"
    shown = {e["claim"]: e for e in res.probes["summary"]}
    assert sorted(shown) == sorted(designated)
    hidden = [c for c, e in shown.items() if not e["visible"]]
    assert not hidden, f"{len(hidden)} designated verdicts below or beside the first screen: {hidden[:5]}"
    width = res.probes["width"]
    assert width["table"] <= 0 and width["page"] <= 0, width
    for name in ("first_screen", "verdicts"):
        with Image.open(res.screenshots[name]) as shot:
            assert shot.size == (1280, 800), name
            assert len(shot.convert("RGB").getcolors(1 << 20) or ()) > 50, f"{name} screenshot is blank"


def test_interactive_figures_draw_names_as_data_without_errors(chromium: str, reader_report) -> None:
    res = load_page(reader_report[0], {"data": BOKEH_DATA_PROBE,
                                       "plots": "document.querySelectorAll('.bk-fig').length"}, chromium=chromium)
    assert res.console_errors == [], res.console_errors
    assert res.network_requests == []
    assert res.probes["plots"] >= 1, "no interactive figure on the page"
    assert any(v.endswith(PLOT_TAIL) for v in res.probes["data"]), "the plotted names are not the stored ones"
