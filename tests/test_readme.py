"""The SQL examples of the README and of every page of docs/ run, as written, in the `duckdb` shell
against a built corpus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [(page, q) for page in PAGES for q in re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.S)]
QUERIES = [q for _, q in BLOCKS]
DUCKDB_CLI = Path(sys.executable).parent / "duckdb"


def test_readme_and_docs_have_sql_examples() -> None:
    pages = {page.name for page, _ in BLOCKS}
    assert "README.md" in pages and len(QUERIES) >= 3


@pytest.mark.parametrize("query", QUERIES, ids=[f"{p.relative_to(ROOT)}:{q.splitlines()[0][3:40]}" for p, q in BLOCKS])
def test_readme_query_runs_in_the_duckdb_shell(built_corpus, query: str, tmp_path: Path) -> None:
    assert DUCKDB_CLI.exists(), "duckdb-cli is a dev dependency: `make setup` installs it"
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "shards").symlink_to(built_corpus["shards"])  # for the queries on the Parquet store
    proc = subprocess.run([str(DUCKDB_CLI), "-readonly", "-csv", str(built_corpus["db"]), "-c", query],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and "Error" not in proc.stderr, proc.stderr
    assert len(proc.stdout.strip().splitlines()) >= 2, f"query returned no rows:\n{proc.stdout}"
