"""Read access to a corpus: SQL in, polars out; runs rebuilt as torch models from stored weights.

>>> import snapshot_loader
>>> corpus = snapshot_loader.open("build/corpus.duckdb")   # or "build/shards": Parquet, no ingest
>>> corpus.sql("SELECT dataset, avg(test_accuracy) FROM checkpoints JOIN runs USING (run_id) GROUP BY 1")
>>> model = corpus.model(run_id, step)          # torch.nn.Module in eval mode
>>> X, y = corpus.probe_batch(run_id)           # the run's fixed probe batch
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline.datasets.preprocess import PreparedDataset
from pipeline.datasets.registry import DatasetSpec, file_spec
from pipeline.datasets.run_data import RunData, run_data, run_dataset
from pipeline.errors import PipelineError
from pipeline.models.build import network_for
from pipeline.models.gated_edge import EdgeSpec
from pipeline.models.mlp import MLP
from pipeline.runspec import RunSpec
from snapshot_loader.database import connect_readonly
from snapshot_loader.parquet_corpus import parquet_connection


class Corpus:
    """A read-only view of a corpus: a DuckDB database, or a shard store read without ingest."""

    def __init__(self, path: str | Path):
        if _is_store(path):
            self.path, self._con = path, parquet_connection(str(path))
        else:
            self.path = Path(path)
            self._con = connect_readonly(self.path)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sql(self, query: str, params: list | dict | None = None) -> pl.DataFrame:
        """Run a query and return the result as a polars DataFrame."""
        return self._con.sql(query, params=params).pl()

    def tables(self) -> list[str]:
        return [r[0] for r in self._con.execute("SELECT table_name FROM information_schema.tables "
                                                "ORDER BY table_name").fetchall()]

    def runs(self) -> pl.DataFrame:
        return self.sql("SELECT * EXCLUDE (config_json) FROM runs ORDER BY dataset, run_id")

    def run_spec(self, run_id: str) -> RunSpec:
        rows = self._con.execute("SELECT config_json FROM runs WHERE run_id = ?", [run_id]).fetchall()
        if not rows:
            raise PipelineError(f"{self.path}: no run {run_id!r}")
        return RunSpec.from_dict(json.loads(rows[0][0]))

    def _custom(self, dataset: str) -> dict[str, DatasetSpec] | None:
        rows = self._con.execute("SELECT source, item, target, task, description FROM datasets WHERE name = ?",
                                 [dataset]).fetchall()
        row = rows[0] if rows else None
        if row is not None and row[0] == "file":
            return {dataset: file_spec(dataset, row[1], row[2], row[3], row[4])}
        return None

    def _dataset(self, spec: RunSpec) -> PreparedDataset:
        return run_dataset(spec, self._custom(spec.dataset))

    def run_data(self, run_id: str) -> RunData:
        """The run's rows, regenerated from its spec and checked against the stored split indices."""
        spec = self.run_spec(run_id)
        data = run_data(spec, self._dataset(spec))
        stored = dict(self._con.execute("SELECT split, rows FROM splits WHERE run_id = ?", [run_id]).fetchall())
        for name, rows in (("train", data.train_rows), ("test", data.test_rows), ("probe", data.probe_rows)):
            if name not in stored or not np.array_equal(np.asarray(stored[name]), rows):
                raise PipelineError(f"{self.path}: run {run_id}: regenerated {name} split differs from the stored "
                                    "one (the data set or preprocessing changed since extraction)")
        return data

    def split(self, run_id: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """(X, y) tensors of ``train`` (labels as trained on), ``test`` or ``probe``."""
        return self.run_data(run_id).tensors(split)

    def probe_batch(self, run_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The run's fixed probe batch (X, y), on which every spectral quantity is measured."""
        return self.split(run_id, "probe")

    def steps(self, run_id: str, spectral_only: bool = True) -> list[int]:
        where = " AND is_spectral" if spectral_only else ""
        return [r[0] for r in self._con.execute(
            f"SELECT step FROM checkpoints WHERE run_id = ?{where} ORDER BY step", [run_id]).fetchall()]

    def model(self, run_id: str, step: int) -> MLP | torch.nn.Module:
        """The network at a spectral snapshot, rebuilt from the stored tensors, in eval mode, with the
        gated edges (``augmentations``) it had by then."""
        spec = self.run_spec(run_id)
        dataset = self._dataset(spec)
        with torch.random.fork_rng():  # build_model seeds torch; keep the caller's generator as it was
            model = network_for(spec, dataset)
        rows = self._con.execute("SELECT layer_index, tensor, shape, \"values\" FROM weights "
                                 "WHERE run_id = ? AND step = ?", [run_id, step]).fetchall()
        if not rows:
            raise PipelineError(f"{self.path}: run {run_id} has no stored weights at step {step} "
                                f"(spectral steps: {self.steps(run_id)})")
        edges = self._con.execute("SELECT src, dst, kind, step FROM augmentations WHERE run_id = ? AND step < ? "
                                  "ORDER BY edge_index", [run_id, step]).fetchall()
        if edges:
            model.add_edges([EdgeSpec(src, dst, kind) for src, dst, kind, _ in edges], seed=0)  # weights loaded below
        names = dict(self._con.execute("SELECT layer_index, name FROM layers WHERE run_id = ?", [run_id]).fetchall())
        state = model.state_dict()
        for layer_index, tensor, shape, values in rows:
            key = tensor if layer_index < 0 else f"{names[layer_index]}.{tensor}"
            target = state[key]
            state[key] = torch.tensor(np.asarray(values, dtype=np.float32)).reshape(shape).to(target.dtype)
        model.load_state_dict(state)
        return model.eval()


def _is_store(path: str | Path) -> bool:
    """A shard store (folder or fsspec URL of hive-partitioned Parquet) rather than a DuckDB file."""
    text = str(path)
    if "://" in text:
        return not text.endswith((".duckdb", ".db"))
    return Path(path).is_dir()


def open(path: str | Path) -> Corpus:  # noqa: A001 - the documented entry point
    """Open a corpus read-only: the DuckDB file (``build/corpus.duckdb``) or the shard store it was
    ingested from (``build/shards``, or an fsspec URL such as ``s3://bucket/corpus``)."""
    return Corpus(path)
