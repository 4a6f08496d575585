"""The generated reference pages of docs/ (schema, one page per analysis stage) match the code, and
the docs' relative links resolve."""

from __future__ import annotations

import re
from pathlib import Path

from reports import docs

ROOT = Path(__file__).resolve().parents[1]


def test_generated_pages_are_current():
    stale = docs.stale_pages()
    assert not stale, f"{stale[0].relative_to(ROOT)} is out of date: run `python -m reports.docs`"


def test_every_stage_has_a_page_and_every_analysis_table_a_schema_entry():
    from analyses.kit import registry

    schema = (ROOT / "docs" / "schema.md").read_text()
    for stage in registry.stages():
        assert (ROOT / "docs" / "analyses" / f"{stage.name}.md").exists()
        for table in stage.tables:
            assert f"### `{table}`" in schema


def test_relative_links_in_the_readme_and_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
#: A claim id in backquotes (``gap.margins_predict_gap``) and a call stated of something.
CLAIM = re.compile(r"`[a-z_]+\.[a-z_.]+`")
CALL = re.compile(r"\b(?:supported|inconclusive)\b(?!\s+(?:when|if|unless|only|by|and|or)\b)", re.I)


def test_code_states_methods_and_no_dated_results():
    """Measured results live in generated pages (docs/verdicts/, docs/benchmarks.md), never in the code's
    docstrings and comments, from which docs/analyses/ is generated."""
    dated = [f"{path.relative_to(ROOT)}:{i}" for folder in ("analyses", "pipeline", "snapshot_loader", "reports")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for i, line in enumerate(path.read_text().splitlines(), 1) if DATE.search(line)]
    assert not dated, f"a dated result in the code: {dated}"


def test_the_stage_pages_state_no_verdict_so_none_contradicts_the_verdict_pages():
    """A stage page (generated from its docstring) that said a claim "is supported" contradicted the
    verdict page of a later analysis: only docs/verdicts/ states calls."""
    stated = [f"{page.name}: {sentence}" for page in sorted((ROOT / "docs" / "analyses").glob("*.md"))
              for sentence in re.split(r"(?<=[.;:])\s", page.read_text().replace("\n", " "))
              if CLAIM.search(sentence) and CALL.search(sentence)]
    assert not stated, stated
    for planted in ("The rows say `gap.margins_predict_gap` is supported on this corpus.",
                    "In the paper's setting: `gap.margins_predict_gap` supported, with 0.89 outside the interval."):
        assert CLAIM.search(planted) and CALL.search(planted)
