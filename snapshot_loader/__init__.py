"""The corpus store: DuckDB schema, ingestion of shards, typed read access (SQL -> polars)."""

from snapshot_loader.corpus import Corpus, open
from snapshot_loader.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Corpus", "open"]
