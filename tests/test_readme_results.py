"""What the README and docs/configs.md say of the command line and the configs matches the code."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
