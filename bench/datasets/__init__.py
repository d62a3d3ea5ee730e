"""The datasets wing: in-memory splits, the dataset registry and the built-in loaders."""

from .core import DATASETS, DatasetLoader, ImageDataset, Split, load_dataset

__all__ = ["DATASETS", "DatasetLoader", "ImageDataset", "Split", "load_dataset"]
