"""Offline multi-task data: the HDF5 dataset format, collection, summaries and cross-task data sharing."""

from mtrl.data.dataset import FORMAT, VERSION, Dataset, DatasetWriter, TaskData, load_dataset

__all__ = ["FORMAT", "VERSION", "Dataset", "DatasetWriter", "TaskData", "load_dataset"]
