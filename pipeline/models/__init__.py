"""The model zoo: networks built as chains of parameterized blocks."""

from pipeline.models.mlp import MLP, Block, build_model, count_parameters

__all__ = ["MLP", "Block", "build_model", "count_parameters"]
