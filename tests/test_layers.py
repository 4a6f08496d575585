"""The import contract (pyproject.toml's ``[tool.importlinter]``, run by ``make test`` as ``lint-imports``)
places every module: a new module of ``pipeline/`` or a new stage of ``analyses/`` must be given its layer,
or it would stand outside the contract unchecked."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import analyses
import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _contract(contract_id: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["id"] == contract_id)


def _placed(layers: list[str]) -> set[str]:
    return {m.strip() for layer in layers for part in layer.split("|") for m in part.split(":")}


def test_every_module_of_pipeline_has_a_layer():
    placed = _placed(_contract("layers")["layers"])
    modules = {f"pipeline.{m.name}" for m in pkgutil.iter_modules(pipeline.__path__)}
    assert modules <= placed, f"not in the layers contract: {sorted(modules - placed)}"
    assert {"reports", "analyses", "snapshot_loader"} <= placed


def test_every_stage_and_the_kit_of_analyses_has_a_layer():
    placed = _placed(_contract("analyses-kit")["layers"])
    modules = {m.name for m in pkgutil.iter_modules(analyses.__path__)}
    assert modules == placed, f"unplaced: {sorted(modules - placed)}; gone: {sorted(placed - modules)}"
