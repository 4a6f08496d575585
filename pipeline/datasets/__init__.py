"""Real data sets (tables, images, token sequences) that load offline, their preprocessing, and each
run's view of them."""

from pipeline.datasets.preprocess import PreparedDataset, prepare
from pipeline.datasets.registry import REGISTRY, DatasetSpec, file_spec, get_spec
from pipeline.datasets.run_data import RunData, prepared_dataset, run_data, run_dataset

__all__ = ["REGISTRY", "DatasetSpec", "PreparedDataset", "RunData", "file_spec", "get_spec", "prepare",
           "prepared_dataset", "run_data", "run_dataset"]
