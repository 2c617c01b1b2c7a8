"""Datasets: a registry of real image-classification datasets and their loaders.

``load_dataset(name, data_dir=None)`` returns a ``Dataset`` whose ``train`` / ``test`` are
``ImageSplit``s (uint8 NCHW storage, float32 [0, 1] batches, int64 labels).
``fetch_dataset(name, data_dir=None)`` downloads a dataset to where ``load_dataset`` looks.
The data root is ``data_dir``, else ``$ROBUSTLOSS_DATA``, else ``~/.cache/robustloss``.
"""

from robustloss.data.fetch import fetch_dataset
from robustloss.data.format_error import DatasetFormatError
from robustloss.data.registry import DATASETS, check_dataset_files, load_dataset
from robustloss.data.root import DATA_ENV_VAR, data_root
from robustloss.data.spec import Dataset, DatasetSpec, Download
from robustloss.data.split import ImageSplit

__all__ = [
    "DATASETS",
    "DATA_ENV_VAR",
    "Dataset",
    "DatasetFormatError",
    "DatasetSpec",
    "Download",
    "ImageSplit",
    "check_dataset_files",
    "data_root",
    "fetch_dataset",
    "load_dataset",
]
