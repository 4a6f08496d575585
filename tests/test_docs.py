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
    from analyses import registry

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
