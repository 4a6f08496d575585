"""Reports and figures go beside their database by default, so a second corpus never overwrites the
first; ``--out`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cli


@pytest.fixture
def recorded(monkeypatch) -> dict[str, Path]:
    import reports.builder as builder

    seen: dict[str, Path] = {}

    def fake_report(db, out, show_progress=None):
        seen["report"] = out
        return out / "index.html"

    def fake_figures(db, out, show_progress=None):
        seen["figures"] = out
        return []

    monkeypatch.setattr(builder, "build_report", fake_report)
    monkeypatch.setattr(builder, "write_figures", fake_figures)
    return seen


def test_two_databases_get_two_report_and_figure_folders(tmp_path: Path, recorded) -> None:
    for name in ("corpus", "gap_per_dataset"):
        db = tmp_path / "build" / f"{name}.duckdb"
        assert cli.main(["report", "--db", str(db), "--quiet"]) == 0
        assert recorded["report"] == tmp_path / "build" / name / "report"
        assert cli.main(["figures", "--db", str(db), "--quiet"]) == 0
        assert recorded["figures"] == tmp_path / "build" / name / "figures"


def test_out_overrides_the_default(tmp_path: Path, recorded) -> None:
    assert cli.main(["report", "--db", str(tmp_path / "a.duckdb"), "--out", str(tmp_path / "elsewhere")]) == 0
    assert recorded["report"] == tmp_path / "elsewhere"
    assert cli.output_dir(Path("build/corpus.duckdb"), "report") == Path("build/corpus/report")
    assert cli.output_dir(Path("build/corpus"), "report") == Path("build/corpus.outputs/report")
    assert cli.output_dir(Path("x.duckdb.bak"), "figures") == Path("x.duckdb.bak.outputs/figures")
