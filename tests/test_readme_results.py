"""The README's corpus results are written from a database (:mod:`reports.readme_results`), and what the
README says of the command line and the configs matches the code. None of this needs a built corpus:
the generator runs on a few hand-made rows, and the README's block is checked for its form."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from pipeline.errors import PipelineError
from reports import readme_results

ROOT = Path(__file__).resolve().parents[1]


def _corpus(path: Path) -> None:
    """A corpus database (the current schema) holding hand-made verdict rows."""
    from snapshot_loader.database import connect_writable

    con = connect_writable(path)
    con.executemany("INSERT INTO runs (run_id) VALUES (?)", [[f"r{i}"] for i in range(7)])
    con.execute("CREATE TABLE IF NOT EXISTS stage_runs (stage VARCHAR, ran_at TIMESTAMP)")
    con.execute("INSERT INTO stage_runs VALUES ('gap', '2030-01-01 10:00'), ('verdicts', '2030-01-02 10:00')")
    con.execute("CREATE TABLE analysis_verdicts (claim_id VARCHAR, pair VARCHAR, role VARCHAR, exploratory BOOLEAN, "
                "verdict VARCHAR, verdict_adjusted VARCHAR, reading VARCHAR)")
    con.executemany("INSERT INTO analysis_verdicts VALUES (?, ?, ?, ?, ?, ?, ?)", [
        ("a", "a", "paper", False, "supported", "supported", "holds as stated, but not beyond initialization "
         "(structural)"),
        ("a.beyond_init", "a", "sharpened", False, "not supported", "not supported",
         "holds as stated, but not beyond initialization (structural)"),
        ("b", "b", "paper", False, "supported", "inconclusive", "undecided as stated"),
        ("b.beyond_time", "b", "sharpened", False, "inconclusive", "inconclusive", "undecided as stated"),
        ("c", "c", "paper", True, "supported", "supported", "exploratory, outside Holm"),
        ("c.beyond_x", "c", "sharpened", True, "supported", "supported", "holds as stated, and beyond x")])
    con.close()


def test_the_block_is_written_from_the_database(tmp_path: Path) -> None:
    _corpus(tmp_path / "c.duckdb")
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    text = readme_results.verdict_counts_text(con, "default")
    con.close()
    assert text == ("On the default corpus (7 runs; verdicts of 2030-01-02): 6 verdicts, 3 supported after Holm "
                    "(4 before), 1 not supported (1 before), 2 inconclusive (1 before). Holds as stated but not "
                    "beyond its confound (structural): `a` (initialization).")  # exploratory pair c left out


def test_main_rewrites_only_the_block_and_check_says_when_it_is_stale(tmp_path: Path, capsys) -> None:
    _corpus(tmp_path / "c.duckdb")
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- verdict counts: generated -->\nold numbers\n<!-- end verdict counts -->\nafter\n")
    args = ["--db", str(tmp_path / "c.duckdb"), "--readme", str(readme)]
    assert readme_results.main([*args, "--check"]) == 1
    assert "old numbers" in readme.read_text()  # --check writes nothing
    assert readme_results.main(args) == 0
    text = readme.read_text()
    assert text.startswith("before\n<!-- verdict counts: generated -->\nOn the default corpus (7 runs;")
    assert text.endswith(".\n<!-- end verdict counts -->\nafter\n") and "old numbers" not in text
    assert readme_results.main([*args, "--check"]) == 0
    capsys.readouterr()
    assert readme_results.main(["--db", str(tmp_path / "missing.duckdb"), "--readme", str(readme)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.duckdb'}: ")
    assert readme_results.main([*args[:2], "--readme", str(tmp_path)]) == 2  # a folder, not a file
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: cannot read it")


def test_a_readme_without_its_block_is_refused() -> None:
    with pytest.raises(PipelineError, match="exactly one"):
        readme_results.with_block("no block here\n", "text")


def test_the_readme_block_is_well_formed_and_adds_up() -> None:
    """The committed block is the generator's output on some corpus: dated, and its counts add up."""
    blocks = readme_results.BLOCK.findall((ROOT / "README.md").read_text())
    assert len(blocks) == 1
    text = " ".join(blocks[0][1].split())
    m = re.match(r"On the default corpus \((\d+) runs; verdicts of (20\d\d-\d\d-\d\d)\): (\d+) verdicts, (\d+) "
                 r"supported after Holm \((\d+) before\), (\d+) not supported \((\d+) before\), (\d+) inconclusive "
                 r"\((\d+) before\)\.", text)
    assert m, text
    _, _, total, sup, sup0, nsup, nsup0, inc, inc0 = (int(g) if g.isdigit() else g for g in m.groups())
    assert total == sup + nsup + inc == sup0 + nsup0 + inc0


def test_the_readme_says_which_commands_take_config_and_db() -> None:
    """"Every command takes --config and --db" was false for `measure` and `datasets`."""
    from pipeline.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "measure" in a.choices).choices
    options = {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.items()}
    assert {n for n, o in options.items() if "--config" not in o} == {"measure"}
    assert {n for n, o in options.items() if "--db" not in o} == {"datasets"}
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "All but `measure` and `datasets` take `--config`" in readme
    assert "takes `--db` but no `--config`" in readme and "so it takes no `--db`" in readme


def test_the_configs_page_counts_the_default_configs_custom_sizes() -> None:
    from pipeline.config import load_config

    runs = {r for s in load_config(ROOT / "configs" / "default.toml").studies for r in s.runs}
    custom = sum(r.size == "custom" for r in runs)
    page = " ".join((ROOT / "docs" / "configs.md").read_text().split())
    assert f"In `configs/default.toml` {custom} of the {len(runs)} runs are `custom`" in page
